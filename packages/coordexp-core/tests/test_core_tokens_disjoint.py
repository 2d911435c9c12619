"""``span_kinds_for_tokens``' one-pass path for disjoint intervals equals the per-kind path (02 §2.2)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core import tokens as tokens_mod
from coordexp.core.tokens import SpanKind, span_kinds_for_tokens


@st.composite
def tiled_text(draw: st.DrawFn):
    """Tokens over a text tiled by intervals of random kinds (some empty), with fused tokens."""
    widths = draw(st.lists(st.integers(0, 6), min_size=1, max_size=25))
    kinds = [draw(st.sampled_from(list(SpanKind))) for _ in widths]
    bounds = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    n_chars = int(bounds[-1])
    cuts = sorted(set(draw(st.lists(st.integers(0, max(n_chars, 1)), max_size=30))) | {0, max(n_chars, 1)})
    starts = np.array(cuts[:-1], dtype=np.int64)
    ends = np.array(cuts[1:], dtype=np.int64)
    # A few zero-width tokens (special tokens) and overlapping spans (a character split across tokens).
    extra = draw(st.lists(st.integers(0, max(n_chars, 1)), max_size=4))
    starts = np.concatenate([starts, np.array(extra, dtype=np.int64)])
    ends = np.concatenate([ends, np.array(extra, dtype=np.int64)])
    intervals: dict[SpanKind, list[tuple[int, int]]] = {}
    for kind, lo, hi in zip(kinds, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        intervals.setdefault(kind, []).append((lo, hi))
    arrays = {kind: np.array(pairs, dtype=np.int64).reshape(-1, 2) for kind, pairs in intervals.items()}
    return starts, ends, arrays


@settings(max_examples=200, deadline=None)
@given(tiled_text(), st.sampled_from(list(SpanKind)))
def test_one_pass_equals_per_kind_path(data, default) -> None:
    starts, ends, intervals = data
    fast = span_kinds_for_tokens(starts, ends, intervals, default)
    original = tokens_mod._kinds_of_disjoint_intervals
    try:
        tokens_mod._kinds_of_disjoint_intervals = lambda *args: None
        slow = span_kinds_for_tokens(starts, ends, intervals, default)
    finally:
        tokens_mod._kinds_of_disjoint_intervals = original
    np.testing.assert_array_equal(fast, slow)


def test_overlapping_intervals_take_the_per_kind_path() -> None:
    starts, ends = np.array([0, 5]), np.array([5, 10])
    intervals = {SpanKind.PREFIX_MATCHED: np.array([[0, 8]]), SpanKind.PREFIX_FP: np.array([[6, 10]])}
    assert (
        tokens_mod._kinds_of_disjoint_intervals(
            *tokens_mod._validated_char_spans(starts, ends),
            list(intervals.items()),
            np.concatenate(list(intervals.values())),
            np.zeros(2, np.int64),
        )
        is None
    )
    assert span_kinds_for_tokens(starts, ends, intervals, SpanKind.EOS).tolist() == [
        SpanKind.PREFIX_MATCHED,
        SpanKind.PREFIX_FP,
    ]
