"""Token typing vocabulary and the vectorized span → row builders (spec 02 §2.1–2.2).

The enums are stored in tensors as their ``int`` value (``TokenType``, ``SpanKind``, ``Subset``) or
compared by value (``ContextName``, ``Channel``, both ``str`` enums).

Character spans are half-open ``[start, end)`` offsets into the assistant text, as produced by
``coordexp.core.coordjson.aligned.token_char_spans``. A token *touches* an interval when they share
at least one character. A zero-width token (``start == end``: a special token such as
``<|im_end|>``, or a byte fragment that completes no character) is treated as occupying the single
character ``start``; intervals are taken literally, so an empty interval touches nothing.

:func:`span_kinds_for_tokens` and :func:`token_types_for_tokens` validate their input;
:func:`span_kinds_for_sorted_intervals` and :func:`token_types_for_sorted_descs` give the same labels
for trusted input whose intervals are already sorted (a builder's own layout), without the checks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import numpy as np

from coordexp.core.errors import PipelineError

__all__ = [
    "Channel",
    "ContextName",
    "FUSED_SPAN_PRECEDENCE",
    "SPAN_KIND_RANK",
    "SpanKind",
    "Subset",
    "TokenType",
    "span_kinds_for_sorted_intervals",
    "span_kinds_for_tokens",
    "token_types_for_sorted_descs",
    "token_types_for_tokens",
]


class TokenType(enum.IntEnum):
    """Exclusive type of an assistant target token (D16); first match wins: coord, eos, desc, struct."""

    STRUCT = 0
    DESC = 1
    COORD = 2
    EOS = 3


class SpanKind(enum.IntEnum):
    """Which part of the assistant text a token belongs to (spec 02 §2.2)."""

    PROMPT = 0
    BODY = 1
    CLOSURE = 2
    EOS = 3
    PREFIX_OPEN = 4
    PREFIX_MATCHED = 5
    PREFIX_FP = 6
    FN = 7


class ContextName(str, enum.Enum):
    """The source of a context's logits (spec 02 §2.2)."""

    GT = "gt"
    SELF_CONTEXT = "self_context"
    ROLLOUT = "rollout"

    def __str__(self) -> str:
        return self.value


class Channel(str, enum.Enum):
    """A = teacher-forced GT steps, B = rollout-conditioned steps (spec 02 §2.2)."""

    A = "A"
    B = "B"

    def __str__(self) -> str:
        return self.value


class Subset(enum.IntEnum):
    """Which matching subset a bbox group belongs to (``NONE`` for gt / self_context groups)."""

    NONE = 0
    MATCHED = 1
    FP = 2
    FN = 3


#: Fused-token precedence of spec 02 §2.2 / D26, highest first.
FUSED_SPAN_PRECEDENCE: tuple[SpanKind, ...] = (
    SpanKind.PREFIX_FP,
    SpanKind.CLOSURE,
    SpanKind.FN,
    SpanKind.PREFIX_MATCHED,
    SpanKind.PREFIX_OPEN,
)

# Total order used by ``span_kinds_for_tokens`` (higher wins). It extends D26 to the gt kinds:
# ``eos`` sits just above ``closure`` (a special token never fuses with text, so this only matters
# for malformed input) and ``body`` just above ``prefix_open`` (gt and rollout kinds never share a
# sample). ``prefix_fp`` stays on top so FP-neutrality always wins.
_RANK_ORDER_LOW_TO_HIGH: tuple[SpanKind, ...] = (
    SpanKind.PROMPT,
    SpanKind.PREFIX_OPEN,
    SpanKind.BODY,
    SpanKind.PREFIX_MATCHED,
    SpanKind.FN,
    SpanKind.CLOSURE,
    SpanKind.EOS,
    SpanKind.PREFIX_FP,
)
#: ``SPAN_KIND_RANK[kind]`` — precedence rank of every span kind (higher wins when a token is fused).
SPAN_KIND_RANK: Mapping[SpanKind, int] = {kind: rank for rank, kind in enumerate(_RANK_ORDER_LOW_TO_HIGH)}
# _RANK_OF_KIND[kind value] = SPAN_KIND_RANK[kind], as an int64 lookup table.
_RANK_OF_KIND = np.zeros(max(SpanKind) + 1, dtype=np.int64)
_RANK_OF_KIND[[int(kind) for kind in SPAN_KIND_RANK]] = list(SPAN_KIND_RANK.values())
_RANK_OF_KIND.flags.writeable = False


# The dtype kinds np.issubdtype(dtype, np.integer) accepts (timedelta64 counts), tested cheaply.
_INTEGER_KINDS = "ium"


def _as_index_vector(values: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise PipelineError(f"{what}: expected a 1-D integer array, got shape {array.shape}")
    if array.size and array.dtype.kind not in _INTEGER_KINDS:
        raise PipelineError(f"{what}: expected an integer array, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _validated_char_spans(char_starts: np.ndarray, char_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = _as_index_vector(char_starts, "char_starts")
    ends = _as_index_vector(char_ends, "char_ends")
    if starts.shape != ends.shape:
        raise PipelineError(
            f"char_starts and char_ends must have the same length, got {starts.shape[0]} and {ends.shape[0]}"
        )
    if starts.size:
        if starts.min() < 0:
            raise PipelineError(f"char_starts must be >= 0, found {int(starts.min())}")
        backwards = ends < starts
        if backwards.any():
            i = int(np.argmax(backwards))
            raise PipelineError(
                f"token {i} has char span [{int(starts[i])}, {int(ends[i])}): end must be >= start"
            )
    # A zero-width token occupies its start character.
    return starts, np.maximum(ends, starts + 1)


def _interval_array(intervals: np.ndarray, what: str) -> np.ndarray:
    """``intervals`` as int64 ``[K, 2]`` (shape and dtype checked; values by :func:`_check_interval_values`)."""
    array = np.asarray(intervals)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise PipelineError(f"{what}: expected an integer array of shape [K, 2], got shape {array.shape}")
    if array.dtype.kind not in _INTEGER_KINDS:
        raise PipelineError(f"{what}: expected an integer array, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _check_interval_values(array: np.ndarray, what: str) -> None:
    if not array.shape[0]:
        return
    if array.min() < 0:
        raise PipelineError(f"{what}: interval bounds must be >= 0, found {int(array.min())}")
    backwards = array[:, 1] < array[:, 0]
    if backwards.any():
        k = int(np.argmax(backwards))
        raise PipelineError(
            f"{what}: interval {k} = [{int(array[k, 0])}, {int(array[k, 1])}) has end < start"
        )


def _validated_intervals(intervals: np.ndarray, what: str) -> np.ndarray:
    array = _interval_array(intervals, what)
    _check_interval_values(array, what)
    return array


def _touches(starts: np.ndarray, ends: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Bool [T]: token ``[starts, ends)`` shares a character with some interval ``[a, b)``.

    They share one iff ``a < end`` and ``start < b`` (empty intervals share nothing). With the
    intervals sorted by ``a``, those with ``a < end`` are a prefix, found by ``searchsorted``; the
    token touches one of them iff the largest ``b`` of that prefix exceeds ``start``. O((T + K) log K).
    """
    live = intervals[intervals[:, 1] > intervals[:, 0]]
    if live.shape[0] == 0 or starts.size == 0:
        return np.zeros(starts.shape, dtype=bool)
    order = np.argsort(live[:, 0], kind="stable")
    lows = live[order, 0]
    reach = np.maximum.accumulate(live[order, 1])
    count = lows.searchsorted(ends, side="left")
    return (count > 0) & (reach[np.maximum(count - 1, 0)] > starts)


def _span_kind(value: object, what: str) -> SpanKind:
    try:
        return SpanKind(value)
    except ValueError as err:
        names = ", ".join(kind.name for kind in SpanKind)
        raise PipelineError(f"{what}: expected a SpanKind ({names}), got {value!r}") from err


def span_kinds_for_tokens(
    char_starts: np.ndarray,
    char_ends: np.ndarray,
    intervals: Mapping[SpanKind, np.ndarray],
    default: SpanKind,
) -> np.ndarray:
    """Span kind of every token from per-kind character intervals (spec 02 §2.2, D26, D27).

    Args:
        char_starts, char_ends: int ``[T]`` half-open character spans of the tokens.
        intervals: for each span kind, int ``[K, 2]`` half-open character intervals (may overlap,
            any order, K may be 0).
        default: the kind of a token that touches no interval.

    Returns:
        int64 ``[T]`` ``SpanKind`` values. A token touching intervals of several kinds gets the one
        with the highest ``SPAN_KIND_RANK`` (``prefix_fp > closure > fn > prefix_matched >
        prefix_open``; see ``SPAN_KIND_RANK`` for the gt kinds).
    """
    starts, ends = _validated_char_spans(char_starts, char_ends)
    default_kind = _span_kind(default, "default")
    checked: list[tuple[SpanKind, np.ndarray]] = []
    for key, value in intervals.items():
        kind = _span_kind(key, "intervals key")
        array = _interval_array(value, f"intervals[{kind.name}]")
        if array.shape[0]:
            checked.append((kind, array))
    stacked = np.concatenate([array for _, array in checked]) if checked else np.zeros((0, 2), np.int64)
    if stacked.shape[0] and (stacked.min() < 0 or (stacked[:, 1] < stacked[:, 0]).any()):
        for kind, array in checked:  # find the offending kind for the message
            _check_interval_values(array, f"intervals[{kind.name}]")
    result = np.full(starts.shape, int(default_kind), dtype=np.int64)
    if not checked or not starts.size:
        return result
    disjoint = _kinds_of_disjoint_intervals(starts, ends, checked, stacked, result)
    if disjoint is not None:
        return disjoint
    for kind, array in sorted(checked, key=lambda item: SPAN_KIND_RANK[item[0]]):
        result[_touches(starts, ends, array)] = int(kind)
    return result


def _kinds_of_disjoint_intervals(
    starts: np.ndarray,
    ends: np.ndarray,
    checked: list[tuple[SpanKind, np.ndarray]],
    stacked: np.ndarray,
    default: np.ndarray,
) -> np.ndarray | None:
    """:func:`span_kinds_for_tokens` in one pass when no two non-empty intervals share a character
    (the usual layout: the kinds tile the text); None otherwise. ``stacked``: the intervals of
    ``checked`` concatenated in order; ``ends`` already widened for zero-width tokens.
    """
    counts = [array.shape[0] for _, array in checked]
    kinds = np.repeat(np.array([int(kind) for kind, _ in checked], dtype=np.int64), counts)
    live = stacked[:, 1] > stacked[:, 0]
    order = np.flatnonzero(live)[np.argsort(stacked[live, 0], kind="stable")]
    lows, highs = stacked[order, 0], stacked[order, 1]
    if not lows.size:
        return default
    if (lows[1:] < highs[:-1]).any():
        return None
    return _kinds_of_sorted_runs(starts, ends, lows, highs, kinds[order], default)


def _kinds_of_sorted_runs(
    starts: np.ndarray,
    ends: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    kinds: np.ndarray,
    default: np.ndarray | int,
) -> np.ndarray:
    """Span kind per token for ``K >= 1`` sorted, disjoint, non-empty intervals ``[lows, highs)``
    of kinds ``kinds`` (int64 ``[K]``); ``ends`` already widened for zero-width tokens.

    Sorted disjoint intervals also have sorted ends, so the intervals a token touches are the
    contiguous run ``[first with end > start, first with start >= end)``; the token takes the
    highest-ranked kind of its run (``default`` when the run is empty). Runs longer than one (fused
    tokens) are short, so the maximum is taken over a few shifted copies of the rank array.
    """
    first = highs.searchsorted(starts, side="right")
    width = lows.searchsorted(ends, side="left") - first
    last = kinds.size - 1
    result = np.where(width > 0, kinds[np.minimum(first, last)], default)
    fused = (width > 1).nonzero()[0]
    if fused.size:
        ranks = _RANK_OF_KIND[kinds]
        run_first, run_width = first[fused], width[fused]
        best = run_first.copy()
        for shift in range(1, int(run_width.max())):
            later = np.minimum(run_first + shift, last)
            best = np.where((run_width > shift) & (ranks[later] > ranks[best]), later, best)
        result[fused] = kinds[best]
    return result


def span_kinds_for_sorted_intervals(
    char_starts: np.ndarray,
    char_ends: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    kinds: np.ndarray,
    default: SpanKind,
) -> np.ndarray:
    """:func:`span_kinds_for_tokens` for trusted input whose intervals are already sorted, e.g. a
    sample's own layout as its builder lays it out (no validation: a hot path's caller checks).

    Args:
        char_starts, char_ends: int64 ``[T]`` half-open character spans of the tokens, ``end >= start``.
        lows, highs: int64 ``[K]`` interval bounds with ``lows[k] < highs[k] <= lows[k + 1]``
            (non-empty, sorted, disjoint; K may be 0).
        kinds: int64 ``[K]`` ``SpanKind`` value of each interval.
        default: the kind of a token that touches no interval.

    Returns:
        int64 ``[T]``, equal to ``span_kinds_for_tokens(char_starts, char_ends, {kind: its
        intervals}, default)`` for such input.
    """
    n_intervals = len(lows)
    if not n_intervals or not len(char_starts):
        return np.full(len(char_starts), int(default), dtype=np.int64)
    first, last = _first_and_last_slots(char_starts, char_ends, lows, highs)
    kind_of_slot = np.full(2 * n_intervals + 1, int(default), dtype=np.int64)
    kind_of_slot[1::2] = kinds
    result = kind_of_slot[first]
    spanning = (first != last).nonzero()[0]
    if spanning.size:
        # A token over several slots touches the intervals first // 2 .. (last - 1) // 2 (at least
        # one, intervals being non-empty) and takes the highest-ranked of their kinds.
        run_first = first[spanning] >> 1
        run_width = ((last[spanning] - 1) >> 1) - run_first + 1
        ranks = _RANK_OF_KIND[kinds]
        best = run_first.copy()
        for shift in range(1, int(run_width.max())):
            later = np.minimum(run_first + shift, n_intervals - 1)
            best = np.where((run_width > shift) & (ranks[later] > ranks[best]), later, best)
        result[spanning] = kinds[best]
    return result


def _first_and_last_slots(
    char_starts: np.ndarray, char_ends: np.ndarray, lows: np.ndarray, highs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The slots of each token's first and last character for K >= 1 sorted, disjoint, non-empty
    intervals: slot ``2k + 1`` is interval k, slot ``2k`` the gap before it, slot ``2K`` the rest.

    One character → slot table (a ``repeat`` over the text) and two lookups replace binary searches
    per token. A zero-width token occupies its start character.
    """
    last_char = np.maximum(char_ends - 1, char_starts)
    n_chars = max(int(highs[-1]), int(last_char.max()) + 1)
    k = len(lows)
    lengths = np.empty(2 * k + 1, dtype=np.int64)
    lengths[1:-1:2] = highs - lows
    lengths[0:-1:2] = lows
    lengths[2:-1:2] -= highs[:-1]
    lengths[-1] = n_chars - int(highs[-1])
    slot_of_char = np.repeat(np.arange(2 * k + 1, dtype=np.int64), lengths)
    return slot_of_char[char_starts], slot_of_char[last_char]


def token_types_for_tokens(
    token_ids: np.ndarray,
    char_starts: np.ndarray,
    char_ends: np.ndarray,
    desc_intervals: np.ndarray,
    coord_mask: np.ndarray,
    eos_id: int,
) -> np.ndarray:
    """Exclusive token type of every token (spec 02 §2.1, D16); first match wins.

    Args:
        token_ids: int ``[T]`` token ids.
        char_starts, char_ends: int ``[T]`` half-open character spans of the tokens.
        desc_intervals: int ``[K, 2]`` character intervals of desc *values* (inside the quotes).
        coord_mask: bool ``[V]`` lookup table over the vocabulary, True at the 1000 coord ids
            (``coord_mask[token_ids]`` selects the coord tokens).
        eos_id: the id of ``<|im_end|>``.

    Returns:
        int64 ``[T]`` ``TokenType`` values: ``COORD`` if the id is a coord id, else ``EOS`` if it is
        ``eos_id``, else ``DESC`` if the token touches a desc interval, else ``STRUCT``.
    """
    ids = _as_index_vector(token_ids, "token_ids")
    starts, ends = _validated_char_spans(char_starts, char_ends)
    if ids.shape != starts.shape:
        raise PipelineError(f"token_ids has {ids.shape[0]} entries but the char spans have {starts.shape[0]}")
    lookup = np.asarray(coord_mask)
    if lookup.ndim != 1 or lookup.dtype != np.bool_:
        raise PipelineError(
            "coord_mask: expected a bool lookup table [V] over the vocabulary, "
            f"got {lookup.dtype} {lookup.shape}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= lookup.shape[0]):
        raise PipelineError(
            f"token_ids must lie in [0, {lookup.shape[0]}) (the coord_mask vocabulary), "
            f"found [{int(ids.min())}, {int(ids.max())}]"
        )
    if not 0 <= int(eos_id) < lookup.shape[0] or lookup[int(eos_id)]:
        raise PipelineError(f"eos_id {eos_id} must be a non-coord id in [0, {lookup.shape[0]})")
    desc = _validated_intervals(desc_intervals, "desc_intervals")
    result = np.full(ids.shape, int(TokenType.STRUCT), dtype=np.int64)
    result[_touches(starts, ends, desc)] = int(TokenType.DESC)
    result[ids == int(eos_id)] = int(TokenType.EOS)
    result[lookup[ids]] = int(TokenType.COORD)
    return result


def token_types_for_sorted_descs(
    token_ids: np.ndarray,
    char_starts: np.ndarray,
    char_ends: np.ndarray,
    desc_lows: np.ndarray,
    desc_highs: np.ndarray,
    coord_mask: np.ndarray,
    eos_id: int,
) -> np.ndarray:
    """:func:`token_types_for_tokens` for trusted input whose desc intervals are already sorted
    (no validation: a hot path's caller checks).

    Args:
        token_ids: int64 ``[T]`` ids, each a valid index of ``coord_mask``.
        char_starts, char_ends: int64 ``[T]`` half-open character spans, ``end >= start``.
        desc_lows, desc_highs: int64 ``[K]`` desc intervals with ``lows[k] <= highs[k]`` and
            ``highs[k] <= lows[k + 1]`` (sorted and disjoint; empty intervals allowed, they touch
            nothing).
        coord_mask: bool ``[V]`` lookup table, True at the coord ids; ``eos_id`` a non-coord id.

    Returns:
        int64 ``[T]``, equal to ``token_types_for_tokens`` with the intervals ``[lows, highs)``.
    """
    live = desc_highs > desc_lows
    if not live.all():
        desc_lows, desc_highs = desc_lows[live], desc_highs[live]
    if desc_lows.size and len(token_ids):
        # A token touches a desc interval iff it starts inside one (odd slot) or runs over a slot
        # boundary (the slot after a gap is a non-empty interval).
        first, last = _first_and_last_slots(char_starts, char_ends, desc_lows, desc_highs)
        touched = ((first & 1) == 1) | (first != last)
        result = np.where(touched, int(TokenType.DESC), int(TokenType.STRUCT))
    else:
        result = np.full(len(token_ids), int(TokenType.STRUCT), dtype=np.int64)
    result[token_ids == eos_id] = int(TokenType.EOS)
    result[coord_mask[token_ids]] = int(TokenType.COORD)
    return result
