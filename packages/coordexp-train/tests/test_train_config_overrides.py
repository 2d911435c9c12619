"""Dotted CLI overrides: parsing, list indices, YAML-typed values, schema still strict."""

from __future__ import annotations

import pytest

from coordexp.core.errors import ConfigError
from coordexp.train.config.keypath import Provenance
from coordexp.train.config.loader import validate_config
from coordexp.train.config.minimal import minimal_config
from coordexp.train.config.overrides import apply_overrides, parse_key_path, parse_override
from coordexp.train.config.yaml_io import ConfigSource, dump_yaml


def _source(data):
    return ConfigSource(data=data, provenance=Provenance({}), files=("x.yaml",))


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("training.seed=3", ("training", "seed"), 3),
        ("training.learning_rate=1e-4", ("training", "learning_rate"), 1e-4),
        ("a.b=true", ("a", "b"), True),
        ("a.b='3'", ("a", "b"), "3"),
        ("a.b=hello world", ("a", "b"), "hello world"),
        ("a.b=null", ("a", "b"), None),
        ("a.b=", ("a", "b"), None),
        ("a.b=x=y", ("a", "b"), "x=y"),
        ("a.b=[1, 2.5]", ("a", "b"), [1, 2.5]),
        ("a.b={name: token_ce, weight: 0.5}", ("a", "b"), {"name": "token_ce", "weight": 0.5}),
        ("a.servers[0].base_url=http://h:1", ("a", "servers", 0, "base_url"), "http://h:1"),
        ("a.m[1][0]=5", ("a", "m", 1, 0), 5),
        (" a.b = 7", ("a", "b"), 7),
    ],
)
def test_parse_override(text, path, value):
    assert parse_override(text) == (path, value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("training.seed", "dotted.key=value"),
        ("=3", "empty key path"),
        ("a..b=1", "bad key segment"),
        ("a.b[x]=1", "bad key segment"),
        ("a.[0]=1", "bad key segment"),
        ("extends=base.yaml", "cannot be overridden"),
        ("a.b=!!python/object:os.system ls", "is not allowed"),
        ("a.b=[1,", "invalid YAML"),
    ],
)
def test_bad_overrides(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_override(text)


def test_apply_creates_sets_and_replaces():
    source = _source({"a": {"b": 1, "c": {"d": 2}}, "lst": [{"x": 1}, {"x": 2}], "n": None})
    out = apply_overrides(
        source, ["a.c={e: 3}", "lst[1].x=9", "new.deep.key=1", "n.k=2", "a.b=5", "a.b=6"]
    )
    assert out.data == {
        "a": {"b": 6, "c": {"e": 3}},
        "lst": [{"x": 1}, {"x": 9}],
        "n": {"k": 2},
        "new": {"deep": {"key": 1}},
    }
    assert source.data["a"]["b"] == 1  # the input is not mutated
    assert out.provenance.author(("a", "c", "e")).file == "override `a.c={e: 3}`"
    assert out.provenance.author(("a", "b")).file == "override `a.b=6`"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("lst[5].x=1", "out of range"),
        ("a.b.c=1", "below a int value"),
        ("a[0]=1", "needs a list"),
        ("lst.x=1", "below a list value"),
    ],
)
def test_apply_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        apply_overrides(_source({"a": {"b": 1}, "lst": [{"x": 1}]}), [text])


def test_key_path_grammar():
    assert parse_key_path("rollout_matching.vllm.servers[0].base_url", "t") == (
        "rollout_matching",
        "vllm",
        "servers",
        0,
        "base_url",
    )


def _config_file(tmp_path, variant="stage2_rollout_aligned", backend="vllm"):
    path = tmp_path / "leaf.yaml"
    path.write_text(dump_yaml(minimal_config(variant, backend=backend)), encoding="utf-8")
    return path


def test_overrides_reach_the_typed_config(tmp_path):
    path = _config_file(tmp_path)
    config = validate_config(
        path,
        [
            "training.seed=99",
            "rollout_matching.vllm.servers[0].base_url=http://10.0.0.2:9000",
            "rollout_matching.decoding.temperature=0.7",
            "custom.extra={tracker: wandb}",
        ],
    ).config
    assert config.training.seed == 99
    assert config.rollout_matching.vllm.servers[0].base_url == "http://10.0.0.2:9000"
    assert config.rollout_matching.decoding.temperature == 0.7
    assert dict(config.custom.extra) == {"tracker": "wandb"}


def test_unknown_override_paths_fail_in_the_schema(tmp_path):
    path = _config_file(tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_config(path, ["rollout_matching.decoding.temprature=0.5"])
    assert info.value.path == "rollout_matching.decoding.temprature"
    assert "unknown key" in info.value.message
    assert "override `rollout_matching.decoding.temprature=0.5`" in info.value.message


def test_override_types_are_strict(tmp_path):
    path = _config_file(tmp_path)
    with pytest.raises(ConfigError, match="expected int, got str '3'"):
        validate_config(path, ["training.seed='3'"])


def test_legacy_names_via_overrides_are_caught(tmp_path):
    path = _config_file(tmp_path)
    with pytest.raises(ConfigError, match="rollout_matching.decoding.top_p"):
        validate_config(path, ["rollout_matching.top_p=0.9"])
