"""Safe YAML loading: unsafe tags, duplicates and syntax errors fail with file:line."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError
from coordexp.train.config.keypath import Location
from coordexp.train.config.yaml_io import dump_yaml, load_yaml_file, parse_yaml_text


def _write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object:os.system ls",
        "!!python/object/apply:os.system [ls]",
        "!!python/name:os.system",
        "!!binary aGVsbG8=",
        "!custom 3",
        "!!set {a, b}",
    ],
)
def test_unsafe_or_unknown_tags_are_rejected_with_file_and_line(tmp_path, value):
    path = _write(tmp_path, f"model:\n  model: x\ntraining:\n  seed: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_file(path)
    assert info.value.path == "training.seed"
    assert "is not allowed" in info.value.message
    assert f"{path}:4" in info.value.message


def test_tagged_mapping_rejected_and_nothing_constructed(tmp_path):
    path = _write(tmp_path, "a: !!python/object/new:builtins.dict {x: 1}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:1")):
        load_yaml_file(path)


def test_implicit_timestamp_must_be_quoted(tmp_path):
    path = _write(tmp_path, "training:\n  run_name: 2024-01-01\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_file(path)
    assert info.value.path == "training.run_name"
    assert "quote it" in info.value.message
    assert load_yaml_file(_write(tmp_path, "run_name: '2024-01-01'\n", "ok.yaml")).data == {
        "run_name": "2024-01-01"
    }


def test_duplicate_keys_name_both_lines(tmp_path):
    path = _write(tmp_path, "training:\n  seed: 1\n  lr: 2\n  seed: 3\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_file(path)
    assert info.value.path == "training.seed"
    assert f"first defined at {path}:2" in info.value.message
    assert f"(at {path}:4)" in info.value.message


def test_merge_keys_point_to_extends(tmp_path):
    path = _write(tmp_path, "base: &b {x: 1}\nother:\n  <<: *b\n")
    with pytest.raises(ConfigError, match="use `extends`"):
        load_yaml_file(path)


def test_recursive_alias_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="recursive YAML alias"):
        load_yaml_file(_write(tmp_path, "a: &x [1, *x]\n"))


def test_plain_aliases_are_copied(tmp_path):
    source = load_yaml_file(_write(tmp_path, "a: &x {b: [1, 2]}\nc: *x\n"))
    assert source.data == {"a": {"b": [1, 2]}, "c": {"b": [1, 2]}}
    assert source.data["a"] is not source.data["c"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a: 1\n---\nb: 2\n", "single document"),
        ("a: [1, 2\n", "invalid YAML"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("1: x\n", "keys must be strings"),
        ("? [a]\n: 1\n", "keys must be strings"),
        ("true: x\n", "keys must be strings"),
    ],
)
def test_structural_errors(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_yaml_file(_write(tmp_path, text))


def test_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path, "a: 1\nb: [1,\n  2\nc: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"invalid YAML in {path}:")):
        load_yaml_file(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml_file(tmp_path / "nope.yaml")
    assert load_yaml_file(_write(tmp_path, "# nothing\n")).data == {}


def test_scalar_types_follow_yaml_1_2(tmp_path):
    source = load_yaml_file(
        _write(
            tmp_path,
            "i: 3\nf: 2.5\ne: 1.0e-4\nb: true\nyes_word: yes\nn: null\ns: '3'\noct: 0o17\n",
        )
    )
    assert source.data == {
        "i": 3,
        "f": 2.5,
        "e": 1.0e-4,
        "b": True,
        "yes_word": "yes",
        "n": None,
        "s": "3",
        "oct": 15,
    }
    assert type(source.data["i"]) is int and type(source.data["f"]) is float


def test_locations_cover_keys_and_list_items(tmp_path):
    path = _write(tmp_path, "a:\n  b:\n    - x: 1\n    - x: 2\n")
    source = load_yaml_file(path)
    where = source.provenance.locations
    name = str(path)
    assert where[("a",)] == Location(name, 1)
    assert where[("a", "b")] == Location(name, 2)
    assert where[("a", "b", 1)] == Location(name, 4)
    assert where[("a", "b", 1, "x")] == Location(name, 4)
    assert source.provenance.locate(("a", "b", 1, "x", "deeper")) == Location(name, 4)


def test_parse_text_without_line_numbers():
    value, where = parse_yaml_text("{a: [1, 2]}", origin="override", line_numbers=False, base_path=("k",))
    assert value == {"a": [1, 2]}
    assert where[("k", "a")] == Location("override", None)


def test_dump_round_trips(tmp_path):
    data = {"b": 1, "a": {"x": [1, 2.5, None, "s", "no"], "y": True}, "c": -0.0}
    text = dump_yaml(data)
    assert text.index("b:") < text.index("a:")
    assert load_yaml_file(_write(tmp_path, text)).data == data


_yaml_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(st.text(max_size=5), _yaml_values, max_size=4))
def test_dump_then_parse_is_the_identity(data):
    assert parse_yaml_text(dump_yaml(data), origin="dump")[0] == data
