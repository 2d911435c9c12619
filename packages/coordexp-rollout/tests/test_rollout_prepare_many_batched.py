"""``RolloutPreparer.prepare_many`` equals ``prepare`` sample by sample (spec 03 §3.2–3.8).

``prepare_many`` runs the poly OT of every sample's matched pairs in one ``ot_targets_many`` call;
these tests check that this changes nothing observable: the same :class:`PreparedSample` values
(every array to the bit), the same counters, the same error raised first, and the same pairs
excluded when a pair's OT fails.
"""

from __future__ import annotations

import math
from unittest import mock

import attrs
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.core.errors import PipelineError
from coordexp.rollout import ot as ot_mod
from coordexp.rollout import prepare as prepare_mod
from coordexp.rollout.decoding import DecodeParams
from coordexp.rollout.parity import PromptMismatchError
from coordexp.rollout.prepare import ROLLOUT_ALIGNED, TWO_CHANNEL, PrepareConfig, RolloutPreparer
from coordexp.rollout.testing import box_or_diamond, cut_rollout, tiny_test_codec
from coordexp.testing.strategies import canonical_polys, descs, field_orders

CODEC = tiny_test_codec()
PROMPT = (11, 12, 13, 14, 15)
MISMATCHED_PROMPT = (11, 12, 99, 14, 15)
# A predicted vertex at this x makes its pair's OT fail (see ``failing_ot``).
FAILING_X = 777


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------


@st.composite
def scene_objects(draw, polys: bool) -> CoordObject:
    """Boxes, diamonds (4 vertices) or canonical polygons of 3–10 vertices (two OT slot sizes)."""
    kind = draw(st.sampled_from(("bbox", "diamond", "poly"))) if polys else "bbox"
    if kind == "poly":
        return CoordObject(draw(descs()), "poly", draw(canonical_polys()))
    x, y = draw(st.integers(0, 900)), draw(st.integers(0, 900))
    w, h = draw(st.integers(24, 999 - x)), draw(st.integers(24, 999 - y))
    return box_or_diamond(draw(descs()), x, y, w, h, poly=kind == "diamond")


def _shifted(obj: CoordObject, shift: int) -> CoordObject:
    return CoordObject(obj.desc, obj.geom_key, tuple(min(999, v + shift) for v in obj.values))


@st.composite
def samples(draw, variant: str):
    """``(output, gts, local_prompt_ids)``: shifted copies of some GT objects plus extra objects,
    shuffled, serialized in either field order; sometimes cut short, sometimes not CoordJSON at
    all, sometimes generated from a prompt that differs from the local one."""
    polys = variant == ROLLOUT_ALIGNED
    gts = draw(st.lists(scene_objects(polys), max_size=6))
    copies = [_shifted(g, draw(st.integers(0, 3))) for g in gts if draw(st.sampled_from([True, True, False]))]
    preds = draw(st.permutations(copies + draw(st.lists(scene_objects(polys), max_size=3))))
    if draw(st.sampled_from([False] * 9 + [True])):
        text = "I cannot see anything."
    else:
        text = serialize(preds, draw(field_orders()))
    ids = CODEC.encode(text) + [CODEC.eos_id]
    cut = draw(st.sampled_from([len(ids), len(ids), len(ids), None])) or draw(st.integers(0, len(ids)))
    prompt = draw(st.sampled_from([PROMPT] * 15 + [MISMATCHED_PROMPT]))
    return cut_rollout(CODEC, ids, cut, prompt_ids=prompt), gts, PROMPT


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------


def assert_identical(got, want, where: str = "sample") -> None:
    """Same type and value, recursively through attrs classes and containers; arrays must agree in
    dtype, shape and bytes, floats bit for bit."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} vs {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        assert got.tobytes() == want.tobytes(), where
    elif attrs.has(type(want)):
        for field in attrs.fields(type(want)):
            assert_identical(getattr(got, field.name), getattr(want, field.name), f"{where}.{field.name}")
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), where
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_identical(g, w, f"{where}[{k}]")
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            assert_identical(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, float):
        assert got == want or (math.isnan(got) and math.isnan(want)), where
        assert math.copysign(1.0, got) == math.copysign(1.0, want), where
    else:
        assert got == want, where


def outcome(call):
    """The value ``call()`` returns, or the type and message of the error it raises."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return (type(exc), str(exc))


def one_by_one(preparer: RolloutPreparer, batch, seeds, params, sample_ids) -> list:
    return [
        preparer.prepare(
            output, gts, local_prompt_ids=prompt, seed=seed, params=params, sample_id=sample_id
        )
        for (output, gts, prompt), seed, sample_id in zip(batch, seeds, sample_ids, strict=True)
    ]


def all_at_once(preparer: RolloutPreparer, batch, seeds, params, sample_ids) -> list:
    outputs, gt_lists, prompts = (list(column) for column in zip(*batch, strict=True))
    return preparer.prepare_many(
        outputs, gt_lists, local_prompt_ids=prompts, seeds=seeds, params=params, sample_ids=sample_ids
    )


def failing_ot():
    """Patch the OT cost so that every pair whose prediction has a vertex at x = FAILING_X gets a
    NaN cost row: its plan is not finite and ``ot_targets_many`` reports an :class:`OTFailure`
    for it (in the batched pass and the per-pair one alike); other problems are untouched."""
    real = ot_mod.pairwise_cost

    def cost(pred_points, gt_points, kind):
        values = real(pred_points, gt_points, kind)
        return np.where((pred_points[..., 0] == FAILING_X)[..., None], np.nan, values)

    return mock.patch.object(ot_mod, "pairwise_cost", side_effect=cost)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    variant=st.sampled_from([TWO_CHANNEL, ROLLOUT_ALIGNED, ROLLOUT_ALIGNED, ROLLOUT_ALIGNED]),
    field_order=field_orders(),
    policy=st.sampled_from(["error", "drop", "drop"]),
    max_length=st.one_of(st.none(), st.none(), st.none(), st.integers(8, 400)),
    data=st.data(),
)
def test_prepare_many_equals_prepare_per_sample(variant, field_order, policy, max_length, data) -> None:
    preparer = RolloutPreparer(
        CODEC, PrepareConfig(variant, field_order, max_length=max_length, prompt_mismatch_policy=policy)
    )
    batch = data.draw(st.lists(samples(variant), min_size=1, max_size=6))
    seeds = data.draw(st.lists(st.integers(0, 2**31), min_size=len(batch), max_size=len(batch)))
    sample_ids = [f"img{k}" for k in range(len(batch))]
    params = data.draw(st.sampled_from([None, DecodeParams(max_new_tokens=64, temperature=0.7)]))
    want = outcome(lambda: one_by_one(preparer, batch, seeds, params, sample_ids))
    if isinstance(want, tuple):
        event(f"raises {want[0].__name__}")
    else:
        event(f"dropped: {any(p.dropped for p in want)}")
    with mock.patch.object(prepare_mod, "ot_targets_many", wraps=ot_mod.ot_targets_many) as spy:
        got = outcome(lambda: all_at_once(preparer, batch, seeds, params, sample_ids))
    assert spy.call_count <= 1
    if spy.call_count:
        event(f"OT pairs in the batched call: {min(len(spy.call_args.args[2]), 6)}")
    assert_identical(got, want)


def _scene(x: int, shift: int = 0) -> tuple[CoordObject, list[CoordObject]]:
    """A predicted diamond with its left/right vertices at x + 77 and a matching GT diamond, plus
    a box both sides share."""
    gt_poly = box_or_diamond("dog", x, 500, 154, 200, poly=True)
    gt_box = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
    return _shifted(gt_poly, shift), [gt_box, gt_poly]


def test_a_failing_pair_is_excluded_in_its_own_sample_only() -> None:
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    batch = []
    for x in (600, FAILING_X - 77, 650, FAILING_X - 77, 560):
        pred, gts = _scene(x, shift=0 if x == FAILING_X - 77 else 3)
        ids = CODEC.encode(serialize([gts[0], pred], "desc_first")) + [CODEC.eos_id]
        batch.append((cut_rollout(CODEC, ids, prompt_ids=PROMPT), gts, PROMPT))
    seeds, sample_ids = list(range(len(batch))), list(range(len(batch)))
    with failing_ot():
        want = one_by_one(preparer, batch, seeds, None, sample_ids)
        got = all_at_once(preparer, batch, seeds, None, sample_ids)
    assert_identical(got, want)
    excluded = [prepared.target.match.excluded for prepared in got]
    assert excluded == [(), ((1, 1),), (), ((1, 1),), ()]
    assert [prepared.counters.excluded_from_supervision for prepared in got] == [0, 1, 0, 1, 0]
    assert all(len(prepared.target.poly_groups_prefix) == 1 for k, prepared in enumerate(got) if k % 2 == 0)


def test_one_ot_call_serves_the_whole_batch() -> None:
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    outputs, gt_lists = [], []
    for x in (100, 300, 500):
        pred, gts = _scene(x, shift=2)
        outputs.append(cut_rollout(CODEC, CODEC.encode(serialize([gts[0], pred], "desc_first"))))
        gt_lists.append(gts)
    with mock.patch.object(prepare_mod, "ot_targets_many", wraps=ot_mod.ot_targets_many) as spy:
        prepared = preparer.prepare_many(outputs, gt_lists)
    assert spy.call_count == 1
    assert len(spy.call_args.args[2]) == 3  # one poly pair per sample
    assert [len(p.target.poly_groups_prefix) for p in prepared] == [1, 1, 1]


def test_the_first_failing_sample_raises_its_own_error() -> None:
    pred, gts = _scene(300)
    ids = CODEC.encode(serialize([pred], "desc_first")) + [CODEC.eos_id]
    good = cut_rollout(CODEC, ids, prompt_ids=PROMPT)
    bad_prompt = cut_rollout(CODEC, ids, prompt_ids=MISMATCHED_PROMPT)
    prompts, names = [PROMPT, PROMPT], ["a", "b"]
    # Sample "b" fails in phase 1 (prompt parity) after sample "a" passed it.
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    with pytest.raises(PromptMismatchError, match="prompt parity violated for sample 'b'"):
        preparer.prepare_many([good, bad_prompt], [gts, gts], local_prompt_ids=prompts, sample_ids=names)
    # Sample "a" overflows even as the fallback (phase 3): that error comes first, as it would
    # sample by sample, although sample "b"'s phase 1 failure happens earlier in time.
    tiny = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first", max_length=len(PROMPT) + 3))
    with pytest.raises(PipelineError, match="sample 'a'.*fallback"):
        tiny.prepare_many([good, bad_prompt], [gts, gts], local_prompt_ids=prompts, sample_ids=names)


@pytest.mark.parametrize("name", ["gt_lists", "local_prompt_ids", "seeds", "sample_ids"])
def test_sequences_of_the_wrong_length_are_rejected(name: str) -> None:
    preparer = RolloutPreparer(CODEC, PrepareConfig(TWO_CHANNEL, "desc_first"))
    outputs = [cut_rollout(CODEC, CODEC.encode('{"objects": []}'))] * 2
    args = {"gt_lists": [[], []], "local_prompt_ids": [(1,), (1,)], "seeds": [1, 2], "sample_ids": [1, 2]}
    args[name] = args[name][:1]
    gt_lists = args.pop("gt_lists")
    with pytest.raises(PipelineError, match=f"prepare_many got 1 {name} for 2 outputs"):
        preparer.prepare_many(outputs, gt_lists, **args)


def test_an_empty_batch_prepares_nothing() -> None:
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    with mock.patch.object(prepare_mod, "ot_targets_many") as spy:
        assert preparer.prepare_many([], []) == []
    spy.assert_not_called()
