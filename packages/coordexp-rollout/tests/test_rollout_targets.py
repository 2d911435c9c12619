"""FN append, ``Y_train``, rollout meta and its rows (spec 03 §3.6–3.7, 02 §2.2/§2.4; E4, E6, E10, C9)."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson.aligned import EOS_LITERAL, extract_coord_positions, token_char_spans
from coordexp.core.coordjson.parse import parse
from coordexp.core.coordjson.serialize import OPEN_PREFIX, CoordObject, serialize, serialize_records
from coordexp.core.errors import PipelineError
from coordexp.core.rows import pack_rows
from coordexp.core.tokens import FUSED_SPAN_PRECEDENCE, SpanKind, Subset, TokenType
from coordexp.rollout.record import (
    BBoxGroupTable,
    CoordSlots,
    DecodeInfo,
    MatchSummary,
    ParseCounts,
    RolloutFlags,
    RolloutTarget,
)
from coordexp.rollout.sample_rows import rollout_target_to_sample_rows
from coordexp.rollout.targets import (
    PrefixElement,
    build_rollout_target,
    check_target_ids,
    fn_fragment,
    fn_lead,
)
from coordexp.rollout.testing import tiny_test_codec
from coordexp.rollout.trim import TrimResult, fallback_prefix_ids, invalid_trim
from coordexp.testing.strategies import boxes, canonical_polys, coord_objects, descs, field_orders

CODEC = tiny_test_codec()
CAT = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
DOG = CoordObject("dog", "poly", (500, 500, 700, 520, 600, 700))
MUG = CoordObject("mug", "bbox_2d", (700, 700, 900, 900))
_PRECEDENCE_RANK = {kind: len(FUSED_SPAN_PRECEDENCE) - r for r, kind in enumerate(FUSED_SPAN_PRECEDENCE)}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def canonical_prefix(objects, field_order) -> tuple[TrimResult, object]:
    """A rollout prefix holding ``objects`` (cut after the last record) and its aligned parse."""
    text = OPEN_PREFIX + serialize_records(objects, field_order)
    ids = CODEC.encode(text)
    spans = token_char_spans(CODEC.token_bytes(ids))
    assert spans.text == text
    aligned = extract_coord_positions(parse(text, "rollout"), spans, np.asarray(ids), CODEC.coord_vocab)
    return TrimResult(tuple(ids), text, len(OPEN_PREFIX), len(text), len(ids), (), None), aligned


def aabb(values) -> tuple[int, ...]:
    xs, ys = values[0::2], values[1::2]
    return (min(xs), min(ys), max(xs), max(ys))


def elements_for(trim, aligned, matched_gt: dict[int, int], gts) -> list[PrefixElement]:
    """Prefix elements; record i is matched to GT ``matched_gt[i]`` (bbox preds target the GT box or
    the AABB of a GT poly, poly preds keep their own bins as stand-in OT targets)."""
    out, start = [], trim.open_end
    for record, end in zip(aligned.result.records, aligned.result.record_ends, strict=False):
        g = matched_gt.get(record.index)
        if g is None:
            out.append(PrefixElement((start, end), record.desc_span, pred_index=record.index))
        else:
            target = (
                (gts[g].values if gts[g].geom_key == "bbox_2d" else aabb(gts[g].values))
                if record.geom_key == "bbox_2d"
                else record.values
            )
            out.append(
                PrefixElement(
                    (start, end),
                    record.desc_span,
                    True,
                    record.index,
                    g,
                    record.geom_key,
                    aligned.coord_positions[record.index],
                    target,
                )
            )
        start = end
    return out


def build(trim, elements, gts, fn, field_order="desc_first", prompt_len=7):
    pairs = tuple((e.pred_index, e.gt_index, 1.0) for e in elements if e.matched)
    return build_rollout_target(
        codec=CODEC,
        trim=trim,
        elements=elements,
        gt_objects=gts,
        fn_indices=fn,
        field_order=field_order,
        prompt_len=prompt_len,
        match=MatchSummary(pairs=pairs, fn=tuple(fn)),
        flags=RolloutFlags(),
        counts=ParseCounts(),
        decode=DecodeInfo(),
    )


def expected_span_kinds(target, trim, elements, fn) -> list[int]:
    """Independent resolution of D26/D27: every kind a token touches, highest precedence wins."""
    spans = token_char_spans(CODEC.token_bytes(target.y_train))
    n_prefix = len(trim.prefix_text)
    tail_start = n_prefix + len(target.fragment_text) - len("]}")
    intervals = [(SpanKind.PREFIX_OPEN, 0, trim.open_end)]
    intervals += [(SpanKind.PREFIX_MATCHED if e.matched else SpanKind.PREFIX_FP, *e.extent) for e in elements]
    if fn:
        intervals.append((SpanKind.FN, n_prefix, tail_start))
    intervals.append((SpanKind.CLOSURE, tail_start, n_prefix + len(target.fragment_text)))
    out = []
    for t, (s, e) in enumerate(zip(spans.starts.tolist(), spans.ends.tolist(), strict=False)):
        if t == target.train_len - 1:
            out.append(int(SpanKind.EOS))
            continue
        e = max(e, s + 1)
        touched = [kind for kind, a, b in intervals if a < e and s < b]
        out.append(int(max(touched, key=_PRECEDENCE_RANK.__getitem__)))
    return out


# ---------------------------------------------------------------------------------------------
# FN append rules (03 §3.6)
# ---------------------------------------------------------------------------------------------


def test_lead_is_a_comma_iff_the_prefix_ends_in_a_record_and_fn_exist() -> None:
    assert fn_lead(OPEN_PREFIX, True) == ""
    assert fn_lead(OPEN_PREFIX + "\n ", True) == ""
    assert fn_lead('{"objects": [{"a": 1}', True) == ", "
    assert fn_lead('{"objects": [{"a": 1}  ', True) == ", "
    assert fn_lead('{"objects": [{"a": 1}', False) == ""
    with pytest.raises(PipelineError, match="append-ready"):
        fn_lead('{"objects": [{"a": 1},', True)


def test_fragment_text_is_lead_records_closure() -> None:
    assert fn_fragment(OPEN_PREFIX, [], "desc_first").text == "]}"
    assert (
        fn_fragment(OPEN_PREFIX, [CAT], "desc_first").text
        == serialize([CAT], "desc_first")[len(OPEN_PREFIX) :]
    )
    prefix = OPEN_PREFIX + serialize_records([MUG], "geometry_first")
    frag = fn_fragment(prefix, [CAT, DOG], "geometry_first")
    assert frag.text == ", " + serialize_records([CAT, DOG], "geometry_first") + "]}"
    assert prefix + frag.text == serialize([MUG, CAT, DOG], "geometry_first")


def test_y_train_is_prefix_then_fragment_then_eos() -> None:
    trim, aligned = canonical_prefix([MUG, CAT], "desc_first")
    gts = [CAT, DOG, MUG]
    target = build(trim, elements_for(trim, aligned, {0: 2, 1: 0}, gts), gts, [1])
    fragment = ", " + serialize_records([DOG], "desc_first") + "]}"
    assert target.fragment_text == fragment
    assert target.y_train.tolist() == [*trim.prefix_ids, *CODEC.encode(fragment), CODEC.eos_id]
    assert target.prefix_len == len(trim.prefix_ids)
    assert target.train_len == target.prefix_len + len(CODEC.encode(fragment)) + 1
    assert target.encoded_len == 7 + target.train_len
    assert target.eos_pos == target.train_len - 1
    assert target.bbox_groups_fn.gt_index.tolist() == [] and len(target.coord_slots_fn) == 6
    assert target.bbox_groups_prefix.gt_index.tolist() == [2, 0]
    assert target.bbox_groups_prefix.target.tolist() == [list(MUG.values), list(CAT.values)]


def test_invalid_prefix_appends_every_gt() -> None:
    trim = invalid_trim(fallback_prefix_ids(CODEC), "no_container")
    gts = [CAT, DOG, MUG]
    target = build(trim, [], gts, [0, 1, 2], field_order="geometry_first")
    assert target.y_train[: target.prefix_len].tolist() == CODEC.encode(OPEN_PREFIX)
    assert target.text == serialize(gts, "geometry_first")
    assert target.prefix_struct_pos.tolist() == list(range(target.prefix_len))
    assert target.bbox_groups_fn.gt_index.tolist() == [0, 2]
    assert [g.gt_index for g in target.poly_groups_prefix] == []


def test_gt_with_an_end_of_turn_token_is_rejected() -> None:
    trim = invalid_trim(fallback_prefix_ids(CODEC), "no_container")
    gts = [CoordObject("a" + EOS_LITERAL, "bbox_2d", (1, 2, 3, 4))]
    with pytest.raises(PipelineError, match="eos-type"):
        build(trim, [], gts, [0])


def test_fn_indices_must_be_distinct_gt_indices_in_order() -> None:
    trim = invalid_trim(fallback_prefix_ids(CODEC), "no_container")
    for bad in ([1, 0], [0, 0], [3]):
        with pytest.raises(PipelineError, match="fn_indices"):
            build(trim, [], [CAT, DOG], bad)


# ---------------------------------------------------------------------------------------------
# properties: E4, E6, E10, C9
# ---------------------------------------------------------------------------------------------


@st.composite
def prefix_cases(draw):
    gts = draw(st.lists(coord_objects(), max_size=6))
    field_order = draw(field_orders())
    matched = draw(st.lists(st.sampled_from(range(len(gts))), unique=True) if gts else st.just([]))
    preds: list[tuple[CoordObject, int | None]] = []
    for g in matched:
        kind = draw(st.sampled_from(("bbox", "poly")))
        geom = ("bbox_2d", draw(boxes())) if kind == "bbox" else ("poly", draw(canonical_polys()))
        preds.append((CoordObject(draw(descs()), *geom), g))
    for _ in range(draw(st.integers(0, 3))):
        preds.append((draw(coord_objects()), None))
    preds = draw(st.permutations(preds))
    return gts, field_order, preds


@settings(max_examples=120, deadline=None)
@given(case=prefix_cases())
def test_y_train_strict_parses_to_prefix_then_fn_in_gt_order(case) -> None:
    gts, field_order, preds = case
    trim, aligned = canonical_prefix([p for p, _ in preds], field_order)
    matched_gt = {i: g for i, (_, g) in enumerate(preds) if g is not None}
    fn = sorted(set(range(len(gts))) - set(matched_gt.values()))
    elements = elements_for(trim, aligned, matched_gt, gts)
    target = build(trim, elements, gts, fn, field_order)
    check_target_ids(target, CODEC)

    # E4: one closed container: the prefix records, then exactly the FN objects in GT order
    text = b"".join(CODEC.token_bytes(target.y_train[:-1])).decode()
    assert text == target.text
    result = parse(text, "strict", field_order=field_order)
    assert result.strict_ok
    assert result.objects() == [p for p, _ in preds] + [gts[g] for g in fn]
    assert target.fragment_text.startswith(", ") == (bool(fn) and bool(preds))
    # E6: every GT object is matched or appended, exactly once
    assert sorted([*matched_gt.values(), *fn]) == list(range(len(gts)))
    assert len(target.coord_slots_fn) == sum(len(gts[g].values) for g in fn)
    # E10 and E5: slots sit on coord ids carrying the matched record's parsed bins / the FN GT bins
    vocab = CODEC.coord_vocab
    for element in elements:
        if element.matched:
            ids = target.y_train[list(element.coord_positions)]
            assert vocab.bins_of_array(ids).tolist() == list(preds[element.pred_index][0].values)
    assert (target.coord_slots_prefix.pos < target.prefix_len).all()
    assert (target.coord_slots_fn.pos >= target.prefix_len).all()
    assert vocab.bins_of_array(target.y_train[target.coord_slots_fn.pos]).tolist() == [
        v for g in fn for v in gts[g].values
    ]
    assert (target.bbox_groups_fn.pos >= target.prefix_len).all() and (
        target.bbox_groups_prefix.pos < target.prefix_len
    ).all()
    # C9: fused tokens take the highest touched kind
    assert target.span_kind.tolist() == expected_span_kinds(target, trim, elements, fn)
    assert target.token_type[-1] == TokenType.EOS and target.span_kind[-1] == SpanKind.EOS


def test_fused_tokens_take_the_highest_span_kind() -> None:
    """``"},`` spanning a matched record and an FP separator is FP; ``"}]}`` spanning the last FN
    record and the closure is closure (geometry_first ends records with ``"}``)."""
    trim, aligned = canonical_prefix([CAT, MUG], "geometry_first")
    gts = [CAT, DOG]
    elements = elements_for(trim, aligned, {0: 0}, gts)
    target = build(trim, elements, gts, [1], field_order="geometry_first")
    pieces = CODEC.token_bytes(target.y_train)
    fused_fp = pieces.index(b'"},')
    assert fused_fp < target.prefix_len and target.span_kind[fused_fp] == SpanKind.PREFIX_FP
    closing = len(pieces) - 2
    assert pieces[closing] == b'"}]}' and target.span_kind[closing] == SpanKind.CLOSURE
    assert target.span_kind[0] == SpanKind.PREFIX_OPEN
    assert pieces[3] == b' [{"' and target.span_kind[3] == SpanKind.PREFIX_MATCHED


def test_meta_position_lists_partition_the_assistant_positions() -> None:
    trim, aligned = canonical_prefix([CAT, MUG], "desc_first")
    gts = [CAT, DOG]
    target = build(trim, elements_for(trim, aligned, {0: 0}, gts), gts, [1])
    coord = np.concatenate([target.coord_slots_prefix.pos, target.coord_slots_fn.pos])
    parts = [
        target.prefix_struct_pos,
        target.prefix_desc_pos,
        target.prefix_fp_pos,
        target.tail_struct_pos,
        target.tail_desc_pos,
        target.closure_pos,
        np.array([target.eos_pos]),
        coord,
    ]
    merged = np.sort(np.concatenate(parts))
    assert merged.tolist() == list(range(target.train_len))
    assert all(0 <= p < target.prefix_len for p in target.prefix_fp_pos)
    assert target.tail_struct_pos.min() == target.prefix_len  # the lead ", " is FN struct


# ---------------------------------------------------------------------------------------------
# validation (E10)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_target() -> RolloutTarget:
    trim, aligned = canonical_prefix([CAT, MUG], "desc_first")
    gts = [CAT, DOG, MUG]
    return build(trim, elements_for(trim, aligned, {0: 0, 1: 2}, gts), gts, [1])


def test_slots_out_of_bounds_or_off_coord_tokens_raise(sample_target) -> None:
    t = sample_target
    slots = t.coord_slots_prefix
    with pytest.raises(PipelineError, match="positions must lie"):
        attrs.evolve(t, coord_slots_prefix=attrs.evolve(slots, pos=slots.pos + t.prefix_len))
    shifted = slots.pos.copy()
    shifted[0] -= 1
    with pytest.raises(PipelineError, match="not a coord token"):
        attrs.evolve(t, coord_slots_prefix=attrs.evolve(slots, pos=shifted))
    trim, aligned = canonical_prefix([CAT, MUG], "desc_first")
    with_fp = build(trim, elements_for(trim, aligned, {0: 0}, [CAT]), [CAT], [])
    fp_coords = np.flatnonzero(
        (with_fp.span_kind == SpanKind.PREFIX_FP) & (with_fp.token_type == TokenType.COORD)
    )
    moved = attrs.evolve(with_fp.coord_slots_prefix, pos=fp_coords)
    with pytest.raises(PipelineError, match="span kind PREFIX_FP, expected PREFIX_MATCHED"):
        attrs.evolve(with_fp, coord_slots_prefix=moved, bbox_groups_prefix=BBoxGroupTable.empty())


def test_groups_must_sit_on_their_side_of_prefix_len(sample_target) -> None:
    t = sample_target
    with pytest.raises(PipelineError, match="bbox_groups_fn: positions"):
        attrs.evolve(t, bbox_groups_fn=attrs.evolve(t.bbox_groups_prefix, pred_index=np.full(2, -1)))
    with pytest.raises(PipelineError, match="bbox_groups_prefix: positions"):
        attrs.evolve(
            t,
            bbox_groups_prefix=BBoxGroupTable(
                t.coord_slots_fn.pos[:4][None], t.coord_slots_fn.target_bin[:4][None], [1], [0], [1.0]
            ),
        )
    wrong_target = t.bbox_groups_prefix.target.copy()
    wrong_target[0, 0] = (wrong_target[0, 0] + 1) % 1000
    with pytest.raises(PipelineError, match="not a coord slot with target"):
        attrs.evolve(t, bbox_groups_prefix=attrs.evolve(t.bbox_groups_prefix, target=wrong_target))


def test_eos_and_span_regions_are_checked(sample_target) -> None:
    t = sample_target
    kinds = t.span_kind.copy()
    kinds[0] = SpanKind.FN
    with pytest.raises(PipelineError, match="does not belong before"):
        attrs.evolve(t, span_kind=kinds)
    types = t.token_type.copy()
    types[-1] = TokenType.STRUCT
    with pytest.raises(PipelineError, match="eos"):
        attrs.evolve(t, token_type=types)
    with pytest.raises(PipelineError, match="prefix_len"):
        attrs.evolve(t, prefix_len=t.train_len)


def test_check_target_ids_rejects_non_coord_slots(sample_target) -> None:
    t = sample_target
    y = t.y_train.copy()
    y[t.coord_slots_fn.pos[0]] = CODEC.encode("a")[0]
    with pytest.raises(PipelineError, match="not a coord id"):
        check_target_ids(attrs.evolve(t, y_train=y), CODEC)


def test_slot_tables_validate_their_values() -> None:
    with pytest.raises(PipelineError, match="same length"):
        CoordSlots([1, 2], [3], [0, 0], [0, 1])
    with pytest.raises(PipelineError, match="target bins"):
        CoordSlots([1], [1000], [0], [0])
    with pytest.raises(PipelineError, match="weights"):
        BBoxGroupTable([[1, 2, 3, 4]], [[1, 2, 3, 4]], [0], [-1], [float("nan")])


# ---------------------------------------------------------------------------------------------
# SampleRows conversion
# ---------------------------------------------------------------------------------------------


def test_sample_rows_carry_every_position_and_pack_drops_fp(sample_target) -> None:
    t = sample_target
    rows = rollout_target_to_sample_rows(t, 7, "s0", counters={"matched": 2})
    assert rows.positions.tolist() == list(range(7, 7 + t.train_len))
    assert rows.target_ids.tolist() == t.y_train.tolist()
    assert rows.segment.lengths["prefix_len"] == t.prefix_len and rows.segment.counters["matched"] == 2
    slots = np.concatenate([t.coord_slots_prefix.pos, t.coord_slots_fn.pos])
    assert (
        rows.coord_target[slots]
        == np.concatenate([t.coord_slots_prefix.target_bin, t.coord_slots_fn.target_bin])
    ).all()
    others = np.setdiff1d(np.arange(t.train_len), slots)
    assert (rows.coord_target[others] == -1).all() and (rows.slot[others] == -1).all()
    assert rows.group_subset.tolist() == [Subset.MATCHED] * 2
    assert rows.group_rows.tolist() == t.bbox_groups_prefix.pos.tolist()
    ctx, predict = pack_rows(
        [rows],
        [0],
        context="rollout",
        channel="B",
        trainer_variant="stage2_rollout_aligned",
        coord_ids=CODEC.coord_vocab.coord_ids,
        coord_decode_mode="exp",
    )
    kept = t.span_kind != SpanKind.PREFIX_FP
    assert ctx.target_ids.tolist() == t.y_train[kept].tolist()
    assert predict.tolist() == (np.flatnonzero(kept) + 7 - 1).tolist()
    assert ctx.bbox_groups.rows.shape == (2, 4)


def test_sample_rows_need_the_targets_prompt_len(sample_target) -> None:
    with pytest.raises(PipelineError, match="prompt_len"):
        rollout_target_to_sample_rows(sample_target, 8, "s0")


def test_sample_rows_put_fn_groups_after_matched_ones() -> None:
    trim, aligned = canonical_prefix([CAT], "desc_first")
    gts = [MUG, CAT, DOG, CoordObject("box", "bbox_2d", (1, 1, 5, 5))]
    target = build(trim, elements_for(trim, aligned, {0: 1}, gts), gts, [0, 2, 3])
    rows = rollout_target_to_sample_rows(target, 7, 3)
    assert rows.group_subset.tolist() == [Subset.MATCHED, Subset.FN, Subset.FN]
    assert rows.group_target.tolist() == [list(CAT.values), list(MUG.values), [1, 1, 5, 5]]
    assert rows.object_index[target.coord_slots_fn.pos].tolist() == [1] * 4 + [2] * 6 + [3] * 4
