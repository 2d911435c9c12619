"""The target builder's fast paths equal their reference paths (spec 03 §3.6–3.7; E10).

* a prepared target equals the one built without the reused prefix spans, with the validated
  general labelling functions and with the full ``RolloutTarget`` validation;
* ``span kinds`` of a layout that does not tile the text in order take the general path;
* :meth:`RolloutTarget.built` never accepts a record, altered in what it checks, that the detailed
  validation rejects;
* one-lookup token bytes and lengths equal the separate lookups;
* geometries stacked from int bins equal the validated stacking.
"""

from __future__ import annotations

import contextlib

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson.aligned import token_char_spans
from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.core.errors import PipelineError
from coordexp.core.tokens import SpanKind, span_kinds_for_tokens, token_types_for_tokens
from coordexp.rollout import prepare as prepare_mod
from coordexp.rollout import targets as targets_mod
from coordexp.rollout.codec import TableCodec, bytes_and_lengths
from coordexp.rollout.maskiou import GeometryBatch
from coordexp.rollout.prepare import ROLLOUT_ALIGNED, TWO_CHANNEL, PrepareConfig, RolloutPreparer
from coordexp.rollout.record import RolloutTarget, _built
from coordexp.rollout.targets import PrefixElement, PrefixTable
from coordexp.rollout.testing import box_or_diamond, cut_rollout, tiny_test_codec

CODEC = tiny_test_codec()
DESCS = ("cat", "red car", "café", "中文", 'say "hi"')


@st.composite
def scene_object(draw: st.DrawFn, polys: bool) -> CoordObject:
    desc = draw(st.sampled_from(DESCS))
    x, y = draw(st.integers(0, 900)), draw(st.integers(0, 900))
    w, h = draw(st.integers(8, 999 - x)), draw(st.integers(8, 999 - y))
    return box_or_diamond(desc, x, y, w, h, poly=polys and not draw(st.booleans()))


@st.composite
def rollouts(draw: st.DrawFn, polys: bool):
    gts = draw(st.lists(scene_object(polys), min_size=0, max_size=5))
    copies = [
        CoordObject(g.desc, g.geom_key, tuple(min(999, v + draw(st.integers(0, 5))) for v in g.values))
        for g in gts
        if g.geom_key == "poly" and draw(st.booleans())
    ] + [g for g in gts if g.geom_key == "bbox_2d" and draw(st.booleans())]
    preds = draw(st.permutations(copies + draw(st.lists(scene_object(polys), max_size=2))))
    order = draw(st.sampled_from(["desc_first", "geometry_first"]))
    ids = CODEC.encode(serialize(preds, order)) + [CODEC.eos_id]
    cut = draw(st.one_of(st.just(len(ids)), st.integers(1, len(ids))))
    output = cut_rollout(CODEC, ids, cut)
    return output, gts


def _general_token_types(ids, starts, ends, lows, highs, coord_mask, eos_id):
    return token_types_for_tokens(ids, starts, ends, np.stack([lows, highs], axis=1), coord_mask, eos_id)


def _general_span_kinds(starts, ends, lows, highs, kinds, default):
    intervals: dict[SpanKind, list[tuple[int, int]]] = {}
    for low, high, kind in zip(lows.tolist(), highs.tolist(), kinds.tolist(), strict=True):
        intervals.setdefault(SpanKind(kind), []).append((low, high))
    arrays = {kind: np.array(pairs, dtype=np.int64).reshape(-1, 2) for kind, pairs in intervals.items()}
    return span_kinds_for_tokens(starts, ends, arrays, default)


@contextlib.contextmanager
def reference_paths():
    """Every fast path of the builder replaced by its reference."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_mod, "_kept_head", lambda aligned, kept: None)
        patch.setattr(targets_mod, "token_types_for_sorted_descs", _general_token_types)
        patch.setattr(targets_mod, "span_kinds_for_sorted_intervals", _general_span_kinds)
        patch.setattr(RolloutTarget, "built", classmethod(lambda cls, **fields: cls(**fields)))
        yield


def _canonical(value):
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if attrs.has(type(value)):
        return tuple((f.name, _canonical(getattr(value, f.name))) for f in attrs.fields(type(value)))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if hasattr(value, "items"):
        return tuple(sorted((k, _canonical(v)) for k, v in value.items()))
    return value


@settings(max_examples=80, deadline=None)
@given(data=st.data(), variant=st.sampled_from([TWO_CHANNEL, ROLLOUT_ALIGNED]))
def test_prepared_target_equals_the_reference_build(data, variant: str) -> None:
    preparer = RolloutPreparer(CODEC, PrepareConfig(variant, "desc_first"))
    output, gts = data.draw(rollouts(polys=variant == ROLLOUT_ALIGNED))
    fast = preparer.prepare(output, gts).target
    with reference_paths():
        reference = preparer.prepare(output, gts).target
    assert _canonical(fast) == _canonical(reference)


def test_a_layout_that_does_not_tile_takes_the_general_span_kinds() -> None:
    # Overlapping extents (an FP span inside a matched one): the one-pass path does not apply.
    table = PrefixTable.of(
        [
            PrefixElement(
                (13, 40),
                matched=True,
                pred_index=0,
                gt_index=0,
                geom_key="bbox_2d",
                coord_positions=(3, 4, 5, 6),
                target=(1, 2, 3, 4),
            ),
            PrefixElement((20, 30)),
        ]
    )
    starts = np.arange(0, 50, 5, dtype=np.int64)
    ends = starts + 5
    got = targets_mod._span_kinds(starts, ends, 13, table, 40, 44, 6, True)
    expected = span_kinds_for_tokens(
        starts,
        ends,
        {
            SpanKind.PREFIX_OPEN: np.array([[0, 13]]),
            SpanKind.PREFIX_MATCHED: np.array([[13, 40]]),
            SpanKind.PREFIX_FP: np.array([[20, 30]]),
            SpanKind.FN: np.array([[40, 44]]),
            SpanKind.CLOSURE: np.array([[44, 46]]),
        },
        SpanKind.EOS,
    )
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def target() -> RolloutTarget:
    cat = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
    dog = CoordObject("dog", "poly", (500, 500, 700, 520, 600, 700))
    mug = CoordObject("mug", "bbox_2d", (700, 700, 900, 900))
    ids = CODEC.encode(serialize([cat, dog], "desc_first")) + [CODEC.eos_id]
    output = cut_rollout(CODEC, ids, prompt_ids=(1, 2), max_new_tokens=512)
    preparer = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first"))
    made = preparer.prepare(output, [cat, dog, mug])
    assert len(made.target.bbox_groups_prefix) and made.target.poly_groups_prefix
    return made.target


# What RolloutTarget.built checks itself (the rest the builder makes by construction).
CHECKED_ARRAYS = (
    ("token_type",),
    ("span_kind",),
    ("coord_slots_prefix", "pos"),
    ("coord_slots_prefix", "target_bin"),
    ("coord_slots_prefix", "object"),
    ("bbox_groups_prefix", "gt_index"),
    ("bbox_groups_prefix", "pred_index"),
)


def _rejected_in_detail(target: RolloutTarget) -> bool:
    try:
        target._validate_in_detail()
    except PipelineError:
        return True
    return False


def test_built_accepts_the_builders_record(target: RolloutTarget) -> None:
    fields = {f.name: getattr(target, f.name) for f in attrs.fields(RolloutTarget)}
    assert _canonical(RolloutTarget.built(**fields)) == _canonical(target)
    assert not _rejected_in_detail(target)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_built_never_accepts_a_record_the_detailed_validation_rejects(target: RolloutTarget, data) -> None:
    fields = {f.name: getattr(target, f.name) for f in attrs.fields(RolloutTarget)}
    n = target.train_len
    values = st.sampled_from([-2, -1, 0, 1, 2, 3, 5, 7, 998, 999, 1000, n - 2, n - 1, n, target.prefix_len])
    if data.draw(st.booleans()):
        path = data.draw(st.sampled_from(CHECKED_ARRAYS))
        owner = fields[path[0]]
        array = (owner if len(path) == 1 else getattr(owner, path[1])).copy()
        flat = array.reshape(-1)
        # A slot target changed alone would break the slot/group agreement that the builder has by
        # construction (it cuts the groups out of the slot arrays); only bins it cannot make are drawn.
        drawn = values if path[-1] != "target_bin" else st.sampled_from([-2, -1, 1000, 1001])
        # The builder labels every token itself and checks the FN slots against the ids, so the FN
        # tokens' labels are right by construction; labels are altered in the prefix (what the
        # handed-in prefix slots point at) and at the eos.
        if len(path) == 1:
            at = data.draw(st.one_of(st.integers(0, target.prefix_len - 1), st.just(n - 1)))
        else:
            at = data.draw(st.integers(0, flat.size - 1))
        flat[at] = data.draw(drawn)
        if len(path) == 1:
            fields[path[0]] = array
        else:
            kept = {f.name: getattr(owner, f.name) for f in attrs.fields(type(owner))}
            fields[path[0]] = _built(type(owner), **(kept | {path[1]: array}))
    else:
        fields[data.draw(st.sampled_from(["prefix_len", "prompt_len"]))] = data.draw(values)
    mutated = _built(RolloutTarget, **fields)
    if _rejected_in_detail(mutated):
        with pytest.raises(PipelineError):
            RolloutTarget.built(**fields)
    else:
        RolloutTarget.built(**fields)


@attrs.frozen
class _PlainCodec:
    """A TextCodec that is not a TableCodec (bytes only)."""

    inner: TableCodec

    @property
    def coord_vocab(self):
        return self.inner.coord_vocab

    @property
    def eos_id(self) -> int:
        return self.inner.eos_id

    @property
    def stop_ids(self) -> frozenset[int]:
        return self.inner.stop_ids

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def token_bytes(self, ids) -> list[bytes]:
        return self.inner.token_bytes(ids)


@pytest.mark.parametrize("codec", [CODEC, _PlainCodec(CODEC)])
def test_bytes_and_lengths_equal_the_separate_lookups(codec) -> None:
    ids = np.array(CODEC.encode(serialize([CoordObject("café", "bbox_2d", (1, 2, 3, 4))], "desc_first")))
    token_bytes, lengths = bytes_and_lengths(codec, ids)
    assert token_bytes == CODEC.token_bytes(ids)
    assert lengths.dtype == np.int64 and lengths.tolist() == [len(b) for b in token_bytes]
    assert token_char_spans(token_bytes, lengths) == token_char_spans(token_bytes)


@settings(max_examples=60, deadline=None)
@given(st.lists(scene_object(polys=True), min_size=1, max_size=6))
def test_stacking_int_bins_equals_validated_stacking(objects) -> None:
    trusted = GeometryBatch.from_bins([o.geom_key for o in objects], [o.values for o in objects])
    checked = GeometryBatch.of(objects)
    for name in ("points", "offsets"):
        got, want = getattr(trusted.stack, name), getattr(checked.stack, name)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(trusted.aabb, checked.aabb)
