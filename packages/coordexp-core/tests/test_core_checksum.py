"""Canonical JSON and the pipeline checksum (spec 05 §5.5; invariants G1, G2)."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from typing import Literal, Optional

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.pipeline.checksum import (
    NonFiniteError,
    canonical,
    config_payload,
    pipeline_checksum,
    schema_typed,
    sha256_hex,
)
from coordexp.testing.golden import GOLDEN_CHECKSUMS, STAGE1_PAYLOAD

STAGE1_GOLDEN = GOLDEN_CHECKSUMS["stage1"]


def test_stage1_golden_payload_hashes_to_the_spec_checksum() -> None:
    assert hashlib.sha256(STAGE1_PAYLOAD.encode("ascii")).hexdigest() == STAGE1_GOLDEN
    payload = json.loads(STAGE1_PAYLOAD)
    assert canonical(payload) == STAGE1_PAYLOAD
    assert pipeline_checksum(payload) == STAGE1_GOLDEN


def test_floats_are_written_by_repr_and_negative_zero_is_zero() -> None:
    assert (
        canonical({"b": 0.1, "a": 1e-07, "c": -0.0, "d": [1, 1.0, -2.5]})
        == '{"a":1e-07,"b":0.1,"c":0.0,"d":[1,1.0,-2.5]}'
    )
    assert canonical({"x": "é"}) == '{"x":"\\u00e9"}'
    assert canonical((1, (2,))) == "[1,[2]]"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_raise(bad: float) -> None:
    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        canonical({"objective": [{"config": {"w": bad}}]})
    with pytest.raises(ValueError):
        sha256_hex([bad])


def test_pipeline_checksum_requires_the_three_keys() -> None:
    with pytest.raises(ValueError, match="diagnostics"):
        pipeline_checksum({"trainer_variant": "stage1", "objective": []})


# ------------------------------------------------------------------ G1 on payloads

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
config_dicts = st.dictionaries(st.text(min_size=1, max_size=6), json_scalar, max_size=6)
entries = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=8),
        "enabled": st.booleans(),
        "weight": st.floats(0.0, 10.0),
        "channels": st.sampled_from([["A"], ["B"], ["A", "B"]]),
        "config": config_dicts,
    }
)
payloads = st.fixed_dictionaries(
    {
        "trainer_variant": st.sampled_from(["stage1", "stage2_two_channel", "stage2_rollout_aligned"]),
        "objective": st.lists(entries, min_size=1, max_size=4),
        "diagnostics": st.lists(entries, max_size=2),
    }
)


def _shuffled(obj: object, rng: random.Random) -> object:
    if isinstance(obj, dict):
        items = list(obj.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(obj, list):
        return [_shuffled(v, rng) for v in obj]
    return obj


@settings(max_examples=150, deadline=None)
@given(payload=payloads, seed=st.integers(0, 2**32 - 1))
def test_g1_checksum_ignores_key_order(payload: dict, seed: int) -> None:
    assert pipeline_checksum(_shuffled(payload, random.Random(seed))) == pipeline_checksum(payload)


@settings(max_examples=150, deadline=None)
@given(payload=payloads, data=st.data())
def test_g1_checksum_changes_with_every_entry_field(payload: dict, data: st.DataObject) -> None:
    base = pipeline_checksum(payload)
    index = data.draw(st.integers(0, len(payload["objective"]) - 1))

    changed = copy.deepcopy(payload)
    changed["objective"][index]["enabled"] = not changed["objective"][index]["enabled"]
    assert pipeline_checksum(changed) != base

    changed = copy.deepcopy(payload)
    changed["objective"][index]["weight"] += 0.5
    assert pipeline_checksum(changed) != base

    changed = copy.deepcopy(payload)
    channels = changed["objective"][index]["channels"]
    changed["objective"][index]["channels"] = ["A", "B"] if channels != ["A", "B"] else ["A"]
    assert pipeline_checksum(changed) != base

    changed = copy.deepcopy(payload)
    config = changed["objective"][index]["config"]
    key = data.draw(st.text(min_size=1, max_size=6))
    old = config.get(key, object())
    new = data.draw(json_scalar.filter(lambda v: not (type(v) is type(old) and v == old)))
    config[key] = new
    assert pipeline_checksum(changed) != base

    if len(payload["objective"]) > 1 and payload["objective"][0] != payload["objective"][-1]:
        changed = copy.deepcopy(payload)
        changed["objective"].reverse()
        assert pipeline_checksum(changed) != base


@settings(max_examples=100, deadline=None)
@given(payload=payloads)
def test_g1_negative_zero_equals_zero(payload: dict) -> None:
    zeroed = copy.deepcopy(payload)
    negated = copy.deepcopy(payload)
    zeroed["objective"][0]["weight"] = 0.0
    negated["objective"][0]["weight"] = -0.0
    zeroed["objective"][0]["config"]["z"] = 0.0
    negated["objective"][0]["config"]["z"] = -0.0
    assert pipeline_checksum(zeroed) == pipeline_checksum(negated)


@settings(max_examples=50, deadline=None)
@given(payload=payloads, bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_g1_nan_anywhere_raises(payload: dict, bad: float) -> None:
    payload["diagnostics"].append({"name": "d", "config": {"deep": [1.0, {"x": bad}]}})
    with pytest.raises(NonFiniteError):
        pipeline_checksum(payload)


# ------------------------------------------------------------------ schema-typed configs


@attrs.frozen
class Inner:
    scale: float = 2


@attrs.frozen
class Sample:
    weight: float = 1
    count: int = 3
    maybe: Optional[float] = 4
    either: int | float = 5
    mode: Literal["a", "b"] = "a"
    sizes: tuple[float, ...] = (1, 2.5)
    _private: float = 0
    inner: Inner = attrs.field(factory=Inner)
    derived: int = attrs.field(init=False, default=0)


def test_config_payload_is_schema_typed_and_keyed_by_alias() -> None:
    payload = config_payload(Sample())
    assert payload == {
        "weight": 1.0,
        "count": 3,
        "maybe": 4.0,
        "either": 5,
        "mode": "a",
        "sizes": [1.0, 2.5],
        "private": 0.0,
        "inner": {"scale": 2.0},
    }
    assert isinstance(payload["weight"], float) and isinstance(payload["count"], int)
    assert isinstance(payload["either"], int)
    assert canonical(payload) == canonical(config_payload(Sample(weight=1.0, maybe=4.0)))


def test_schema_typed_keeps_bools_and_none() -> None:
    assert schema_typed(float, True) is True
    assert schema_typed(Optional[float], None) is None
    with pytest.raises(TypeError):
        config_payload({"not": "attrs"})
