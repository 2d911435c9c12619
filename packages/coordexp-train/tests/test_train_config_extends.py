"""G8: `extends` merge semantics, cycles, single list ownership, the one-hop leaf rule and the
required leaf knobs reported together (spec 05 §5.9)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError
from coordexp.train.config.extends import check_profile_leaf, merge_data, resolve_extends
from coordexp.train.config.guardrails import required_leaf_knobs
from coordexp.train.config.keypath import format_path
from coordexp.train.config.loader import validate_config
from coordexp.train.config.minimal import minimal_config
from coordexp.train.config.tree import get_path, has_path
from coordexp.train.config.yaml_io import dump_yaml

# ---------------------------------------------------------------------------------------------
# merge semantics (property)

_keys = st.sampled_from(["a", "b", "c", "d"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text("xyz", max_size=3))
_lists = st.lists(_scalars, max_size=3)
_trees = st.recursive(
    st.one_of(_scalars, _lists),
    lambda children: st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)
_docs = st.dictionaries(_keys, _trees, max_size=4)


def _leaf_paths(tree, prefix=()):
    """Paths of non-mapping values and of empty mappings."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaf_paths(value, (*prefix, key))
    else:
        yield prefix


@settings(max_examples=200, deadline=None)
@given(base=_docs, over=_docs)
def test_merge_overlay_wins_lists_replaced_mappings_merged(base, over):
    merged = merge_data(base, over)
    for path in _leaf_paths(over):
        if path and not (isinstance(get_path(over, path), dict)):
            # scalars, nulls and lists of the overlay land verbatim (lists replaced whole)
            assert get_path(merged, path) == get_path(over, path)
    for path in _leaf_paths(base):
        # a base value survives unless the overlay replaces it or one of its ancestors: the
        # overlay authored a non-mapping there, or a mapping over a base non-mapping
        shadowed = any(
            has_path(over, path[:end])
            and not (
                isinstance(get_path(over, path[:end]), dict)
                and isinstance(get_path(base, path[:end]), dict)
            )
            for end in range(1, len(path) + 1)
        )
        if path and not shadowed and not isinstance(get_path(base, path), dict):
            assert get_path(merged, path) == get_path(base, path)
    # every key of either side survives (mappings merge, nothing is dropped)
    assert set(merged) == set(base) | set(over)
    # inputs are untouched and the result shares no containers with them
    assert merge_data(base, over) == merged


@settings(max_examples=100, deadline=None)
@given(doc=_docs)
def test_merge_identities(doc):
    assert merge_data(doc, doc) == doc
    assert merge_data(doc, {}) == doc
    assert merge_data({}, doc) == doc


# ---------------------------------------------------------------------------------------------
# file-based resolution


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(data) if isinstance(data, dict) else data, encoding="utf-8")
    return path


def test_depth_first_merge_order_and_null(tmp_path):
    _write(tmp_path / "a.yaml", {"x": {"p": 1, "q": [1, 2]}, "y": "from-a", "z": 1})
    _write(tmp_path / "b.yaml", {"x": {"r": 3}, "y": "from-b"})
    _write(tmp_path / "sub" / "grand.yaml", {"x": {"p": 0, "s": 9}, "w": "grand"})
    _write(tmp_path / "c.yaml", {"extends": "sub/grand.yaml", "x": {"s": 10}})
    leaf = _write(
        tmp_path / "leaf.yaml",
        {"extends": ["a.yaml", "b.yaml", "c.yaml"], "x": {"q": [7]}, "z": None},
    )
    source = resolve_extends(leaf)
    assert source.data == {
        "x": {"p": 0, "q": [7], "r": 3, "s": 10},
        "y": "from-b",
        "z": None,
        "w": "grand",
    }
    assert "extends" not in source.data
    names = [Path(name).name for name in source.files]
    assert names == ["a.yaml", "b.yaml", "grand.yaml", "c.yaml", "leaf.yaml"]
    assert Path(source.provenance.author(("x", "p")).file).name == "grand.yaml"
    assert Path(source.provenance.author(("x", "q")).file).name == "leaf.yaml"
    assert Path(source.provenance.author(("y",)).file).name == "b.yaml"


def test_extends_relative_to_the_extending_file(tmp_path):
    _write(tmp_path / "shared" / "common.yaml", {"k": 1})
    _write(tmp_path / "shared" / "mid.yaml", {"extends": "common.yaml", "m": 2})
    leaf = _write(tmp_path / "runs" / "leaf.yaml", {"extends": "../shared/mid.yaml"})
    assert resolve_extends(leaf).data == {"k": 1, "m": 2}


def test_cycle_shows_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    _write(tmp_path / "b.yaml", {"extends": "c.yaml"})
    _write(tmp_path / "c.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError) as info:
        resolve_extends(tmp_path / "a.yaml")
    assert "cycle" in info.value.message
    chain = re.sub(r"[^ ]*/", "", info.value.message.split("cycle in extends: ")[1])
    assert chain == "a.yaml -> b.yaml -> c.yaml -> a.yaml"


def test_self_extension_is_a_cycle(tmp_path):
    _write(tmp_path / "a.yaml", {"extends": "./a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        resolve_extends(tmp_path / "a.yaml")


def test_missing_and_malformed_extends(tmp_path):
    leaf = _write(tmp_path / "leaf.yaml", "x: 1\nextends: [nope.yaml]\n")
    with pytest.raises(ConfigError) as info:
        resolve_extends(leaf)
    assert info.value.path == "extends[0]"
    assert f"{leaf}:2" in info.value.message
    for bad in ("extends: 3\n", "extends: []\n", "extends: [a.yaml, 2]\n"):
        path = _write(tmp_path / "bad.yaml", bad)
        with pytest.raises(ConfigError, match="path or a non-empty list"):
            resolve_extends(path)


def test_two_ancestors_authoring_one_list_fail(tmp_path):
    _write(tmp_path / "a.yaml", {"rollout_matching": {"vllm": {"servers": [{"base_url": "http://a:1"}]}}})
    _write(tmp_path / "b.yaml", {"rollout_matching": {"vllm": {"servers": [{"base_url": "http://b:1"}]}}})
    leaf = _write(tmp_path / "leaf.yaml", {"extends": ["a.yaml", "b.yaml"]})
    with pytest.raises(ConfigError) as info:
        resolve_extends(leaf)
    assert info.value.path == "rollout_matching.vllm.servers"
    assert "a.yaml" in info.value.message and "b.yaml" in info.value.message


def test_list_against_mapping_from_two_ancestors_fails(tmp_path):
    _write(tmp_path / "a.yaml", {"k": [1]})
    _write(tmp_path / "b.yaml", {"k": {"x": 1}})
    with pytest.raises(ConfigError, match="single owner"):
        resolve_extends(_write(tmp_path / "leaf.yaml", {"extends": ["a.yaml", "b.yaml"]}))


def test_shared_grandparent_list_and_own_override_are_fine(tmp_path):
    _write(tmp_path / "root.yaml", {"lst": [1, 2], "m": {"x": 1}})
    _write(tmp_path / "a.yaml", {"extends": "root.yaml", "m": {"y": 2}})
    _write(tmp_path / "b.yaml", {"extends": "root.yaml", "m": {"z": 3}})
    leaf = _write(tmp_path / "leaf.yaml", {"extends": ["a.yaml", "b.yaml"], "lst": [9]})
    assert resolve_extends(leaf).data == {"lst": [9], "m": {"x": 1, "y": 2, "z": 3}}


def test_sibling_override_of_a_shared_list_is_ambiguous(tmp_path):
    _write(tmp_path / "root.yaml", {"lst": [1, 2]})
    _write(tmp_path / "a.yaml", {"extends": "root.yaml", "lst": [3]})
    _write(tmp_path / "b.yaml", {"extends": "root.yaml"})
    with pytest.raises(ConfigError, match="single owner"):
        resolve_extends(_write(tmp_path / "leaf.yaml", {"extends": ["a.yaml", "b.yaml"]}))


# ---------------------------------------------------------------------------------------------
# profile families: one-hop leaves and a flat base


def _family(tmp_path, base_text=None):
    family = tmp_path / "family"
    base = minimal_config("stage2_two_channel")
    for section in ("training", "rollout_matching", "stage2_ab", "model"):
        base.pop(section)
    _write(family / "base.yaml", base_text if base_text is not None else base)
    return family


def _leaf_body(**extra):
    data = minimal_config("stage2_two_channel")
    data.pop("custom")
    data.pop("template")
    data.update(extra)
    return data


def test_profile_leaf_with_one_hop_loads(tmp_path):
    family = _family(tmp_path)
    leaf = _write(family / "prod" / "ab_mixed.yaml", _leaf_body(extends="../base.yaml"))
    config = validate_config(leaf)
    assert config.variant == "stage2_two_channel"


@pytest.mark.parametrize(
    "extends",
    [["../base.yaml"], "../other.yaml", None, ["../base.yaml", "../other.yaml"]],
)
def test_profile_leaf_must_extend_exactly_base(tmp_path, extends):
    family = _family(tmp_path)
    _write(family / "other.yaml", {"model": {"model": "x"}})
    body = _leaf_body() if extends is None else _leaf_body(extends=extends)
    leaf = _write(family / "smoke" / "a_only.yaml", body)
    with pytest.raises(ConfigError, match=re.escape("exactly `extends: ../base.yaml`")):
        validate_config(leaf)


def test_profile_base_must_be_flat(tmp_path):
    family = _family(tmp_path)
    _write(family / "deeper.yaml", {"template": {"max_length": 512}})
    text = (family / "base.yaml").read_text()
    (family / "base.yaml").write_text("extends: deeper.yaml\n" + text)
    leaf = _write(family / "prod" / "b_only.yaml", _leaf_body(extends="../base.yaml"))
    with pytest.raises(ConfigError, match="must be flat"):
        check_profile_leaf(leaf)


def test_non_family_files_are_not_leaf_checked(tmp_path):
    # a prod/ directory without a sibling base.yaml is not a profile family
    _write(tmp_path / "common.yaml", {"template": {"max_length": 512}})
    data = minimal_config("stage1")
    data["extends"] = "../common.yaml"
    check_profile_leaf(_write(tmp_path / "prod" / "x.yaml", data))
    assert validate_config(tmp_path / "prod" / "x.yaml").config.template.max_length == 512


# ---------------------------------------------------------------------------------------------
# required leaf knobs: all reported together, authored in the leaf itself

_VARIANTS = ("stage1", "stage2_two_channel", "stage2_rollout_aligned")


def _drop(data, path):
    node = data
    for part in path[:-1]:
        node = node[part]
    node.pop(path[-1])


@settings(max_examples=60, deadline=None)
@given(variant=st.sampled_from(_VARIANTS), data=st.data())
def test_all_missing_leaf_knobs_reported_together(variant, data):
    knobs = list(required_leaf_knobs(variant))
    removed = data.draw(st.lists(st.sampled_from(knobs), min_size=1, unique=True))
    config = minimal_config(variant)
    for path in removed:
        _drop(config, path)
    with tempfile.TemporaryDirectory() as tmp:
        leaf = _write(Path(tmp) / "leaf.yaml", config)
        with pytest.raises(ConfigError) as info:
            validate_config(leaf)
    message = info.value.message
    reported = {format_path(knob) for knob in knobs if f"{format_path(knob)} (missing)" in message}
    assert reported == {format_path(knob) for knob in removed}
    assert info.value.path == format_path(
        min(removed, key=lambda knob: knobs.index(knob))
    )


def test_inherited_leaf_knobs_do_not_count(tmp_path):
    leaf_data = minimal_config("stage2_rollout_aligned")
    inherited = {
        "training": {"seed": leaf_data["training"].pop("seed")},
        "rollout_matching": {"decoding": leaf_data["rollout_matching"].pop("decoding")},
    }
    _write(tmp_path / "parent.yaml", inherited)
    leaf_data["extends"] = "parent.yaml"
    leaf = _write(tmp_path / "leaf.yaml", leaf_data)
    with pytest.raises(ConfigError) as info:
        validate_config(leaf)
    message = info.value.message
    assert "training.seed (inherited from" in message
    assert "rollout_matching.decoding.max_new_tokens (inherited from" in message
    assert "parent.yaml:" in message
    # the same knobs given as overrides count as authored in the leaf
    config = validate_config(
        leaf, ["training.seed=5", "rollout_matching.decoding.max_new_tokens=64"]
    )
    assert config.config.training.seed == 5


def test_null_leaf_knob_counts_as_missing(tmp_path):
    data = minimal_config("stage1")
    data["training"]["seed"] = None
    with pytest.raises(ConfigError, match=re.escape("training.seed (missing)")):
        validate_config(_write(tmp_path / "leaf.yaml", data))
