"""Token typing and span kinds (spec 02 §2.1–2.2; invariants C1, C9)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import PipelineError
from coordexp.core.tokens import (
    FUSED_SPAN_PRECEDENCE,
    SPAN_KIND_RANK,
    Channel,
    ContextName,
    SpanKind,
    Subset,
    TokenType,
    span_kinds_for_tokens,
    token_types_for_tokens,
)

VOCAB = 1200
COORD_START = 100
EOS_ID = 1199
COORD_MASK = np.zeros(VOCAB, dtype=bool)
COORD_MASK[COORD_START : COORD_START + 1000] = True
ROLLOUT_KINDS = [
    SpanKind.PREFIX_OPEN,
    SpanKind.PREFIX_MATCHED,
    SpanKind.PREFIX_FP,
    SpanKind.FN,
    SpanKind.CLOSURE,
]


def test_enum_values_follow_the_architecture_contract():
    assert [(m.name, int(m)) for m in TokenType] == [("STRUCT", 0), ("DESC", 1), ("COORD", 2), ("EOS", 3)]
    assert [(m.name, int(m)) for m in SpanKind] == [
        ("PROMPT", 0),
        ("BODY", 1),
        ("CLOSURE", 2),
        ("EOS", 3),
        ("PREFIX_OPEN", 4),
        ("PREFIX_MATCHED", 5),
        ("PREFIX_FP", 6),
        ("FN", 7),
    ]
    assert [(m.name, int(m)) for m in Subset] == [("NONE", 0), ("MATCHED", 1), ("FP", 2), ("FN", 3)]
    assert [m.value for m in ContextName] == ["gt", "self_context", "rollout"]
    assert [m.value for m in Channel] == ["A", "B"]
    assert ContextName("rollout") is ContextName.ROLLOUT and ContextName.GT == "gt"


def test_precedence_constants_agree_with_d26():
    assert FUSED_SPAN_PRECEDENCE == (
        SpanKind.PREFIX_FP,
        SpanKind.CLOSURE,
        SpanKind.FN,
        SpanKind.PREFIX_MATCHED,
        SpanKind.PREFIX_OPEN,
    )
    ranks = [SPAN_KIND_RANK[kind] for kind in FUSED_SPAN_PRECEDENCE]
    assert ranks == sorted(ranks, reverse=True)
    assert set(SPAN_KIND_RANK) == set(SpanKind)
    assert max(SPAN_KIND_RANK, key=SPAN_KIND_RANK.get) is SpanKind.PREFIX_FP


@st.composite
def tokenized_text(draw):
    """Token spans over a text (zero-width and overlapping ones allowed), plus a few intervals per kind."""
    widths = draw(st.lists(st.integers(0, 4), min_size=0, max_size=25))
    ends = np.cumsum(widths, dtype=np.int64)
    # A character split across tokens is covered by each of them: spans may reach back one character.
    back = np.array(
        draw(st.lists(st.integers(0, 1), min_size=len(widths), max_size=len(widths))), dtype=np.int64
    )
    starts = np.maximum(ends - np.array(widths, dtype=np.int64) - back, 0)
    n_chars = int(ends[-1]) if widths else 0
    kinds = draw(st.lists(st.sampled_from(list(SpanKind)), unique=True, max_size=5))
    intervals = {}
    for kind in kinds:
        pairs = draw(st.lists(st.tuples(st.integers(0, n_chars + 1), st.integers(0, 3)), max_size=3))
        intervals[kind] = np.array([(a, a + w) for a, w in pairs], dtype=np.int64).reshape(-1, 2)
    return starts, ends, intervals


def _touches_reference(start: int, end: int, lo: int, hi: int) -> bool:
    end = max(end, start + 1)  # a zero-width token occupies its start character
    return any(lo <= c < hi for c in range(start, end))


@given(tokenized_text(), st.sampled_from(list(SpanKind)))
@settings(max_examples=150, deadline=None)
def test_span_kinds_match_a_per_token_reference(data, default):
    starts, ends, intervals = data
    result = span_kinds_for_tokens(starts, ends, intervals, default)
    assert result.dtype == np.int64 and result.shape == starts.shape
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        touched = [
            k for k, arr in intervals.items() if any(_touches_reference(s, e, a, b) for a, b in arr.tolist())
        ]
        expected = max(touched, key=SPAN_KIND_RANK.get) if touched else default
        assert result[i] == int(expected), (i, s, e, touched)


@given(st.lists(st.sampled_from(ROLLOUT_KINDS), min_size=1, max_size=5, unique=True), st.data())
@settings(max_examples=100, deadline=None)
def test_c9_fused_token_takes_the_highest_rollout_kind(kinds, data):
    # Kinds laid out one character each in random order; token 0 is fused over all of them.
    placed = data.draw(st.permutations(kinds))
    n = len(placed)
    starts = np.array([0] + list(range(n)), dtype=np.int64)
    ends = np.array([n] + list(range(1, n + 1)), dtype=np.int64)
    intervals = {kind: np.array([[i, i + 1]]) for i, kind in enumerate(placed)}
    result = span_kinds_for_tokens(starts, ends, intervals, SpanKind.PREFIX_OPEN)
    winner = next(kind for kind in FUSED_SPAN_PRECEDENCE if kind in kinds)
    assert result[0] == int(winner)
    assert result[1:].tolist() == [int(kind) for kind in placed]


def test_c9_named_fusions():
    # `}` of a matched record fused with the `, ` before an FP record: FP wins (FP-neutrality).
    intervals = {SpanKind.PREFIX_MATCHED: np.array([[0, 10]]), SpanKind.PREFIX_FP: np.array([[10, 20]])}
    assert (
        span_kinds_for_tokens(np.array([9]), np.array([12]), intervals, SpanKind.PREFIX_OPEN)[0]
        == SpanKind.PREFIX_FP
    )
    # The last FN `}` fused with `]}`: closure wins; `}` of a matched record fused with the FN lead: fn wins.
    intervals = {
        SpanKind.PREFIX_MATCHED: np.array([[0, 5]]),
        SpanKind.FN: np.array([[5, 9]]),
        SpanKind.CLOSURE: np.array([[9, 11]]),
    }
    kinds = span_kinds_for_tokens(np.array([4, 8]), np.array([6, 11]), intervals, SpanKind.PREFIX_OPEN)
    assert kinds.tolist() == [SpanKind.FN, SpanKind.CLOSURE]
    # gt: the last record's `}` fused with `]}` is closure; untouched tokens take the default.
    kinds = span_kinds_for_tokens(
        np.array([0, 3, 5]), np.array([3, 6, 6]), {SpanKind.CLOSURE: np.array([[5, 7]])}, SpanKind.BODY
    )
    assert kinds.tolist() == [SpanKind.BODY, SpanKind.CLOSURE, SpanKind.CLOSURE]


def test_zero_width_token_occupies_its_start_character():
    starts, ends = np.array([0, 4, 4]), np.array([4, 4, 6])
    kinds = span_kinds_for_tokens(starts, ends, {SpanKind.EOS: np.array([[4, 5]])}, SpanKind.BODY)
    assert kinds.tolist() == [SpanKind.BODY, SpanKind.EOS, SpanKind.EOS]
    # An empty interval touches nothing.
    kinds = span_kinds_for_tokens(starts, ends, {SpanKind.EOS: np.array([[4, 4]])}, SpanKind.BODY)
    assert kinds.tolist() == [SpanKind.BODY] * 3


@st.composite
def typed_tokens(draw):
    n = draw(st.integers(0, 30))
    ids = np.array(
        draw(
            st.lists(
                st.one_of(
                    st.integers(0, VOCAB - 1), st.just(EOS_ID), st.integers(COORD_START, COORD_START + 999)
                ),
                min_size=n,
                max_size=n,
            )
        ),
        dtype=np.int64,
    )
    widths = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    ends = np.cumsum(widths)
    starts = ends - widths
    top = int(ends[-1]) if n else 0
    desc = draw(st.lists(st.tuples(st.integers(0, top + 1), st.integers(0, 4)), max_size=4))
    return ids, starts, ends, np.array([(a, a + w) for a, w in desc], dtype=np.int64).reshape(-1, 2)


@given(typed_tokens())
@settings(max_examples=150, deadline=None)
def test_c1_every_token_has_exactly_one_type_first_match_wins(data):
    ids, starts, ends, desc = data
    types = token_types_for_tokens(ids, starts, ends, desc, COORD_MASK, EOS_ID)
    assert types.dtype == np.int64 and types.shape == ids.shape
    assert set(types.tolist()) <= {int(t) for t in TokenType}
    # eos occurs exactly at <|im_end|>; coord exactly at coord ids.
    assert np.array_equal(types == TokenType.EOS, ids == EOS_ID)
    assert np.array_equal(types == TokenType.COORD, COORD_MASK[ids])
    for i in range(ids.shape[0]):
        if types[i] in (TokenType.EOS, TokenType.COORD):
            continue
        in_desc = any(_touches_reference(int(starts[i]), int(ends[i]), a, b) for a, b in desc.tolist())
        assert types[i] == (TokenType.DESC if in_desc else TokenType.STRUCT)


def test_coord_and_eos_win_over_desc():
    ids = np.array([COORD_START + 5, EOS_ID, 7, 8])
    starts, ends = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    desc = np.array([[0, 3]])
    types = token_types_for_tokens(ids, starts, ends, desc, COORD_MASK, EOS_ID)
    assert types.tolist() == [TokenType.COORD, TokenType.EOS, TokenType.DESC, TokenType.STRUCT]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"char_ends": np.array([1])}, "same length"),
        ({"char_ends": np.array([1, 0])}, "end must be >= start"),
        ({"char_starts": np.array([-1, 1])}, ">= 0"),
        ({"token_ids": np.array([3, VOCAB])}, "token_ids must lie in"),
        ({"coord_mask": COORD_MASK.astype(np.int64)}, "bool lookup table"),
        ({"eos_id": COORD_START}, "non-coord id"),
        ({"desc_intervals": np.array([[3, 1]])}, "end < start"),
        ({"desc_intervals": np.array([1, 2, 3])}, "shape [K, 2]"),
        ({"char_starts": np.array([0.0, 1.0])}, "integer array"),
    ],
)
def test_token_types_reject_bad_input(kwargs, message):
    args = {
        "token_ids": np.array([3, 4]),
        "char_starts": np.array([0, 1]),
        "char_ends": np.array([1, 2]),
        "desc_intervals": np.zeros((0, 2), dtype=np.int64),
        "coord_mask": COORD_MASK,
        "eos_id": EOS_ID,
    }
    args.update(kwargs)
    with pytest.raises(PipelineError, match=message.replace("[", r"\[").replace("]", r"\]")):
        token_types_for_tokens(**args)


def test_span_kinds_reject_bad_intervals_and_kinds():
    with pytest.raises(PipelineError, match="intervals\\[FN\\]"):
        span_kinds_for_tokens(np.array([0]), np.array([1]), {SpanKind.FN: np.array([[2, 1]])}, SpanKind.BODY)
    with pytest.raises(PipelineError, match="expected a SpanKind"):
        span_kinds_for_tokens(np.array([0]), np.array([1]), {42: np.array([[0, 1]])}, SpanKind.BODY)
