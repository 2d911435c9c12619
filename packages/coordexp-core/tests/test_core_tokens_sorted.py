"""The trusted one-pass labelling functions equal the validated ones on their input (02 §2.1–2.2).

``span_kinds_for_sorted_intervals`` takes sorted, disjoint, non-empty intervals with one kind each;
``token_types_for_sorted_descs`` sorted, disjoint desc intervals (empty ones allowed). On such input
both must give exactly what ``span_kinds_for_tokens`` / ``token_types_for_tokens`` give.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.tokens import (
    SpanKind,
    span_kinds_for_sorted_intervals,
    span_kinds_for_tokens,
    token_types_for_sorted_descs,
    token_types_for_tokens,
)

VOCAB = 64
COORD_MASK = np.zeros(VOCAB, dtype=bool)
COORD_MASK[40:50] = True
EOS_ID = 7


@st.composite
def token_spans(draw: st.DrawFn, n_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous tokens over ``n_chars`` characters, plus zero-width tokens and tokens that share a
    character with their neighbour (a character split across tokens)."""
    cuts = sorted(set(draw(st.lists(st.integers(0, n_chars), max_size=30))) | {0, n_chars})
    starts, ends = list(cuts[:-1]), list(cuts[1:])
    for at in draw(st.lists(st.integers(0, n_chars), max_size=4)):
        starts.append(at)
        ends.append(at)
    for at in draw(st.lists(st.integers(1, max(n_chars - 1, 1)), max_size=3)):
        starts.append(max(at - 1, 0))
        ends.append(min(at + 1, n_chars))
    order = np.argsort(np.array(starts), kind="stable")
    return np.array(starts, dtype=np.int64)[order], np.array(ends, dtype=np.int64)[order]


@st.composite
def sorted_layouts(draw: st.DrawFn):
    """Sorted, disjoint, non-empty intervals (with gaps) of random kinds, and tokens over them."""
    gaps = draw(st.lists(st.integers(0, 3), min_size=0, max_size=20))
    widths = [draw(st.integers(1, 6)) for _ in gaps]
    kinds = [draw(st.sampled_from(list(SpanKind))) for _ in gaps]
    lows, highs, cursor = [], [], 0
    for gap, width in zip(gaps, widths, strict=True):
        cursor += gap
        lows.append(cursor)
        cursor += width
        highs.append(cursor)
    n_chars = cursor + draw(st.integers(0, 3))
    starts, ends = draw(token_spans(max(n_chars, 1)))
    return (
        starts,
        ends,
        np.array(lows, dtype=np.int64),
        np.array(highs, dtype=np.int64),
        np.array([int(k) for k in kinds], dtype=np.int64),
    )


@settings(max_examples=200, deadline=None)
@given(sorted_layouts(), st.sampled_from(list(SpanKind)))
def test_sorted_span_kinds_equal_the_validated_path(layout, default: SpanKind) -> None:
    starts, ends, lows, highs, kinds = layout
    intervals: dict[SpanKind, list[tuple[int, int]]] = {}
    for low, high, kind in zip(lows.tolist(), highs.tolist(), kinds.tolist(), strict=True):
        intervals.setdefault(SpanKind(kind), []).append((low, high))
    arrays = {kind: np.array(pairs, dtype=np.int64).reshape(-1, 2) for kind, pairs in intervals.items()}
    expected = span_kinds_for_tokens(starts, ends, arrays, default)
    got = span_kinds_for_sorted_intervals(starts, ends, lows, highs, kinds, default)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_sorted_span_kinds_fused_token_takes_the_highest_rank() -> None:
    lows, highs = np.array([0, 4, 8]), np.array([4, 8, 10])
    kinds = np.array([SpanKind.PREFIX_OPEN, SpanKind.PREFIX_FP, SpanKind.CLOSURE], dtype=np.int64)
    starts, ends = np.array([0, 3, 7, 10]), np.array([3, 5, 10, 10])
    got = span_kinds_for_sorted_intervals(starts, ends, lows, highs, kinds, SpanKind.EOS)
    assert got.tolist() == [SpanKind.PREFIX_OPEN, SpanKind.PREFIX_FP, SpanKind.PREFIX_FP, SpanKind.EOS]


@st.composite
def typed_tokens(draw: st.DrawFn):
    """Token ids and spans with sorted, disjoint desc intervals (some empty)."""
    n_chars = draw(st.integers(1, 60))
    starts, ends = draw(token_spans(n_chars))
    ids = np.array(draw(st.lists(st.integers(0, VOCAB - 1), min_size=len(starts), max_size=len(starts))))
    bounds = sorted(draw(st.lists(st.integers(0, n_chars + 2), max_size=12)))
    pairs = np.array(bounds[: len(bounds) // 2 * 2], dtype=np.int64).reshape(-1, 2)
    return ids.astype(np.int64), starts, ends, pairs


@settings(max_examples=200, deadline=None)
@given(typed_tokens())
def test_sorted_token_types_equal_the_validated_path(data) -> None:
    ids, starts, ends, desc = data
    expected = token_types_for_tokens(ids, starts, ends, desc, COORD_MASK, EOS_ID)
    got = token_types_for_sorted_descs(ids, starts, ends, desc[:, 0], desc[:, 1], COORD_MASK, EOS_ID)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
