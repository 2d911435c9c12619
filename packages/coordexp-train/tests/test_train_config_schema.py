"""G3 and the strict schema: unknown keys at any depth, strict types, bounds, defaults."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError
from coordexp.train.config import schema
from coordexp.train.config.keypath import format_path
from coordexp.train.config.legacy import LEGACY_RULES
from coordexp.train.config.loader import validate_config
from coordexp.train.config.minimal import minimal_config
from coordexp.train.config.structure import structure_config
from coordexp.train.config.tree import copy_tree, get_path
from coordexp.train.config.yaml_io import dump_yaml


def _write(directory: Path, data, name="leaf.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


def _set(data, path, value):
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value
    return data


# ---------------------------------------------------------------------------------------------
# G3: unknown keys at any depth


def _full_config(variant):
    """A valid config with every section and default spelled out (the resolved plain form)."""
    backend = "hf" if variant == "stage1" else "vllm"
    with tempfile.TemporaryDirectory() as tmp:
        resolved = validate_config(_write(tmp, minimal_config(variant, backend=backend)))
    return copy_tree(resolved.plain)


_FULL = {variant: _full_config(variant) for variant in schema.TRAINER_VARIANTS}
_FREE_FORM = {("custom", "extra"), ("stage1", "pipeline"), ("stage2_ab", "pipeline"), ("rollout_matching", "pipeline")}


def _mapping_paths(tree, prefix=()):
    if isinstance(tree, dict):
        if prefix in _FREE_FORM:
            return
        yield prefix
        for key, value in tree.items():
            yield from _mapping_paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _mapping_paths(value, (*prefix, index))


def _schema_names():
    names = {"extends", "inherit"}
    for value in vars(schema).values():
        if isinstance(value, type) and attrs.has(value):
            names |= {field.name for field in attrs.fields(value)}
    for rule in LEGACY_RULES:
        for element in rule.pattern:
            if isinstance(element, str):
                names.add(element)
            elif isinstance(element, frozenset):
                names |= set(element)
    return names


_KNOWN = _schema_names()
_unknown_names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda name: name not in _KNOWN
)


def test_full_configs_have_deep_mapping_paths():
    paths = set(_mapping_paths(_FULL["stage2_rollout_aligned"]))
    assert ("rollout_matching", "vllm", "servers", 0) in paths
    assert ("rollout_matching", "vllm", "sync") in paths
    assert ("stage2_ab", "schedule") in set(_mapping_paths(_FULL["stage2_two_channel"]))


@settings(max_examples=120, deadline=None)
@given(variant=st.sampled_from(schema.TRAINER_VARIANTS), name=_unknown_names, data=st.data())
def test_unknown_key_anywhere_names_its_dotted_path(variant, name, data):
    config = copy_tree(_FULL[variant])
    where = data.draw(st.sampled_from(sorted(_mapping_paths(config), key=format_path)))
    get_path(config, where)[name] = data.draw(st.one_of(st.integers(), st.text(max_size=3), st.none()))
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, config)
        with pytest.raises(ConfigError) as info:
            validate_config(path)
    expected = format_path((*where, name))
    assert info.value.path == expected
    assert "unknown key" in info.value.message
    assert f"{path}:" in info.value.message


@settings(max_examples=50, deadline=None)
@given(
    extra=st.recursive(
        st.one_of(st.integers(), st.text(max_size=4), st.booleans(), st.none()),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), children, max_size=3),
        ),
        max_leaves=10,
    ).map(lambda value: {"payload": value})
)
def test_custom_extra_is_free_form(extra):
    config = minimal_config("stage1")
    config["custom"]["extra"] = extra
    with tempfile.TemporaryDirectory() as tmp:
        loaded = validate_config(_write(tmp, config))
    assert copy_tree(loaded.config.custom.extra) == extra


def test_custom_extra_rollout_matching_is_rejected(tmp_path):
    config = minimal_config("stage1")
    config["custom"]["extra"] = {"tracker": "x", "rollout_matching": {"decode_batch_size": 2}}
    with pytest.raises(ConfigError) as info:
        validate_config(_write(tmp_path, config))
    assert info.value.path == "custom.extra.rollout_matching"


def test_several_problems_reported_in_one_error(tmp_path):
    config = minimal_config("stage1")
    config["training"]["bogus"] = 1
    config["model"]["dtype"] = "float8"
    with pytest.raises(ConfigError) as info:
        validate_config(_write(tmp_path, config))
    assert info.value.path == "model.dtype"
    assert "also training.bogus: unknown key" in info.value.message


# ---------------------------------------------------------------------------------------------
# types


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("training", "seed"), True, "expected int, got bool true"),
        (("training", "seed"), "3", "expected int, got str '3'"),
        (("training", "seed"), 3.0, "expected int, got float 3.0"),
        (("training", "learning_rate"), "1e-4", "expected float (or int), got str '1e-4'"),
        (("training", "learning_rate"), False, "expected float (or int), got bool false"),
        (("training", "learning_rate"), float("nan"), "a finite float"),
        (("training", "vit_lr"), float("inf"), "a finite float"),
        (("model", "gradient_checkpointing"), "true", "expected bool (true/false), got str 'true'"),
        (("model", "gradient_checkpointing"), 1, "expected bool (true/false), got int 1"),
        (("model", "model"), 7, "expected str, got int 7"),
        (("custom", "object_field_order"), "desc-first", "expected one of 'desc_first', 'geometry_first'"),
        (("training", "eval_strategy"), False, "expected one of 'no', 'steps', got bool false"),
        (("template",), [1], "expected a mapping, got a list"),
        (("custom", "extra"), [1], "expected a mapping, got a list"),
        (("stage1", "pipeline"), "token_ce", "expected a mapping, got str 'token_ce'"),
        (("stage1", "pipeline"), {"objective": [{"weight": float("nan")}]}, "finite numbers only"),
    ],
)
def test_type_errors_name_path_and_expected_type(tmp_path, path, value, expected):
    config = _set(minimal_config("stage1"), path, value)
    with pytest.raises(ConfigError) as info:
        validate_config(_write(tmp_path, config))
    assert info.value.path == format_path(path)
    assert expected in info.value.message


def test_ints_are_accepted_for_floats(tmp_path):
    config = minimal_config("stage2_rollout_aligned")
    config["training"]["learning_rate"] = 1
    config["rollout_matching"]["decoding"]["temperature"] = 1
    loaded = validate_config(_write(tmp_path, config)).config
    assert type(loaded.training.learning_rate) is float and loaded.training.learning_rate == 1.0
    assert type(loaded.rollout_matching.decoding.temperature) is float


def test_type_error_carries_file_and_line(tmp_path):
    config = minimal_config("stage1")
    config["training"]["seed"] = "seventeen"
    path = _write(tmp_path, config)
    line = next(
        number
        for number, text in enumerate(path.read_text().splitlines(), start=1)
        if "seventeen" in text
    )
    with pytest.raises(ConfigError, match=re.escape(f"(at {path}:{line})")):
        validate_config(path)


# ---------------------------------------------------------------------------------------------
# bounds and cross-field rules inside a section


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("template", "max_length"), 8, "must be >= 16"),
        (("template", "min_pixels"), 2_000_000, "must be <= max_pixels"),
        (("training", "seed"), -1, "must be in [0, 4294967295]"),
        (("training", "effective_batch_size"), 0, "must be >= 1"),
        (("training", "learning_rate"), -0.1, "must be >= 0.0"),
        (("training", "warmup_steps"), -1, "must be >= 0"),
        (("training", "max_grad_norm"), 0, "must be > 0.0"),
        (("training", "ddp_timeout_s"), 0, "must be >= 1"),
        (("training", "run_name"), "  ", "non-empty string"),
        (("rollout_matching", "decode_batch_size"), 0, "must be >= 1"),
        (("rollout_matching", "decoding", "max_new_tokens"), 0, "must be >= 1"),
        (("rollout_matching", "decoding", "top_p"), 0.0, "must be in (0.0, 1.0]"),
        (("rollout_matching", "decoding", "top_k"), 0, "-1 (off) or >= 1"),
        (("rollout_matching", "decoding", "repetition_penalty"), 0.0, "must be > 0.0"),
        (("rollout_matching", "decoding", "temperature"), -0.5, "must be >= 0.0"),
        (("rollout_matching", "decoding", "coord_pick"), "mean", "'token', 'expectation'"),
        (("rollout_matching", "matching", "candidate_top_k"), 0, "must be >= 1"),
        (("rollout_matching", "matching", "maskiou_gate"), 1.2, "must be in [0.0, 1.0]"),
        (("rollout_matching", "matching", "maskiou_resolution"), 8, "must be >= 16"),
        (("rollout_matching", "matching", "fp_cost"), 0, "must be > 0.0"),
        (("rollout_matching", "poly_ot", "epsilon"), 0, "must be > 0.0"),
        (("rollout_matching", "poly_ot", "iters"), 0, "must be >= 1"),
        (("rollout_matching", "poly_ot", "cost"), "l3", "expected one of 'l2', 'l1'"),
        (("rollout_matching", "eval_detection", "metrics"), [], "must not be empty"),
        (("rollout_matching", "eval_detection", "metrics"), ["coco", "coco"], "duplicate entry"),
        (("rollout_matching", "eval_detection", "metrics"), "map", "'coco', 'f1'"),
        (("rollout_matching", "eval_detection", "max_samples"), 0, "must be >= 1"),
        (("rollout_matching", "debug_dump", "max_total"), 0, "must be >= 1"),
        (("rollout_matching", "prompt_mismatch_policy"), "ignore", "'error', 'drop'"),
    ],
)
def test_bounds(tmp_path, path, value, expected):
    config = _set(minimal_config("stage2_rollout_aligned"), path, value)
    with pytest.raises(ConfigError) as info:
        validate_config(_write(tmp_path, config))
    assert info.value.path == format_path(path)
    assert expected in info.value.message


def test_eval_metrics_list_index_in_path(tmp_path):
    config = _set(minimal_config("stage2_rollout_aligned"), ("rollout_matching", "eval_detection", "metrics"), ["coco", "ap"])
    with pytest.raises(ConfigError) as info:
        validate_config(_write(tmp_path, config))
    assert info.value.path == "rollout_matching.eval_detection.metrics[1]"


@pytest.mark.parametrize("metrics, expected", [("f1", ("f1",)), (["coco", "f1"], ("coco", "f1"))])
def test_eval_metrics_forms(tmp_path, metrics, expected):
    config = _set(minimal_config("stage2_rollout_aligned"), ("rollout_matching", "eval_detection", "metrics"), metrics)
    assert validate_config(_write(tmp_path, config)).config.rollout_matching.eval_detection.metrics == expected


@pytest.mark.parametrize(
    "training, expected",
    [
        ({"max_steps": 10, "num_train_epochs": 2}, "exactly one of"),
        ({"max_steps": None}, "exactly one of"),
    ],
)
def test_training_cross_field_rules(tmp_path, training, expected):
    config = minimal_config("stage1")
    config["training"].update(training)
    with pytest.raises(ConfigError, match=expected):
        validate_config(_write(tmp_path, config))


def test_missing_required_schema_key(tmp_path):
    config = minimal_config("stage1")
    del config["custom"]["object_field_order"]
    with pytest.raises(ConfigError) as info:
        validate_config(_write(tmp_path, config))
    assert info.value.path == "custom.object_field_order"
    assert "required key is missing" in info.value.message


# ---------------------------------------------------------------------------------------------
# defaults and immutability


def test_spec_defaults(tmp_path):
    config = validate_config(_write(tmp_path, minimal_config("stage2_rollout_aligned", backend="vllm"))).config
    rm = config.rollout_matching
    assert rm.rollout_backend == "vllm"
    assert attrs.asdict(rm.decoding) == {
        "max_new_tokens": 128,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "repetition_penalty": 1.0,
        "num_beams": 1,
        "coord_pick": "token",  # a coordexp extension; its default is spec 03 §3.1's decoding
    }
    assert attrs.asdict(rm.matching) == {
        "candidate_top_k": 10,
        "maskiou_gate": 0.3,
        "maskiou_resolution": 256,
        "fp_cost": 1.0,
        "fn_cost": 1.0,
    }
    assert attrs.asdict(rm.poly_ot) == {"epsilon": 10.0, "iters": 30, "cost": "l2"}
    assert rm.coord_decode_mode == "exp" and rm.prompt_mismatch_policy == "error"
    assert rm.vllm.mode == "server" and rm.vllm.timeout_s == 240.0
    assert rm.vllm.infer_timeout_s is None and rm.vllm.sync.mode == "full"
    assert rm.vllm.image_transport == "base64"
    assert attrs.asdict(rm.eval_detection) == {
        "enabled": True,
        "metrics": ("coco",),
        "score_source": "coord_logprob",
        "category_match": "exact",
        "max_samples": None,
        "materialize_artifacts": True,
    }
    assert attrs.asdict(rm.debug_dump) == {"enabled": False, "max_per_step": 4, "max_total": 200}
    assert config.training.ddp_timeout_s == 1800
    assert config.custom.object_ordering == "sorted" and config.custom.prompt_variant == "default"
    assert config.training.dynamic_packing is True and config.training.packing is None


def test_two_channel_defaults(tmp_path):
    config = validate_config(_write(tmp_path, minimal_config("stage2_two_channel"))).config
    section = config.stage2_ab
    assert (section.n_softctx_iter, section.softctx_grad_mode, section.softctx_temperature) == (
        1,
        "em_detach",
        1.0,
    )
    assert (section.coord_ctx_embed_mode, section.coord_decode_mode) == ("soft", "exp")
    assert section.pipeline is None and section.authored_flat_knobs() == {}


def test_stage1_defaults(tmp_path):
    config = validate_config(_write(tmp_path, minimal_config("stage1"))).config
    assert config.training.packing is True and config.training.dynamic_packing is None
    assert config.stage1 == schema.Stage1Section(pipeline=None)
    assert config.rollout_matching is None and config.stage2_ab is None


def test_sections_are_immutable(tmp_path):
    config = minimal_config("stage1")
    config["custom"]["extra"] = {"nested": {"values": [1, 2]}}
    loaded = validate_config(_write(tmp_path, config))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        loaded.config.training.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.config.custom.extra["nested"] = 1  # type: ignore[index]
    assert loaded.config.custom.extra["nested"]["values"] == (1, 2)
    with pytest.raises(TypeError):
        loaded.plain["training"]["seed"] = 3  # type: ignore[index]


def test_base_url_trailing_slash_is_dropped(tmp_path):
    config = minimal_config("stage2_rollout_aligned", backend="vllm")
    config["rollout_matching"]["vllm"]["servers"] = [{"base_url": "http://127.0.0.1:8000/"}]
    loaded = validate_config(_write(tmp_path, config)).config
    assert loaded.rollout_matching.vllm.servers[0].base_url == "http://127.0.0.1:8000"


def test_structure_config_without_provenance():
    data = minimal_config("stage1")
    data["template"]["extra_key"] = 1
    with pytest.raises(ConfigError) as info:
        structure_config(data)
    assert info.value.path == "template.extra_key"
    assert "(at " not in info.value.message
