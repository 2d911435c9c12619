"""G5 and the guardrails of spec 05 §5.7/§5.10 and 04 §4.1/§4.8 (D43)."""

from __future__ import annotations

import attrs
import pytest

from coordexp.core.errors import ConfigError
from coordexp.core.pipeline.manifests import flat_knob_targets
from coordexp.core.plugins.registry import ModuleRegistry
from coordexp.train.config import schema
from coordexp.train.config.guardrails import gradient_accumulation_steps
from coordexp.train.config.keypath import format_path
from coordexp.train.config.loader import load_config, validate_config
from coordexp.train.config.minimal import minimal_config
from coordexp.train.config.yaml_io import dump_yaml

ONE = "stage1"
TWO = "stage2_two_channel"
ALIGNED = "stage2_rollout_aligned"
PIPELINE = {"objective": [{"name": "token_ce"}]}


def _write(tmp_path, data, name="leaf.yaml"):
    path = tmp_path / name
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


def _set(data, path, value):
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return data


def _load(tmp_path, data, **kwargs):
    return validate_config(_write(tmp_path, data), **kwargs)


# ---------------------------------------------------------------------------------------------
# §5.7 variant table (G5's two section guardrails included)

# (variant, authored path, value, error path, message fragment)
REJECTED = [
    (TWO, ("stage1", "pipeline"), PIPELINE, "stage1", "stage1 is for custom.trainer_variant: stage1"),
    (ALIGNED, ("stage1",), {}, "stage1", "stage1 is for custom.trainer_variant: stage1"),
    (ONE, ("stage2_ab", "schedule", "b_ratio"), 0.5, "stage2_ab", "stage2_ab is for stage2_two_channel"),
    (ALIGNED, ("stage2_ab", "pipeline"), PIPELINE, "stage2_ab", "stage2_ab is for stage2_two_channel"),
    (ONE, ("rollout_matching", "decode_batch_size"), 2, "rollout_matching", "offline"),
    (TWO, ("rollout_matching", "pipeline"), PIPELINE, "rollout_matching.pipeline", "use stage2_ab.pipeline"),
    (
        TWO,
        ("rollout_matching", "coord_decode_mode"),
        "exp",
        "rollout_matching.coord_decode_mode",
        "use stage2_ab.coord_decode_mode",
    ),
    (
        TWO,
        ("rollout_matching", "poly_ot"),
        {"epsilon": 5.0},
        "rollout_matching.poly_ot",
        "stage2_rollout_aligned only",
    ),
    (TWO, ("training", "packing"), True, "training.packing", "use training.dynamic_packing"),
    (ALIGNED, ("training", "packing"), False, "training.packing", "use training.dynamic_packing"),
    (ONE, ("training", "dynamic_packing"), True, "training.dynamic_packing", "use training.packing"),
]


@pytest.mark.parametrize(
    "variant, path, value, error_path, expected",
    REJECTED,
    ids=[f"{case[0]}-{format_path(case[1])}" for case in REJECTED],
)
def test_variant_table_rejections(tmp_path, variant, path, value, error_path, expected):
    data = _set(minimal_config(variant), path, value)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    assert info.value.path == error_path
    assert expected in info.value.message
    assert f"{tmp_path / 'leaf.yaml'}:" in info.value.message


ALLOWED = [
    (ONE, ("stage1", "pipeline"), PIPELINE),
    (ONE, ("training", "packing"), False),
    (ALIGNED, ("rollout_matching", "pipeline"), PIPELINE),
    (ALIGNED, ("rollout_matching", "coord_decode_mode"), "st"),
    (ALIGNED, ("rollout_matching", "poly_ot"), {"epsilon": 5.0, "iters": 10, "cost": "l1"}),
    (ALIGNED, ("training", "dynamic_packing"), False),
    (TWO, ("stage2_ab", "pipeline"), PIPELINE),
    (TWO, ("training", "dynamic_packing"), False),
]


@pytest.mark.parametrize(
    "variant, path, value", ALLOWED, ids=[f"{c[0]}-{format_path(c[1])}" for c in ALLOWED]
)
def test_variant_table_allowed(tmp_path, variant, path, value):
    loaded = _load(tmp_path, _set(minimal_config(variant), path, value)).config
    node = loaded
    for part in path:
        node = getattr(node, part)
    if isinstance(value, dict) and path[-1] != "pipeline":
        assert attrs.asdict(node) == value
    elif path[-1] == "pipeline":
        assert node["objective"][0]["name"] == "token_ce"
    else:
        assert node == value


def test_packing_defaults_follow_the_variant(tmp_path):
    assert _load(tmp_path, minimal_config(ONE)).config.training.packing is True
    two = _load(tmp_path, minimal_config(TWO)).config.training
    assert (two.dynamic_packing, two.packing) == (True, None)


@pytest.mark.parametrize(
    "value, expected",
    [(None, "required key is missing"), ("stage3", "expected one of"), (3, "expected one of")],
)
def test_trainer_variant_is_required_and_checked(tmp_path, value, expected):
    data = minimal_config(ONE)
    data["custom"]["trainer_variant"] = value
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    assert info.value.path == "custom.trainer_variant"
    assert expected in info.value.message


# ---------------------------------------------------------------------------------------------
# 04 §4.8 inert knobs (D43)


@pytest.mark.parametrize(
    "key, value",
    [("coord_ctx_embed_mode", "soft"), ("softctx_grad_mode", "em_detach"), ("softctx_temperature", 1.0)],
)
def test_self_context_knobs_are_inert_with_one_iteration(tmp_path, key, value):
    data = minimal_config(TWO)
    data["stage2_ab"][key] = value  # even the default value counts as authoring it
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    assert info.value.path == f"stage2_ab.{key}"
    assert "inert" in info.value.message
    data["stage2_ab"]["n_softctx_iter"] = 2
    assert getattr(_load(tmp_path, data).config.stage2_ab, key) == value


def test_fmt_struct_weight_is_inert_unless_zero_with_one_iteration(tmp_path):
    data = minimal_config(TWO)
    data["stage2_ab"]["fmt_struct_ce_weight"] = 0.0
    assert _load(tmp_path, data).config.stage2_ab.fmt_struct_ce_weight == 0.0
    data["stage2_ab"]["fmt_struct_ce_weight"] = 0.25
    with pytest.raises(ConfigError, match="inert") as info:
        _load(tmp_path, data)
    assert info.value.path == "stage2_ab.fmt_struct_ce_weight"
    data["stage2_ab"]["n_softctx_iter"] = 2
    assert _load(tmp_path, data).config.stage2_ab.fmt_struct_ce_weight == 0.25


def test_st_smoke_shape_is_valid(tmp_path):
    data = minimal_config(TWO)
    data["stage2_ab"].update(
        {"n_softctx_iter": 2, "coord_ctx_embed_mode": "st", "coord_decode_mode": "st"}
    )
    section = _load(tmp_path, data).config.stage2_ab
    assert (section.coord_ctx_embed_mode, section.coord_decode_mode) == ("st", "st")


# ---------------------------------------------------------------------------------------------
# §5.10 rollout_matching rules


def test_vllm_section_only_with_vllm_backend(tmp_path):
    data = minimal_config(ALIGNED, backend="vllm")
    data["rollout_matching"]["rollout_backend"] = "hf"
    with pytest.raises(ConfigError, match="only allowed with rollout_backend: vllm") as info:
        _load(tmp_path, data)
    assert info.value.path == "rollout_matching.vllm"


def test_vllm_backend_needs_servers(tmp_path):
    data = minimal_config(ALIGNED)
    data["rollout_matching"]["rollout_backend"] = "vllm"
    with pytest.raises(ConfigError, match="needs a vllm section"):
        _load(tmp_path, data)
    data["rollout_matching"]["vllm"] = {"max_model_len": 1024}
    with pytest.raises(ConfigError, match="required key is missing") as info:
        _load(tmp_path, data)
    assert info.value.path == "rollout_matching.vllm.servers"
    data["rollout_matching"]["vllm"]["servers"] = []
    with pytest.raises(ConfigError, match="must not be empty"):
        _load(tmp_path, data)


@pytest.mark.parametrize(
    "urls, index, expected",
    [
        (["ftp://h:1"], 0, "http(s)://host:port"),
        (["127.0.0.1:8000"], 0, "http(s)://host:port"),
        (["http://"], 0, "http(s)://host:port"),
        (["http://0.0.0.0:8000"], 0, "bind-all"),
        (["http://[::]:8000"], 0, "bind-all"),
        (["http://h:99999"], 0, "invalid URL"),
        (["http://h:1?x=1"], 0, "query"),
        (["http://user:pw@h:1"], 0, "credentials"),
        (["http://h:1/v1"], 0, "server root"),
        (["http://a:1", "http://b:1", "http://a:1"], 2, "same as servers[0]"),
        (["http://a:80", "HTTP://A"], 1, "duplicate"),
        (["https://a", "https://a:443/"], 1, "duplicate"),
    ],
)
def test_server_urls(tmp_path, urls, index, expected):
    data = minimal_config(ALIGNED, backend="vllm")
    data["rollout_matching"]["vllm"]["servers"] = [{"base_url": url} for url in urls]
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    assert info.value.path == f"rollout_matching.vllm.servers[{index}].base_url"
    assert expected in info.value.message


def test_distinct_servers_pass(tmp_path):
    data = minimal_config(ALIGNED, backend="vllm")
    data["rollout_matching"]["vllm"]["servers"] = [
        {"base_url": "http://127.0.0.1:8000"},
        {"base_url": "http://127.0.0.1:8001"},
        {"base_url": "https://gpu-2.internal/proxy"},
    ]
    servers = _load(tmp_path, data).config.rollout_matching.vllm.servers
    assert [server.base_url for server in servers][2] == "https://gpu-2.internal/proxy"


@pytest.mark.parametrize(
    "max_model_len, max_new_tokens, expected",
    [(511, 128, ">= template.max_length (512)"), (512, 512, "> decoding.max_new_tokens (512)")],
)
def test_max_model_len(tmp_path, max_model_len, max_new_tokens, expected):
    data = minimal_config(TWO, backend="vllm")
    data["rollout_matching"]["vllm"]["max_model_len"] = max_model_len
    data["rollout_matching"]["decoding"]["max_new_tokens"] = max_new_tokens
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    assert info.value.path == "rollout_matching.vllm.max_model_len"
    assert expected in info.value.message


def test_max_model_len_is_required_with_vllm(tmp_path):
    data = minimal_config(TWO, backend="vllm")
    del data["rollout_matching"]["vllm"]["max_model_len"]
    with pytest.raises(ConfigError, match="required key is missing") as info:
        _load(tmp_path, data)
    assert info.value.path == "rollout_matching.vllm.max_model_len"


def test_sync_none_is_rejected_for_training(tmp_path):
    data = minimal_config(ALIGNED, backend="vllm")
    data["rollout_matching"]["vllm"]["sync"] = {"mode": "none"}
    with pytest.raises(ConfigError, match="eval-only") as info:
        _load(tmp_path, data)
    assert info.value.path == "rollout_matching.vllm.sync.mode"


@pytest.mark.parametrize(
    "backend, temperature, ok",
    [("hf", 0.0, True), ("hf", 0.7, False), ("vllm", 0.0, False)],
)
def test_beams_need_hf_greedy(tmp_path, backend, temperature, ok):
    data = minimal_config(ALIGNED, backend=backend)
    data["rollout_matching"]["decoding"].update({"num_beams": 3, "temperature": temperature})
    if ok:
        assert _load(tmp_path, data).config.rollout_matching.decoding.num_beams == 3
    else:
        with pytest.raises(ConfigError, match="num_beams > 1 needs"):
            _load(tmp_path, data)


@pytest.mark.parametrize("backend, ok", [("hf", True), ("vllm", False)])
def test_expectation_coord_picks_need_the_hf_backend(tmp_path, backend, ok):
    data = minimal_config(ALIGNED, backend=backend)
    data["rollout_matching"]["decoding"]["coord_pick"] = "expectation"
    if ok:
        assert _load(tmp_path, data).config.rollout_matching.decoding.coord_pick == "expectation"
    else:
        with pytest.raises(ConfigError, match="needs rollout_backend: hf") as info:
            _load(tmp_path, data)
        assert info.value.path == "rollout_matching.decoding.coord_pick"


def test_detection_eval_needs_val_jsonl(tmp_path):
    data = minimal_config(TWO)
    del data["custom"]["val_jsonl"]
    with pytest.raises(ConfigError, match="eval_detection.enabled") as info:
        _load(tmp_path, data)
    assert info.value.path == "custom.val_jsonl"
    data["rollout_matching"]["eval_detection"] = {"enabled": False}
    assert _load(tmp_path, data).config.custom.val_jsonl is None


# ---------------------------------------------------------------------------------------------
# 04 §4.1 batch shape


def _training(**changes):
    return attrs.evolve(
        schema.TrainingSection(
            run_name="r",
            output_dir="o",
            logging_dir="l",
            seed=0,
            learning_rate=1e-4,
            vit_lr=0.0,
            aligner_lr=0.0,
            effective_batch_size=16,
            eval_strategy="no",
            eval_steps=1,
            save_strategy="no",
            save_steps=1,
            max_steps=1,
            per_device_train_batch_size=2,
        ),
        **changes,
    )


@pytest.mark.parametrize(
    "world, changes, gas", [(1, {}, 8), (2, {}, 4), (8, {}, 1), (4, {"gradient_accumulation_steps": 2}, 2)]
)
def test_gradient_accumulation_steps(world, changes, gas):
    assert gradient_accumulation_steps(_training(**changes), world) == gas


@pytest.mark.parametrize(
    "world, changes, path, expected",
    [
        (3, {}, "training.effective_batch_size", "not divisible by"),
        (16, {}, "training.effective_batch_size", "2 × 16 = 32"),
        (2, {"gradient_accumulation_steps": 2}, "training.gradient_accumulation_steps", "= 4"),
        (0, {}, "", "world size"),
        (True, {}, "", "world size"),
    ],
)
def test_gradient_accumulation_errors(world, changes, path, expected):
    with pytest.raises(ConfigError) as info:
        gradient_accumulation_steps(_training(**changes), world)
    assert info.value.path == path
    assert expected in info.value.message


def test_world_size_at_load(tmp_path):
    data = minimal_config(ONE)
    data["training"].update({"effective_batch_size": 12, "per_device_train_batch_size": 2})
    assert _load(tmp_path, data, world_size=3).gradient_accumulation_steps == 2
    assert _load(tmp_path, data).gradient_accumulation_steps is None
    with pytest.raises(ConfigError, match="not divisible"):
        _load(tmp_path, data, world_size=4)


def test_explicit_gas_must_fit_some_world_size(tmp_path):
    data = minimal_config(ONE)
    data["training"].update({"effective_batch_size": 6, "gradient_accumulation_steps": 4})
    with pytest.raises(ConfigError, match="no world size can satisfy") as info:
        _load(tmp_path, data)
    assert info.value.path == "training.gradient_accumulation_steps"


# ---------------------------------------------------------------------------------------------
# G5: a pipeline plus any flat knob (one test per knob), resolved through the core pipeline

FLAT_KNOBS = tuple(flat_knob_targets(TWO))


def test_schema_has_a_field_for_every_flat_knob():
    fields = {field.name for field in attrs.fields(schema.Stage2ABSection)}
    assert set(FLAT_KNOBS) <= fields
    assert set(schema.TOP_LEVEL_SECTIONS) == {field.name for field in attrs.fields(schema.CoordexpConfig)}


@pytest.mark.parametrize("knob", FLAT_KNOBS)
def test_pipeline_plus_flat_knob_fails(tmp_path, knob):
    module, key = flat_knob_targets(TWO)[knob]
    data = minimal_config(TWO)
    data["stage2_ab"]["pipeline"] = PIPELINE
    data["stage2_ab"][knob] = 0.0 if knob == "fmt_struct_ce_weight" else 0.5
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, data), registry=ModuleRegistry(lambda group: [], environ={}))
    assert info.value.path == f"stage2_ab.{knob}"
    assert f"stage2_ab.pipeline.objective[{module}].config.{key}" in info.value.message
    assert f"{tmp_path / 'leaf.yaml'}:" in info.value.message


def _require_builtin_modules(*names):
    registry = ModuleRegistry()
    available = {entry.name for entry in registry.list_entries()}
    missing = set(names) - available
    if missing:
        pytest.skip(f"built-in modules not installed yet: {sorted(missing)}")
    return registry


def test_flat_desc_weight_reaches_gt_and_fn_desc(tmp_path):
    """G6: no pipeline, `stage2_ab.desc_ce_weight: 0.5` → gt desc and FN desc weights 0.5."""
    registry = _require_builtin_modules("token_ce", "bbox_geo", "coord_reg", "coord_diag")
    data = minimal_config(TWO)
    data["stage2_ab"]["desc_ce_weight"] = 0.5
    resolved = load_config(_write(tmp_path, data), registry=registry)
    token_ce = next(entry for entry in resolved.pipeline.objective if entry.name == "token_ce")
    config = token_ce.entry()["config"]
    assert config["desc_ce_weight"] == 0.5
    assert config["rollout_fn_desc_weight"] == 0.5
    assert resolved.pipeline.is_default
