"""One rollout end to end (spec 03 §3.1–3.8, 04 §4.6; invariants E2–E6, E10, E12, C4, C9).

The property tests build rollouts from a random mix of matched, jittered, duplicated, garbage and
random objects, cut anywhere, tokenized either canonically (the tiny BPE fuses ``"},``, ``"}]}`` …)
or at arbitrary token boundaries, ended by an eos id, a fused ``<|im_end|>`` spelled by ordinary
tokens, or nothing (truncation), with junk after the stop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson.aligned import extract_coord_positions, token_char_spans
from coordexp.core.coordjson.parse import parse
from coordexp.core.coordjson.serialize import OPEN_PREFIX, CoordObject, serialize, serialize_object
from coordexp.core.errors import ConfigError, DataContractError, PipelineError
from coordexp.core.rows import pack_rows
from coordexp.core.tokens import SpanKind
from coordexp.rollout.backend import RolloutOutput
from coordexp.rollout.decoding import DecodeParams
from coordexp.rollout.dumps import DebugDumpConfig, RolloutDumpWriter
from coordexp.rollout.ot import OTFailure, ot_targets
from coordexp.rollout.parity import PromptMismatchError
from coordexp.rollout.prepare import ROLLOUT_ALIGNED, TWO_CHANNEL, PrepareConfig, RolloutPreparer
from coordexp.rollout.sample_rows import rollout_target_to_sample_rows
from coordexp.rollout.testing import tiny_test_codec
from coordexp.rollout.trim import fallback_prefix_ids
from coordexp.testing.strategies import coord_objects, descs, field_orders

CODEC = tiny_test_codec()
PROMPT = (11, 12, 13, 14, 15)
PREPARERS = {
    (variant, order): RolloutPreparer(CODEC, PrepareConfig(variant, order))
    for variant in (TWO_CHANNEL, ROLLOUT_ALIGNED)
    for order in ("desc_first", "geometry_first")
}
GARBAGE = (
    '{"desc": "x", "bbox_2d": [1, 2, 3, 4]}',
    '{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
    '{"desc": "q", "foo": 1}',
    '"just a string"',
    '{"desc": "a", "bbox_2d": [<|coord_9|>, <|coord_9|>, <|coord_1|>, <|coord_1|>]}',
    '{"desc": "p", "poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
    '{"desc": " ", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
    '{"desc": "z", "bbox_2d": [<|coord_1000|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
    '{"desc": {"a": [1, {"b": null}]}, "bbox_2d": []}',
    '{"desc": "n", "poly": [<|coord_100|>, <|coord_200|>, <|coord_300|>, <|coord_200|>, '
    "<|coord_200|>, <|coord_600|>]}",
    "[<|coord_3|>]",
    '{"desc": "d", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "desc": "e"}',
)
CAT = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
DOG = CoordObject("dog", "poly", (500, 500, 700, 520, 600, 700))
MUG = CoordObject("mug", "bbox_2d", (700, 700, 900, 900))


def output(ids, prompt=PROMPT, max_new_tokens=None) -> RolloutOutput:
    ids = [int(i) for i in ids]
    finish = "stop" if set(ids) & CODEC.stop_ids else "length"
    return RolloutOutput(prompt, ids, finish, max_new_tokens or max(1, len(ids)), CODEC.stop_ids)


# ---------------------------------------------------------------------------------------------
# noisy rollouts
# ---------------------------------------------------------------------------------------------


def jittered(draw, obj: CoordObject) -> CoordObject:
    noise = draw(st.lists(st.integers(-15, 15), min_size=len(obj.values), max_size=len(obj.values)))
    values = np.clip(np.add(obj.values, noise), 0, 999)
    if obj.geom_key == "bbox_2d":
        values = np.concatenate([np.minimum(values[:2], values[2:]), np.maximum(values[:2], values[2:])])
    return CoordObject(obj.desc, obj.geom_key, tuple(int(v) for v in values))


def encode_pieces(draw, text: str) -> list[int]:
    """Canonical BPE ids, or the text cut into pieces encoded one by one (arbitrary boundaries)."""
    if not text or draw(st.booleans()):
        return CODEC.encode(text)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=10)))
    return [i for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) for i in CODEC.encode(text[a:b])]


@st.composite
def sizable_objects(draw, geometry: str) -> CoordObject:
    """Objects at least 24 bins wide and tall (copies of them pass the maskIoU gate)."""
    w, h = draw(st.integers(24, 400)), draw(st.integers(24, 400))
    x, y = draw(st.integers(0, 999 - w)), draw(st.integers(0, 999 - h))
    if geometry == "bbox" or draw(st.booleans()):
        return CoordObject(draw(descs()), "bbox_2d", (x, y, x + w, y + h))
    return CoordObject(draw(descs()), "poly", (x, y, x + w, y + h // 3, x + w // 2, y + h, x, y + h))


@st.composite
def noisy_rollouts(draw, variant: str):
    gt_geometry = "bbox" if variant == TWO_CHANNEL else "any"
    gts = draw(st.lists(st.one_of(sizable_objects(gt_geometry), coord_objects(gt_geometry)), max_size=6))
    field_order = draw(field_orders())
    pieces: list[str] = []
    for _ in range(draw(st.sampled_from((0, 1, 2, 3, 4, 5, 6, 7, 8, 2, 3, 4)))):
        kind = draw(st.sampled_from(("copy", "copy", "jitter", "jitter", "dup", "garbage", "random")))
        order = draw(st.sampled_from((field_order, field_order, "desc_first", "geometry_first")))
        if kind in ("copy", "jitter") and gts:
            obj = draw(st.sampled_from(gts))
            pieces.append(serialize_object(jittered(draw, obj) if kind == "jitter" else obj, order))
        elif kind == "dup" and pieces:
            pieces.append(draw(st.sampled_from(pieces)))
        elif kind == "garbage":
            pieces.append(draw(st.sampled_from(GARBAGE)))
        else:
            pieces.append(serialize_object(draw(coord_objects()), order))
    separator = draw(st.sampled_from((", ", ", ", ",", " ,  ", ",\n")))
    lead = draw(st.sampled_from(("", "", "", " ", "Sure! ", "[")))
    text = lead + OPEN_PREFIX + separator.join(pieces)
    ending = draw(st.sampled_from(("closed", "closed", "eos", "fused", "truncated")))
    if ending in ("closed", "eos", "fused") and draw(st.booleans()):
        text += "]}"
    ids = encode_pieces(draw, text)
    if ending == "truncated":
        ids = ids[: draw(st.integers(0, len(ids)))]
        stop: list[int] = []
    elif ending == "fused":
        stop = CODEC.encode("<|im_") + CODEC.encode("end|>")  # the literal spelled by ordinary tokens
    else:
        stop = [draw(st.sampled_from(sorted(CODEC.stop_ids)))]
    junk = encode_pieces(draw, draw(st.sampled_from(("", "]}", ', {"desc": "late"}]}', "<|im_end|> {}"))))
    junk += draw(st.lists(st.sampled_from(range(1400)), max_size=5))
    return gts, field_order, ids + stop, junk if stop else []


# ---------------------------------------------------------------------------------------------
# independent checks
# ---------------------------------------------------------------------------------------------


def aligned_prefix(target, geometry_policy):
    """Aligned rollout-mode parse of the kept prefix ids (re-derived, not taken from prepare)."""
    prefix_ids = target.y_train[: target.prefix_len]
    spans = token_char_spans(CODEC.token_bytes(prefix_ids))
    assert spans.text == target.prefix_text
    result = parse(spans.text, "rollout", geometry_policy)
    return spans, extract_coord_positions(result, spans, prefix_ids, CODEC.coord_vocab)


def check_target(prepared, gts, response_ids, variant) -> None:
    target = prepared.target
    policy = "bbox_only" if variant == TWO_CHANNEL else "any"
    y = target.y_train.tolist()
    prefix = y[: target.prefix_len]

    # E2: suffix-only trim; the invalid fallback is exactly encode('{"objects": [')
    if target.flags.invalid_rollout:
        assert prefix == CODEC.encode(OPEN_PREFIX) == list(fallback_prefix_ids(CODEC))
        assert target.match.pairs == () and target.match.fn == tuple(range(len(gts)))
    else:
        k = 0
        while k < len(prefix) and k < len(response_ids) and prefix[k] == response_ids[k]:
            k += 1
        if k < len(prefix):
            replaced = b"".join(CODEC.token_bytes(prefix[k:]))
            original = CODEC.token_bytes([response_ids[k]])[0]
            assert original.startswith(replaced) and replaced != original
    assert target.prefix_text.rstrip(" \t\n\r")[-1] in "[}"

    # E4: Y_train is one closed container: prefix records, then the FN objects in GT order
    text = b"".join(CODEC.token_bytes(y[:-1])).decode("utf-8", "replace")
    assert text == target.text
    full = parse(text, "strict", policy)
    assert full.strict_ok
    fn_objects = [gts[g] for g in target.match.fn]
    prefix_objects = parse(target.prefix_text, "rollout", policy).objects()
    assert full.objects() == prefix_objects + fn_objects
    assert target.fragment_text.startswith(", ") == (
        bool(fn_objects) and target.prefix_text.rstrip().endswith("}")
    )

    # E6: every GT object matched or appended exactly once
    matched_gt = [g for _, g, _ in target.match.pairs]
    assert sorted(matched_gt + list(target.match.fn)) == list(range(len(gts)))
    counters = prepared.counters
    assert counters.matched + counters.fn_appended == counters.gt_objects == len(gts)
    assert counters.valid_pred_objects == counters.matched + counters.fp

    # E5/E10: slots on coord ids whose bins are the parsed values, inside their geometry arrays
    spans, aligned = aligned_prefix(target, policy)
    valid = [r for r in aligned.result.records if r.valid]
    matched_pred = {p for p, _, _ in target.match.pairs}
    assert len(valid) == counters.valid_pred_objects or target.flags.invalid_rollout
    bins = CODEC.coord_vocab.bins_of_array(target.y_train)
    slots = target.coord_slots_prefix
    for pred_index in matched_pred:
        record = valid[pred_index]
        positions = slots.pos[slots.object == record.index]
        assert positions.tolist() == list(aligned.coord_positions[record.index])
        assert bins[positions].tolist() == list(record.values)
        assert (np.diff(positions) > 0).all()
        lo, hi = record.geom_span
        assert (spans.starts[positions] >= lo).all() and (spans.ends[positions] <= hi).all()
    assert (bins[target.coord_slots_fn.pos] == target.coord_slots_fn.target_bin).all()
    assert (target.bbox_groups_prefix.pos < target.prefix_len).all()
    assert (target.bbox_groups_fn.pos >= target.prefix_len).all()

    # C4: no supervised token touches an FP element; no slot or group lies in one
    fp_chars = np.zeros(len(target.prefix_text) + 1, dtype=bool)
    start = len(OPEN_PREFIX) if target.flags.invalid_rollout else aligned.result.open_end
    pred_of = {r.index: k for k, r in enumerate(valid)}
    for record, end in zip(aligned.result.records, aligned.result.record_ends, strict=True):
        if pred_of.get(record.index) not in matched_pred:
            fp_chars[start:end] = True
        start = end
    touched_fp = np.array(
        [
            fp_chars[s : max(e, s + 1)].any()
            for s, e in zip(spans.starts.tolist(), spans.ends.tolist(), strict=True)
        ],
        dtype=bool,
    )
    kinds = target.span_kind[: target.prefix_len]
    assert ((kinds == SpanKind.PREFIX_FP) == touched_fp).all()
    supervised = np.concatenate([slots.pos, target.bbox_groups_prefix.pos.reshape(-1)])
    assert not (target.span_kind[supervised] == SpanKind.PREFIX_FP).any()

    # the rows of the rollout context
    rows = rollout_target_to_sample_rows(target, len(PROMPT), "s")
    ctx, _ = pack_rows(
        [rows],
        [0],
        context="rollout",
        channel="B",
        trainer_variant=variant,
        coord_ids=CODEC.coord_vocab.coord_ids,
        coord_decode_mode="exp",
    )
    assert int((ctx.span_kind == SpanKind.PREFIX_FP).sum()) == 0
    assert ctx.target_ids.numel() == target.train_len - int((target.span_kind == SpanKind.PREFIX_FP).sum())


def signature(prepared):
    """Everything a prepared sample feeds downstream, minus the raw generation length."""
    t = prepared.target
    counters = prepared.counters.as_dict()
    counters.pop("rollout_len")
    return (
        t.y_train.tolist(),
        t.token_type.tolist(),
        t.span_kind.tolist(),
        t.prefix_len,
        t.coord_slots_prefix.pos.tolist(),
        t.coord_slots_prefix.target_bin.tolist(),
        t.coord_slots_fn.pos.tolist(),
        t.bbox_groups_prefix.target.tolist(),
        t.bbox_groups_fn.pos.tolist(),
        [(g.pos, g.target) for g in t.poly_groups_prefix],
        t.match,
        t.flags,
        t.counts,
        counters,
    )


@pytest.mark.parametrize("variant", [TWO_CHANNEL, ROLLOUT_ALIGNED])
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_noisy_rollouts_become_valid_targets(variant, data) -> None:
    gts, field_order, ids, junk = data.draw(noisy_rollouts(variant))
    preparer = PREPARERS[(variant, field_order)]
    prepared = preparer.prepare(output(ids), gts, local_prompt_ids=PROMPT, seed=3)
    flags, counters, prefix_len = prepared.target.flags, prepared.counters, prepared.target.prefix_len
    event(f"invalid: {flags.invalid_reason}")
    event(f"matched > 0: {counters.matched > 0}, fp > 0: {counters.fp > 0}, fn > 0: {counters.fn > 0}")
    event(f"straddler replaced: {prepared.target.y_train[:prefix_len].tolist() != ids[:prefix_len]}")
    check_target(prepared, gts, ids, variant)
    # E3: nothing after the hard stop changes anything
    if junk:
        again = preparer.prepare(output(ids + junk), gts, local_prompt_ids=PROMPT, seed=3)
        assert signature(again) == signature(prepared)


# ---------------------------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------------------------


def prepare(text, gts, *, variant=ROLLOUT_ALIGNED, field_order="desc_first", extra_ids=(), **cfg):
    preparer = RolloutPreparer(CODEC, PrepareConfig(variant, field_order, **cfg))
    ids = CODEC.encode(text) + list(extra_ids)
    return preparer.prepare(output(ids), gts, local_prompt_ids=PROMPT)


def test_matched_fp_and_fn_are_laid_out() -> None:
    rollout = serialize(
        [CoordObject("cat", "bbox_2d", (12, 20, 300, 410)), CoordObject("zz", "bbox_2d", (0, 900, 50, 999))],
        "desc_first",
    )
    prepared = prepare(rollout, [CAT, MUG], extra_ids=[CODEC.eos_id])
    t = prepared.target
    assert [(p, g) for p, g, _ in t.match.pairs] == [(0, 0)]
    assert t.match.fp == (1,) and t.match.fn == (1,)
    assert t.text == rollout[:-2] + ", " + serialize_object(MUG, "desc_first") + "]}"
    assert t.bbox_groups_prefix.target.tolist() == [list(CAT.values)]
    assert t.bbox_groups_fn.target.tolist() == [list(MUG.values)]
    assert t.flags.ends_with_eos and not t.flags.truncated and not t.flags.invalid_rollout
    c = prepared.counters
    assert (c.samples, c.matched, c.fp, c.fn, c.fn_appended, c.gt_objects) == (1, 1, 1, 1, 1, 2)
    assert c.rollout_len == len(CODEC.encode(rollout)) + 1 and c.encoded_len == len(PROMPT) + t.train_len


def test_poly_pairs_get_ot_targets_in_rollout_aligned() -> None:
    pred_poly = CoordObject("dog", "poly", (505, 498, 702, 522, 598, 690))
    pred_box = CoordObject("dog2", "bbox_2d", (495, 495, 705, 705))
    gts = [DOG, CoordObject("dog2", "poly", (500, 500, 700, 510, 690, 700, 510, 690))]
    prepared = prepare(serialize([pred_poly, pred_box], "desc_first"), gts)
    t = prepared.target
    assert [(p, g) for p, g, _ in t.match.pairs] == [(0, 0), (1, 1)]
    (poly_group,) = t.poly_groups_prefix
    assert poly_group.target == ot_targets(pred_poly, DOG).values
    assert t.bbox_groups_prefix.target.tolist() == [list(ot_targets(pred_box, gts[1]).values)]


def test_two_channel_drops_predicted_polys_and_rejects_gt_polys() -> None:
    pred_poly = CoordObject("dog", "poly", (505, 498, 702, 522, 598, 690))
    prepared = prepare(serialize([pred_poly, CAT], "desc_first"), [CAT], variant=TWO_CHANNEL)
    assert prepared.target.counts.drop_counts["poly_unsupported"] == 1
    assert prepared.counters.parse_dropped == 1 and prepared.counters.matched == 1
    with pytest.raises(DataContractError, match="variant_geom"):
        prepare(serialize([CAT], "desc_first"), [DOG], variant=TWO_CHANNEL)


def test_ot_failure_excludes_the_pair() -> None:
    pred_poly = CoordObject("dog", "poly", (505, 498, 702, 522, 598, 690))
    text = serialize([CAT, pred_poly], "desc_first")

    def fail_all(pred, gt, pairs, cfg):
        return [OTFailure("forced") for _ in pairs]

    with mock.patch("coordexp.rollout.prepare.ot_targets_many", side_effect=fail_all):
        prepared = prepare(text, [CAT, DOG])
    t = prepared.target
    assert [(p, g) for p, g, _ in t.match.pairs] == [(0, 0)]
    assert t.match.excluded == ((1, 1),) and t.match.fp == (1,) and t.match.fn == (1,)
    assert t.poly_groups_prefix == ()
    assert t.text.endswith(", " + serialize_object(DOG, "desc_first") + "]}")
    c = prepared.counters
    assert (c.excluded_from_supervision, c.fn, c.fn_appended, c.fp, c.matched) == (1, 0, 1, 1, 1)
    # the excluded prediction is a masked FP span
    poly_record = parse(t.prefix_text).records[1]
    spans = token_char_spans(CODEC.token_bytes(t.y_train))
    inside = (spans.starts >= poly_record.span[0]) & (spans.ends <= poly_record.span[1])
    assert (t.span_kind[inside] == SpanKind.PREFIX_FP).all()


def test_coord_literal_spelled_by_ordinary_tokens_is_misaligned() -> None:
    text = serialize([CAT], "desc_first")
    at = text.index("<|coord_20|>")
    ids = CODEC.encode(text[:at]) + CODEC.encode("<|coord_2") + CODEC.encode(text[at + 9 :])
    prepared = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first")).prepare(
        output(ids), [CAT]
    )
    assert prepared.target.counts.drop_counts["coord_misaligned"] == 1
    assert prepared.target.match.pairs == () and prepared.target.match.fn == (0,)


def test_fused_eos_literal_stops_and_is_not_truncation() -> None:
    text = serialize([CAT], "desc_first")
    ids = CODEC.encode(text) + CODEC.encode("<|im_") + CODEC.encode("end|>") + CODEC.encode(', {"desc": "x"}')
    prepared = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first")).prepare(
        output(ids, max_new_tokens=len(ids)), [CAT]
    )
    flags = prepared.target.flags
    assert flags.ends_with_eos and not flags.truncated
    assert prepared.rollout_text == text


def test_truncated_rollout_is_flagged_and_its_tail_dropped() -> None:
    text = serialize([CAT, MUG], "desc_first")
    ids = CODEC.encode(text[: text.index("mug")])
    prepared = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first")).prepare(
        output(ids), [CAT, MUG]
    )
    t = prepared.target
    assert t.flags.truncated and t.counts.dropped_incomplete_tail == 1
    assert t.match.fn == (1,) and prepared.counters.truncated == 1


def test_field_order_mismatch_is_counted_and_kept() -> None:
    prepared = prepare(serialize([CAT], "geometry_first"), [CAT], field_order="desc_first")
    assert prepared.target.counts.field_order_mismatch == 1
    assert prepared.counters.matched == 1


def test_invalid_rollout_trains_every_gt_as_fn() -> None:
    prepared = prepare("I cannot see anything.", [CAT, DOG])
    t = prepared.target
    assert t.flags.invalid_rollout and t.flags.invalid_reason == "no_container"
    assert t.y_train[: t.prefix_len].tolist() == CODEC.encode(OPEN_PREFIX)
    assert t.text == serialize([CAT, DOG], "desc_first")
    assert prepared.counters.invalid_rollout == 1 and prepared.counters.fn_appended == 2


def test_overlength_falls_back_to_the_canonical_prefix() -> None:
    rollout = serialize([CAT, MUG, CAT, MUG], "desc_first")
    full = prepare(rollout, [CAT, DOG])
    limit = full.target.encoded_len - 1
    prepared = prepare(rollout, [CAT, DOG], max_length=limit)
    t = prepared.target
    assert t.flags.overlength_fallback and t.flags.invalid_rollout and t.flags.invalid_reason == "overlength"
    assert t.y_train[: t.prefix_len].tolist() == CODEC.encode(OPEN_PREFIX)
    assert t.encoded_len <= limit
    assert prepared.counters.overlength_fallback == 1 and prepared.counters.matched == 0
    with pytest.raises(PipelineError, match="fallback"):
        prepare(rollout, [CAT, DOG], max_length=len(PROMPT) + 3)


def test_prompt_mismatch_raises_by_default_and_is_counted_with_drop() -> None:
    ids = CODEC.encode(serialize([CAT], "desc_first"))
    mismatched = output(ids, prompt=(11, 12, 99, 14, 15))
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    with pytest.raises(PromptMismatchError, match="position 2"):
        preparer.prepare(mismatched, [CAT], local_prompt_ids=PROMPT, sample_id="img7")
    dropping = RolloutPreparer(
        CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first", prompt_mismatch_policy="drop")
    )
    dropped = dropping.prepare(mismatched, [CAT], local_prompt_ids=PROMPT, sample_id="img7")
    assert dropped.dropped and dropped.dropped_reason == "prompt_mismatch"
    assert dropped.counters.prompt_mismatch_dropped == 1 and dropped.counters.samples == 0
    shorter = dropping.prepare(output(ids, prompt=PROMPT[:-1]), [CAT], local_prompt_ids=PROMPT)
    assert shorter.dropped
    assert not dropping.prepare(output(ids), [CAT], local_prompt_ids=PROMPT).dropped


def test_meta_records_decoding() -> None:
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    params = DecodeParams(max_new_tokens=64, temperature=0.7)
    prepared = preparer.prepare(output(CODEC.encode(OPEN_PREFIX)), [], seed=42, params=params, sample_id=5)
    assert prepared.target.decode.seed == 42 and prepared.target.decode.params["temperature"] == 0.7
    assert prepared.target.text == '{"objects": []}'
    many = preparer.prepare_many(
        [output(CODEC.encode(OPEN_PREFIX))] * 2, [[], [CAT]], seeds=[1, 2], sample_ids=[0, 1]
    )
    assert [m.target.decode.seed for m in many] == [1, 2]
    with pytest.raises(PipelineError, match="gt_lists"):
        preparer.prepare_many([output(CODEC.encode(OPEN_PREFIX))], [[], []])


def test_preparing_is_deterministic() -> None:
    text = serialize([CAT, DOG, MUG, CAT], "desc_first")[:-30]
    a = prepare(text, [MUG, CAT, DOG])
    b = prepare(text, [MUG, CAT, DOG])
    assert signature(a) == signature(b)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="custom.trainer_variant"):
        PrepareConfig("stage1", "desc_first")
    with pytest.raises(ConfigError, match="object_field_order"):
        PrepareConfig(ROLLOUT_ALIGNED, "sorted")
    with pytest.raises(ConfigError, match="prompt_mismatch_policy"):
        PrepareConfig(ROLLOUT_ALIGNED, "desc_first", prompt_mismatch_policy="warn")
    with pytest.raises(ConfigError, match="template.max_length"):
        PrepareConfig(ROLLOUT_ALIGNED, "desc_first", max_length=0)


def test_rollout_logic_imports_neither_transformers_nor_train() -> None:
    """Only coordexp.rollout.hf_backend may import transformers; nothing may import coordexp.train."""
    code = (
        "import sys\n"
        "import coordexp.rollout.prepare, coordexp.rollout.sample_rows, coordexp.rollout.counters\n"
        "import coordexp.rollout.testing\n"
        "coordexp.rollout.testing.tiny_test_codec()\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] == 'transformers' or m.startswith('coordexp.train'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_debug_dumps_are_bounded_and_put_failures_first(tmp_path) -> None:
    good = prepare(serialize([CAT], "desc_first"), [CAT])
    invalid = prepare("nothing here", [CAT])
    dropping = RolloutPreparer(
        CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first", prompt_mismatch_policy="drop")
    )
    dropped = dropping.prepare(output([1], prompt=(9,)), [CAT], local_prompt_ids=PROMPT, sample_id="d")
    assert not RolloutDumpWriter(tmp_path, 0, DebugDumpConfig()).write_step(1, [good])
    writer = RolloutDumpWriter(tmp_path, 1, DebugDumpConfig(enabled=True, max_per_step=2, max_total=3))
    assert writer.write_step(7, [good, invalid, dropped]) == 2
    assert writer.write_step(8, [good, good]) == 1
    assert writer.write_step(9, [invalid]) == 0
    lines = [
        json.loads(line) for line in (tmp_path / "rollout_dumps" / "rank1.jsonl").read_text().splitlines()
    ]
    assert [(x["step"], x["dropped_reason"]) for x in lines] == [(7, "prompt_mismatch"), (7, None), (8, None)]
    assert lines[1]["flags"]["invalid_reason"] == "no_container" and lines[1]["raw_text"] == "nothing here"
    assert lines[2]["prefix"] + lines[2]["fragment"] == serialize([CAT], "desc_first")
    assert lines[2]["match"]["pairs"][0][:2] == [0, 0]
    resumed = RolloutDumpWriter(tmp_path, 1, DebugDumpConfig(enabled=True, max_per_step=2, max_total=3))
    assert resumed.written == 3 and resumed.write_step(10, [good]) == 0
    with pytest.raises(ConfigError, match="max_per_step"):
        DebugDumpConfig(max_per_step=-1)
