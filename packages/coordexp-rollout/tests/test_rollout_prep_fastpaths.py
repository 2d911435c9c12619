"""The preparer's fast paths equal their reference paths (spec 03 §3.3–3.7; E7, E9, E10).

* the :class:`PrefixTable` the preparer builds equals ``PrefixTable.of`` of the
  :class:`PrefixElement` values the spec describes (matched records with their GT bins or per-pair
  OT targets, everything else an FP span);
* :class:`RolloutTarget`'s whole-array validity test never accepts a record the check-by-check
  validation rejects, and accepts every record the builder makes;
* rings handed to pycocotools as float64 views rasterize exactly like the Python lists;
* the cached OT padding tables hold the values of the formulas they replace.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.core.errors import PipelineError
from coordexp.rollout import ot as ot_mod
from coordexp.rollout.ot import ot_targets
from coordexp.rollout.prepare import ROLLOUT_ALIGNED, TWO_CHANNEL, PrepareConfig, RolloutPreparer
from coordexp.rollout.record import RolloutTarget, _built, _certainly_valid
from coordexp.rollout.targets import BBOX_KEY, PrefixElement, PrefixTable
from coordexp.rollout.testing import box_or_diamond, cut_rollout, tiny_test_codec

CODEC = tiny_test_codec()
DESCS = ("cat", "dog", "red car", "mug", "café")


@st.composite
def scene_objects(draw, polys: bool) -> CoordObject:
    desc = draw(st.sampled_from(DESCS))
    x, y = draw(st.integers(0, 900)), draw(st.integers(0, 900))
    w, h = draw(st.integers(8, 999 - x)), draw(st.integers(8, 999 - y))
    return box_or_diamond(desc, x, y, w, h, poly=polys and not draw(st.booleans()))


def _jittered(obj: CoordObject, shift: int) -> CoordObject:
    values = tuple(min(999, v + shift) for v in obj.values)
    return CoordObject(obj.desc, obj.geom_key, values)


@st.composite
def rollouts(draw, polys: bool):
    gts = draw(st.lists(scene_objects(polys), min_size=1, max_size=6))
    copies = [_jittered(g, draw(st.integers(0, 6))) for g in gts if draw(st.booleans())]
    preds = copies + draw(st.lists(scene_objects(polys), max_size=3))
    preds = draw(st.permutations(preds))
    ids = CODEC.encode(serialize(preds, "desc_first")) + [CODEC.eos_id]
    cut = draw(st.one_of(st.just(len(ids)), st.integers(1, len(ids))))
    output = cut_rollout(CODEC, ids, cut)
    return output, gts


def _reference_elements(preparer: RolloutPreparer, aligned, trim, summary, gt) -> list[PrefixElement]:
    """The prefix elements as the spec states them, one :class:`PrefixElement` at a time."""
    records = aligned.parse.records
    preds = [r for r in records if r.valid]
    supervised = {}
    for p, g, _ in summary.pairs:
        pred, truth = preds[p], gt[g]
        both_boxes = pred.geom_key == BBOX_KEY and truth.geom_key == BBOX_KEY
        if both_boxes or not preparer.cfg.uses_poly_ot:
            supervised[p] = (g, truth.values)
        else:
            supervised[p] = (g, ot_targets((pred.geom_key, pred.values), truth, preparer.cfg.poly_ot).values)
    pred_index_of = {record.index: k for k, record in enumerate(preds)}
    elements, start = [], trim.open_end
    for record, end in zip(records, aligned.parse.record_ends, strict=True):
        p = pred_index_of.get(record.index)
        match_of = supervised.get(p) if p is not None else None
        if match_of is None:
            elements.append(PrefixElement((start, end), record.desc_span, pred_index=p))
        else:
            elements.append(
                PrefixElement(
                    (start, end),
                    record.desc_span,
                    matched=True,
                    pred_index=p,
                    gt_index=match_of[0],
                    geom_key=record.geom_key,
                    coord_positions=aligned.coord_positions[record.index],
                    target=match_of[1],
                )
            )
        start = end
    return elements


@settings(max_examples=60, deadline=None)
@given(data=st.data(), variant=st.sampled_from([TWO_CHANNEL, ROLLOUT_ALIGNED]))
def test_preparer_prefix_table_equals_the_elements_table(data, variant: str) -> None:
    preparer = RolloutPreparer(CODEC, PrepareConfig(variant, "desc_first"))
    output, gts = data.draw(rollouts(polys=variant == ROLLOUT_ALIGNED))
    pending = preparer._front(output, gts, None, None, None, None)
    if pending.matched is None:  # invalid rollout: nothing matched
        return
    aligned, trim = pending.aligned, pending.trim
    ot_results = preparer._ot_many([pending.matched])[0]
    table, summary, _ = preparer._supervise(aligned, trim, pending.gt, pending.matched, ot_results)
    assert not summary.excluded  # well-conditioned pairs: no OT failure to account for
    expected = PrefixTable.of(_reference_elements(preparer, aligned, trim, summary, gts))
    for field in attrs.fields(PrefixTable):
        got, want = getattr(table, field.name), getattr(expected, field.name)
        assert got.dtype == want.dtype and got.shape == want.shape, field.name
        np.testing.assert_array_equal(got, want, err_msg=field.name)


@pytest.fixture(scope="module")
def target() -> RolloutTarget:
    cat = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
    dog = CoordObject("dog", "poly", (500, 500, 700, 520, 600, 700))
    mug = CoordObject("mug", "bbox_2d", (700, 700, 900, 900))
    owl = CoordObject("owl", "poly", (100, 600, 300, 650, 200, 800))
    ids = CODEC.encode(serialize([cat, dog], "desc_first")) + [CODEC.eos_id]
    output = cut_rollout(CODEC, ids, prompt_ids=(1, 2), max_new_tokens=512)
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    made = preparer.prepare(output, [cat, dog, mug, owl]).target
    assert len(made.bbox_groups_prefix) and made.poly_groups_prefix and len(made.coord_slots_fn)
    return made


def _fields(target: RolloutTarget) -> dict:
    return {field.name: getattr(target, field.name) for field in attrs.fields(RolloutTarget)}


def _with(table, name: str, array: np.ndarray):
    """``table`` with ``name`` replaced, built unchecked (as the target builder builds tables)."""
    kept = {field.name: getattr(table, field.name) for field in attrs.fields(type(table))}
    return _built(type(table), **(kept | {name: array}))


def _passes_in_detail(target: RolloutTarget) -> bool:
    try:
        target._validate_in_detail()
    except PipelineError:
        return False
    return True


ARRAY_FIELDS = (
    ("y_train",),
    ("token_type",),
    ("span_kind",),
    ("coord_slots_prefix", "pos"),
    ("coord_slots_prefix", "target_bin"),
    ("coord_slots_prefix", "object"),
    ("coord_slots_fn", "pos"),
    ("coord_slots_fn", "slot"),
    ("bbox_groups_prefix", "pos"),
    ("bbox_groups_prefix", "target"),
    ("bbox_groups_prefix", "gt_index"),
    ("bbox_groups_prefix", "pred_index"),
    ("bbox_groups_fn", "pos"),
    ("bbox_groups_fn", "pred_index"),
    ("bbox_groups_fn", "weight"),
)


def test_quick_validity_accepts_the_builders_record(target: RolloutTarget) -> None:
    assert _certainly_valid(target) and _passes_in_detail(target)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_quick_validity_never_accepts_a_rejected_record(target: RolloutTarget, data) -> None:
    fields = _fields(target)
    n = target.train_len
    values = st.sampled_from([-2, -1, 0, 1, 2, 5, 998, 999, 1000, n - 2, n - 1, n, target.prefix_len])
    kind = data.draw(st.sampled_from(["array", "poly", "lengths"]))
    if kind == "array":
        path = data.draw(st.sampled_from(ARRAY_FIELDS))
        owner = fields[path[0]]
        array = (owner if len(path) == 1 else getattr(owner, path[1])).copy()
        if array.size:
            flat = array.reshape(-1)
            flat[data.draw(st.integers(0, flat.size - 1))] = data.draw(values)
        fields[path[0]] = array if len(path) == 1 else _with(owner, path[1], array)
    elif kind == "poly":
        group = fields["poly_groups_prefix"][0]
        which = data.draw(st.sampled_from(["pos", "target"]))
        items = list(getattr(group, which))
        items[data.draw(st.integers(0, len(items) - 1))] = data.draw(values)
        changed = attrs.evolve(group, **{which: tuple(items)})
        fields["poly_groups_prefix"] = (changed, *fields["poly_groups_prefix"][1:])
    else:
        fields[data.draw(st.sampled_from(["prefix_len", "prompt_len"]))] = data.draw(values)
    mutated = _built(RolloutTarget, **fields)
    assert not _certainly_valid(mutated) or _passes_in_detail(mutated)


@pytest.mark.parametrize("size", [8, 16, 24])
def test_ot_padding_tables_hold_the_formulas(size: int) -> None:
    real, marginal = ot_mod._padding_tables(size)
    ranges = ot_mod._clamped_ranges(size)
    for n in range(1, size + 1):
        mask = np.arange(size) < n
        np.testing.assert_array_equal(real[n], mask)
        np.testing.assert_array_equal(marginal[n], np.where(mask, 1.0 / np.array(n), 1.0))
        np.testing.assert_array_equal(ranges[n], np.minimum(np.arange(size), n - 1))
