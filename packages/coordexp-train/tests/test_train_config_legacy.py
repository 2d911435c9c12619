"""G4: every legacy name of spec 05 §5.8 fails before the schema and names its replacement."""

from __future__ import annotations

import pytest

from coordexp.core.errors import ConfigError
from coordexp.train.config.keypath import format_path
from coordexp.train.config.legacy import check_legacy
from coordexp.train.config.loader import validate_config
from coordexp.train.config.minimal import minimal_config
from coordexp.train.config.yaml_io import dump_yaml

TWO = "stage2_two_channel"
ALIGNED = "stage2_rollout_aligned"

# (row of the §5.8 table, variant, key path, value, text the message must contain)
CASES = [
    ("r01", TWO, ("custom", "trainer_variant"), "stage2_ab_training", "'stage2_two_channel'"),
    ("r01", ALIGNED, ("custom", "trainer_variant"), "rollout_matching_sft", "'stage2_rollout_aligned'"),
    ("r02", "stage1", ("custom", "extra", "rollout_matching"), {"decode_batch_size": 2}, "top-level `rollout_matching` (same subkeys)"),
    *[
        ("r03", ALIGNED, ("rollout_matching", key), 0.5, f"rollout_matching.decoding.{key}")
        for key in ("temperature", "top_p", "top_k")
    ],
    *[
        ("r04", ALIGNED, ("rollout_matching", key), 4, "rollout_matching.decode_batch_size")
        for key in (
            "channel_b_decode_batch_size",
            "eval_decode_batch_size",
            "rollout_generate_batch_size",
            "rollout_infer_batch_size",
        )
    ],
    ("r04", TWO, ("stage2_ab", "channel_b", "rollout_decode_batch_size"), 4, "rollout_matching.decode_batch_size"),
    *[
        ("r05", ALIGNED, ("rollout_matching", key), 1, f"rollout_matching.matching.{key}")
        for key in ("candidate_top_k", "maskiou_gate", "maskiou_resolution", "fp_cost", "fn_cost")
    ],
    *[
        ("r06", ALIGNED, ("rollout_matching", "vllm", "server", key), value, "rollout_matching.vllm.servers")
        for key, value in (("base_url", "http://127.0.0.1:8000"), ("group_port", 51216))
    ],
    *[
        ("r07", ALIGNED, ("rollout_matching", key), 1, "training.effective_batch_size")
        for key in ("rollout_buffer", "post_rollout_pack_scope", "repeat_terminate")
    ],
    *[
        ("r07", TWO, ("stage2_ab", "channel_b", key), 1, "delete it")
        for key in ("mode", "async", "rollouts_per_step", "enable_pipeline")
    ],
    ("r08", TWO, ("stage2_ab", "schedule", "pattern"), ["A", "B"], "stage2_ab.schedule.b_ratio"),
    *[
        ("r09", TWO, ("stage2_ab", key), 1.0, "token_ce config")
        for key in (
            "reordered_gt_sft",
            "desc_ce_weight_matched",
            "semantic_desc_gate",
            "drop_invalid_struct_ce_multiplier",
            "stop_neutral",
        )
    ],
    *[
        ("r10", "stage1", ("custom", key), {"enabled": True}, "stage1.pipeline")
        for key in ("coord_soft_ce_w1", "bbox_geo", "coord_loss", "coord_expectation_metrics")
    ],
    *[
        (
            "r11",
            variant,
            (section, "pipeline", "objective", 0, "config", old),
            1.0,
            f"`{new}`",
        )
        for variant, section in (("stage1", "stage1"), (TWO, "stage2_ab"), (ALIGNED, "rollout_matching"))
        for old, new in (
            ("bbox_smoothl1_weight", "smoothl1_weight"),
            ("coord_soft_ce_weight", "soft_ce_weight"),
            ("coord_w1_weight", "w1_weight"),
        )
    ],
    ("r12", TWO, ("stage2_ab", "pipeline", "objective", 0, "application"), "A", "`channels`"),
    ("r12", ALIGNED, ("rollout_matching", "pipeline", "diagnostics", 0, "preset"), "B", "`channels`"),
    ("r12", "stage1", ("inherit",), "base.yaml", "`extends`"),
    ("r12", "stage1", ("training", "packing_length"), 4096, "template.max_length"),
    ("r13", ALIGNED, ("rollout_matching", "vllm", "mode"), "colocate", "use `server`"),
]


def _place(data, path, value):
    node = data
    for position, part in enumerate(path[:-1]):
        following = path[position + 1]
        if isinstance(part, int):
            while len(node) <= part:
                node.append({"name": "token_ce"})
            node = node[part]
        else:
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(following, int) else {}
            node = node[part]
    node[path[-1]] = value


@pytest.mark.parametrize(
    "row, variant, path, value, replacement",
    CASES,
    ids=[f"{case[0]}-{format_path(case[2])}" for case in CASES],
)
def test_legacy_name_fails_naming_the_replacement(tmp_path, row, variant, path, value, replacement):
    backend = "vllm" if path[:2] == ("rollout_matching", "vllm") else "hf"
    config = minimal_config(variant, backend=backend)
    _place(config, path, value)
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(dump_yaml(config), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        validate_config(leaf)
    assert info.value.path == format_path(path)
    assert replacement in info.value.message
    assert "unknown key" not in info.value.message
    assert f"{leaf}:" in info.value.message


def test_every_table_row_is_covered():
    assert {case[0] for case in CASES} == {f"r{index:02d}" for index in range(1, 14)}


def test_all_hits_are_reported_together():
    data = {
        "rollout_matching": {"top_p": 0.9, "fp_cost": 1.0},
        "training": {"packing_length": 10},
    }
    with pytest.raises(ConfigError) as info:
        check_legacy(data)
    message = info.value.message
    assert info.value.path == "rollout_matching.top_p"
    assert "also rollout_matching.matching" not in message
    assert "also rollout_matching.fp_cost: legacy key; use rollout_matching.matching.fp_cost" in message
    assert "also training.packing_length" in message


def test_current_names_pass():
    check_legacy(
        {
            "custom": {"trainer_variant": "stage2_two_channel", "extra": {"anything": 1}},
            "rollout_matching": {"vllm": {"mode": "server"}, "decoding": {"top_p": 0.9}},
            "stage2_ab": {"coord_w1_weight": 1.0, "pipeline": {"objective": [{"name": "coord_reg", "config": {"w1_weight": 1.0}}]}},
        }
    )
