"""FN append, ``Y_train`` and the per-position labels of a rollout target (spec 03 §3.6–3.7, 02 §2.2).

* ``lead = ", "`` iff the prefix's last non-whitespace character is ``}`` and FN ≠ ∅, else ``""``;
* ``fragment = lead + ", ".join(canonical(o) for o in FN in GT order) + "]}"``;
* ``Y_train = prefix_ids + encode(fragment) + [eos_id]`` (the fragment is encoded alone, so no token
  crosses the prefix/fragment boundary).

Labels come from one byte-based span map of all of ``Y_train`` (D44; the kept rollout tokens' spans
are reused from the rollout's own decode) and the core's vectorized builders: token types
(coord > eos > desc > struct, D16) and span kinds from character intervals —
``prefix_open`` ``[0, open_end)``, each prefix element with its preceding separator as
``prefix_matched`` or ``prefix_fp``, the FN records with the lead as ``fn``, the final ``]}`` as
``closure``, the eos as ``eos`` — where a fused token takes the highest of
``prefix_fp > closure > fn > prefix_matched > prefix_open`` (D26, D27).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs
import numpy as np

from coordexp.core.coordjson.aligned import EOS_LITERAL, TokenText, token_char_spans
from coordexp.core.coordjson.serialize import (
    CLOSURE,
    RECORD_SEPARATOR,
    CoordObject,
    FieldOrder,
    SerializedCoordJSON,
    serialize_with_spans,
)
from coordexp.core.errors import PipelineError
from coordexp.core.tokens import (
    SpanKind,
    TokenType,
    span_kinds_for_sorted_intervals,
    span_kinds_for_tokens,
    token_types_for_sorted_descs,
    token_types_for_tokens,
)
from coordexp.rollout.codec import TextCodec, bytes_and_lengths, coord_mask_for, token_lengths
from coordexp.rollout.record import (
    BBoxGroupTable,
    CoordSlots,
    DecodeInfo,
    MatchSummary,
    ParseCounts,
    PolyGroup,
    RolloutFlags,
    RolloutTarget,
)
from coordexp.rollout.trim import JSON_WHITESPACE, TrimResult, is_append_ready

BBOX_KEY = "bbox_2d"
POLY_KEY = "poly"

Span = tuple[int, int]


@attrs.frozen
class PrefixElement:
    """One complete element of the kept prefix and how it is trained.

    ``extent``: its characters in the prefix text, preceding separator included (from the previous
    element's end, or ``open_end`` for the first). ``desc_span``: the desc characters (None when the
    element has no readable desc). ``matched``: supervised (else a masked FP span: unmatched,
    dropped, or excluded). Matched elements also carry ``pred_index``/``gt_index``, ``geom_key``,
    their coord token positions in the prefix and one target bin per position.
    """

    extent: Span
    desc_span: Span | None = None
    matched: bool = False
    pred_index: int | None = None
    gt_index: int | None = None
    geom_key: str | None = None
    coord_positions: tuple[int, ...] = ()
    target: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.extent[0] > self.extent[1]:
            raise PipelineError(f"PrefixElement: extent {self.extent} has end < start")
        if self.matched:
            if self.gt_index is None or self.pred_index is None or self.geom_key not in (BBOX_KEY, POLY_KEY):
                raise PipelineError(
                    "PrefixElement: a matched element needs pred_index, gt_index and a geom_key"
                )
            if len(self.coord_positions) != len(self.target) or not self.target:
                raise PipelineError(
                    f"PrefixElement: {len(self.coord_positions)} coord positions for "
                    f"{len(self.target)} targets"
                )
            if self.geom_key == BBOX_KEY and len(self.target) != 4:
                raise PipelineError(
                    f"PrefixElement: a bbox prediction needs 4 targets, got {len(self.target)}"
                )


@attrs.frozen(eq=False)
class PrefixTable:
    """A kept prefix's complete elements as parallel arrays: what :func:`build_rollout_target`
    works on (:meth:`of` converts :class:`PrefixElement` values; the preparer builds it directly).

    ``extents``: int64 ``[E, 2]``, each element's extent (as :attr:`PrefixElement.extent`), in
    order; ``matched``: bool ``[E]``; ``desc_spans``: int64 ``[D, 2]``, the desc spans of the
    elements that have one, in order. The ``M`` matched elements, in order: ``element`` int64
    ``[M]`` (their index among the E), ``pred_index``/``gt_index`` int64 ``[M]``, ``is_box`` bool
    ``[M]``, ``arity`` int64 ``[M]`` (coord slots each, >= 1) and, flat over them in order,
    ``coord_pos``/``target`` int64 ``[arity.sum()]``. Arrays are read-only.
    """

    extents: np.ndarray
    matched: np.ndarray
    desc_spans: np.ndarray
    element: np.ndarray
    pred_index: np.ndarray
    gt_index: np.ndarray
    is_box: np.ndarray
    arity: np.ndarray
    coord_pos: np.ndarray
    target: np.ndarray

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(PrefixTable):
            getattr(self, field.name).flags.writeable = False

    def __len__(self) -> int:
        return int(self.extents.shape[0])

    @classmethod
    def of(cls, elements: Sequence[PrefixElement]) -> PrefixTable:
        """The table of ``elements`` (each already checked by :class:`PrefixElement`)."""
        matched = [(k, e) for k, e in enumerate(elements) if e.matched]
        m = len(matched)
        arity = np.fromiter((len(e.target) for _, e in matched), np.int64, m)
        total = int(arity.sum())
        return cls(
            extents=_intervals([e.extent for e in elements]),
            matched=np.fromiter((e.matched for e in elements), bool, len(elements)),
            desc_spans=_intervals([e.desc_span for e in elements if e.desc_span is not None]),
            element=np.fromiter((k for k, _ in matched), np.int64, m),
            pred_index=np.fromiter((e.pred_index for _, e in matched), np.int64, m),
            gt_index=np.fromiter((e.gt_index for _, e in matched), np.int64, m),
            is_box=np.fromiter((e.geom_key == BBOX_KEY for _, e in matched), bool, m),
            arity=arity,
            coord_pos=np.fromiter(
                itertools.chain.from_iterable(e.coord_positions for _, e in matched), np.int64, total
            ),
            target=np.fromiter(itertools.chain.from_iterable(e.target for _, e in matched), np.int64, total),
        )


def fn_lead(prefix_text: str, has_fn: bool) -> str:
    """``", "`` iff the prefix ends (ignoring whitespace) in ``}`` and there are FN objects, else ``""``.

    A prefix that is not append-ready raises :class:`PipelineError` (impossible after trimming).
    """
    if not is_append_ready(prefix_text):
        raise PipelineError(
            f"prefix is not append-ready (ends with {prefix_text[-12:]!r}); expected '[' or '}}'"
        )
    return RECORD_SEPARATOR if has_fn and prefix_text.rstrip(JSON_WHITESPACE).endswith("}") else ""


def fn_fragment(
    prefix_text: str, fn_objects: Sequence[CoordObject], field_order: FieldOrder
) -> SerializedCoordJSON:
    """The FN fragment ``lead + records + "]}"`` with the serializer's spans (fragment-local)."""
    return serialize_with_spans(
        fn_objects, field_order, head=fn_lead(prefix_text, bool(fn_objects)), tail=CLOSURE
    )


def _intervals(spans: Sequence[Span]) -> np.ndarray:
    """int64 ``[K, 2]`` of (start, end) pairs."""
    return np.fromiter(itertools.chain.from_iterable(spans), np.int64, 2 * len(spans)).reshape(-1, 2)


def _fn_coord_positions(
    tail_bins: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    prefix_len: int,
    fragment: SerializedCoordJSON,
    fn_objects: Sequence[CoordObject],
    offset_chars: int,
) -> tuple[np.ndarray, list[int]]:
    """Positions of the FN coord slots (object by object, value order) and the objects' arities.

    ``tail_bins``: coord bin per ``Y_train`` position from ``prefix_len`` on (−1 elsewhere). A slot
    is a coord token of the fragment lying inside its object's geometry array; every object must
    get exactly its values.
    """
    arity = [len(o.values) for o in fn_objects]
    values = [v for o in fn_objects for v in o.values]
    local = (tail_bins >= 0).nonzero()[0]
    coord_pos = local + prefix_len
    spans = _intervals(fragment.geom_spans) + offset_chars
    owner = np.ascontiguousarray(spans[:, 0]).searchsorted(starts[coord_pos], side="right") - 1
    clamped = np.maximum(owner, 0)
    inside = (owner >= 0) & (ends[coord_pos] <= spans[clamped, 1])
    pos, owner = coord_pos[inside], owner[inside]
    found = tail_bins[local[inside]].tolist()
    if pos.size != len(values) or np.bincount(owner, minlength=len(arity)).tolist() != arity or found != values:
        raise PipelineError(
            f"the encoded FN fragment does not hold its objects' coord tokens inside their geometry arrays "
            f"(expected bins {values[:8]}…, found {found[:8]}…); the tokenizer must keep every "
            "<|coord_k|> a single added token"
        )
    return pos, arity


def build_rollout_target(
    *,
    codec: TextCodec,
    trim: TrimResult,
    elements: Sequence[PrefixElement] | PrefixTable,
    gt_objects: Sequence[CoordObject],
    fn_indices: Sequence[int],
    field_order: FieldOrder,
    prompt_len: int,
    match: MatchSummary,
    flags: RolloutFlags,
    counts: ParseCounts,
    decode: DecodeInfo,
    prefix_bytes: Sequence[bytes] | None = None,
    prefix_array: np.ndarray | None = None,
    prefix_head: TokenText | None = None,
) -> RolloutTarget:
    """Append the FN fragment to ``trim``'s prefix and label every position (module doc).

    ``elements`` are the prefix's complete elements in order (none for an invalid rollout), as
    :class:`PrefixElement` values or their :class:`PrefixTable`;
    ``fn_indices`` the GT indices to append, in GT order. ``prefix_bytes``: the bytes of
    ``trim.prefix_ids`` when the caller already has them (else looked up); ``prefix_array``: the same
    ids as an int array (saves converting the tuple; it must equal ``trim.prefix_ids``).
    ``prefix_head``: the character spans of the first ``len(prefix_head)`` prefix tokens when the
    caller already decoded them (its ``text`` must be what their bytes decode to, a prefix of
    ``trim.prefix_text``); only the rest of ``Y_train`` is then decoded. Raises
    :class:`PipelineError` when the tokenizer does not reproduce the fragment text exactly or the GT
    holds an eos-type token.
    """
    table = elements if isinstance(elements, PrefixTable) else PrefixTable.of(elements)
    fn_list = [int(i) for i in fn_indices]
    if fn_list != sorted(set(fn_list)) or (fn_list and not 0 <= fn_list[0] <= fn_list[-1] < len(gt_objects)):
        raise PipelineError(f"fn_indices must be distinct GT indices in GT order, got {fn_list}")
    fn_objects = [gt_objects[i] for i in fn_list]
    fragment = fn_fragment(trim.prefix_text, fn_objects, field_order)
    fragment_ids = codec.encode(fragment.text)
    if not codec.stop_ids.isdisjoint(fragment_ids):
        stops = [i for i in fragment_ids if i in codec.stop_ids]
        raise PipelineError(
            f"the FN fragment encodes to eos-type ids {stops}: a GT desc contains an end-of-turn token"
        )
    prefix_len = len(trim.prefix_ids)
    tail_ids = [*fragment_ids, codec.eos_id]
    if prefix_array is not None and len(prefix_array) == prefix_len:
        y_train = np.concatenate(
            [np.asarray(prefix_array, dtype=np.int64), np.array(tail_ids, dtype=np.int64)]
        )
    else:
        y_train = np.asarray([*trim.prefix_ids, *tail_ids], dtype=np.int64)
    if prefix_bytes is None or len(prefix_bytes) != prefix_len:
        prefix_bytes = codec.token_bytes(trim.prefix_ids)
    n_prefix_chars = len(trim.prefix_text)
    starts, ends = _y_train_spans(codec, trim, fragment.text, y_train, prefix_bytes, tail_ids, prefix_head)

    desc_spans = np.concatenate([table.desc_spans, _intervals(fragment.desc_spans) + n_prefix_chars])
    coord_mask = coord_mask_for(codec.coord_vocab, _table_size(int(y_train.max()) + 1))
    desc_lows, desc_highs = desc_spans[:, 0], desc_spans[:, 1]
    if not desc_lows.size or (
        desc_lows[0] >= 0 and (desc_lows <= desc_highs).all() and (desc_highs[:-1] <= desc_lows[1:]).all()
    ):
        # Sorted and disjoint, as records lay them out: the one-pass labelling applies.
        token_type = token_types_for_sorted_descs(
            y_train, starts, ends, desc_lows, desc_highs, coord_mask, codec.eos_id
        )
    else:
        token_type = token_types_for_tokens(y_train, starts, ends, desc_spans, coord_mask, codec.eos_id)
    fn_end = n_prefix_chars + fragment.tail_start
    span_kind = _span_kinds(
        starts, ends, trim.open_end, table, n_prefix_chars, fn_end, len(fragment.text), bool(fn_objects)
    )
    # The eos token's span is its literal after the closure; only it may keep the default kind.
    is_eos = token_type == int(TokenType.EOS)
    if not np.array_equal(span_kind == int(SpanKind.EOS), is_eos):
        bad = int(np.flatnonzero((span_kind == int(SpanKind.EOS)) != is_eos)[0])
        raise PipelineError(f"Y_train position {bad} is not covered by any span (or the eos is misplaced)")

    n_elements = len(table)
    slots_prefix, groups_prefix, polys = _prefix_slots(table)
    fn_positions, arity = _fn_coord_positions(
        codec.coord_vocab.bins_of_array(y_train[prefix_len:]),
        starts,
        ends,
        prefix_len,
        fragment,
        fn_objects,
        n_prefix_chars,
    )
    slots_fn, groups_fn = _fn_slots(fn_objects, fn_list, fn_positions, arity, n_elements)
    return RolloutTarget.built(
        prompt_len=int(prompt_len),
        prefix_len=prefix_len,
        y_train=y_train,
        token_type=token_type,
        span_kind=span_kind,
        prefix_text=trim.prefix_text,
        fragment_text=fragment.text,
        n_prefix_objects=n_elements,
        coord_slots_prefix=slots_prefix,
        coord_slots_fn=slots_fn,
        bbox_groups_prefix=groups_prefix,
        bbox_groups_fn=groups_fn,
        poly_groups_prefix=polys,
        match=match,
        flags=flags,
        counts=counts,
        decode=decode,
    )


def _y_train_spans(
    codec: TextCodec,
    trim: TrimResult,
    fragment_text: str,
    y_train: np.ndarray,
    prefix_bytes: Sequence[bytes],
    tail_ids: Sequence[int],
    prefix_head: TokenText | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Character spans (int64 ``[train_len]`` starts, ends) of ``Y_train`` in
    ``prefix_text + fragment_text + EOS_LITERAL``, which its bytes must decode to exactly (else
    :class:`PipelineError`).

    With ``prefix_head`` (the first prefix tokens' spans, decoded by the caller) only the rest is
    decoded: a head that decodes without replacement characters ends on a character boundary and
    the rest begins on one (a retokenized piece or the fragment), so decoding the two apart gives
    the same characters and, shifted, the same spans. Otherwise (or if the pieces disagree) all of
    ``Y_train`` is decoded at once.
    """
    prefix_text = trim.prefix_text
    head = 0 if prefix_head is None else len(prefix_head)
    if 0 < head <= len(prefix_bytes):
        head_chars = len(prefix_head.text)
        if "\ufffd" not in prefix_head.text and prefix_text.startswith(prefix_head.text):
            rest = token_char_spans(*bytes_and_lengths(codec, y_train[head:]))
            if rest.text == prefix_text[head_chars:] + fragment_text + EOS_LITERAL:
                return (
                    np.concatenate([prefix_head.starts, rest.starts + head_chars]),
                    np.concatenate([prefix_head.ends, rest.ends + head_chars]),
                )
    all_bytes = [*prefix_bytes, *codec.token_bytes(tail_ids)]
    spans = token_char_spans(all_bytes, token_lengths(codec, y_train, all_bytes))
    expected = prefix_text + fragment_text + EOS_LITERAL
    if spans.text != expected:
        at = next(
            (i for i, (a, b) in enumerate(zip(spans.text, expected, strict=False)) if a != b),
            min(len(spans.text), len(expected)),
        )
        raise PipelineError(
            f"Y_train decodes to {spans.text[at : at + 24]!r} at char {at}, expected "
            f"{expected[at : at + 24]!r}: "
            "the tokenizer does not reproduce the prefix/FN fragment exactly (normalization?)"
        )
    return spans.starts, spans.ends


# Span kind values of the layout's parts (index ``matched`` into _MATCHED_OR_FP).
_MATCHED_OR_FP = np.array([int(SpanKind.PREFIX_FP), int(SpanKind.PREFIX_MATCHED)], dtype=np.int64)
_PREFIX_OPEN = np.array([int(SpanKind.PREFIX_OPEN)], dtype=np.int64)
_FN_CLOSURE = np.array([int(SpanKind.FN), int(SpanKind.CLOSURE)], dtype=np.int64)
_CLOSURE = np.array([int(SpanKind.CLOSURE)], dtype=np.int64)
_ZERO = np.zeros(1, dtype=np.int64)


def _span_kinds(
    starts: np.ndarray,
    ends: np.ndarray,
    open_end: int,
    table: PrefixTable,
    n_prefix_chars: int,
    fn_end: int,
    fragment_chars: int,
    has_fn: bool,
) -> np.ndarray:
    """Span kind per ``Y_train`` token (module doc): ``prefix_open`` ``[0, open_end)``, each prefix
    element as ``prefix_matched``/``prefix_fp``, ``fn`` ``[n_prefix_chars, fn_end)`` (when there are
    FN objects), ``closure`` up to the fragment's end, ``eos`` for the rest.

    A preparer's layout tiles the text in order (every extent non-empty, each starting where the
    previous one ends), which the one-pass :func:`span_kinds_for_sorted_intervals` takes directly;
    any other layout goes through the general :func:`span_kinds_for_tokens`.
    """
    extents = table.extents
    fragment_end = n_prefix_chars + fragment_chars
    tail_lows, tail_highs, tail_kinds = (
        ((n_prefix_chars, fn_end), (fn_end, fragment_end), _FN_CLOSURE)
        if has_fn
        else ((fn_end,), (fragment_end,), _CLOSURE)
    )
    lows = np.concatenate([_ZERO, extents[:, 0], tail_lows])
    highs = np.concatenate([(open_end,), extents[:, 1], tail_highs])
    if (lows < highs).all() and (highs[:-1] <= lows[1:]).all():
        kinds = np.concatenate([_PREFIX_OPEN, _MATCHED_OR_FP[table.matched.view(np.int8)], tail_kinds])
        return span_kinds_for_sorted_intervals(starts, ends, lows, highs, kinds, SpanKind.EOS)
    intervals = {
        SpanKind.PREFIX_OPEN: _intervals([(0, open_end)]),
        SpanKind.PREFIX_MATCHED: extents[table.matched],
        SpanKind.PREFIX_FP: extents[~table.matched],
        SpanKind.FN: _intervals([(n_prefix_chars, fn_end)] if has_fn else []),
        SpanKind.CLOSURE: _intervals([(fn_end, fragment_end)]),
    }
    intervals = {kind: value for kind, value in intervals.items() if value.shape[0]}
    return span_kinds_for_tokens(starts, ends, intervals, SpanKind.EOS)


def _table_size(n: int) -> int:
    """Round a lookup-table size up to a power of two so that :func:`coord_mask_for` caches a few."""
    return 1 << max(0, (n - 1).bit_length())


def _slot_numbering(objects: np.ndarray, arity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per coord slot: its object number (``objects[k]`` repeated ``arity[k]`` times) and its index
    inside the object (0..arity−1)."""
    total = int(arity.sum())
    first_slot = np.cumsum(arity) - arity
    return np.repeat(objects, arity), np.arange(total, dtype=np.int64) - np.repeat(first_slot, arity)


def _prefix_slots(table: PrefixTable) -> tuple[CoordSlots, BBoxGroupTable, tuple[PolyGroup, ...]]:
    """The matched elements' coord slots (objects numbered by element), bbox groups and poly groups."""
    if not table.element.size:
        return CoordSlots.empty(), BBoxGroupTable.empty(), ()
    obj, slot = _slot_numbering(table.element, table.arity)
    slots = CoordSlots.built(table.coord_pos, table.target, obj, slot)
    is_box = table.is_box
    polys: tuple[PolyGroup, ...] = ()
    if not is_box.all():
        poly = ~is_box
        ends = np.cumsum(table.arity)
        starts = ends - table.arity
        polys = PolyGroup.built_many(
            table.coord_pos.tolist(),
            table.target.tolist(),
            list(zip(starts[poly].tolist(), ends[poly].tolist())),
            table.gt_index[poly].tolist(),
            table.pred_index[poly].tolist(),
        )
    if not is_box.any():
        return slots, BBoxGroupTable.empty(), polys
    if np.count_nonzero(table.arity[is_box] != 4):
        raise PipelineError("PrefixTable: a bbox prediction needs 4 coord slots")
    box_slots = np.repeat(is_box, table.arity)
    groups = BBoxGroupTable.built(
        table.coord_pos[box_slots].reshape(-1, 4),
        table.target[box_slots].reshape(-1, 4),
        table.gt_index[is_box],
        table.pred_index[is_box],
    )
    return slots, groups, polys


def _fn_slots(
    fn_objects: Sequence[CoordObject],
    fn_list: Sequence[int],
    positions: np.ndarray,
    arity: Sequence[int],
    first_object: int,
) -> tuple[CoordSlots, BBoxGroupTable]:
    if not fn_objects:
        return CoordSlots.empty(), BBoxGroupTable.empty()
    arity_array = np.asarray(arity, dtype=np.int64)
    values = np.fromiter(
        itertools.chain.from_iterable(o.values for o in fn_objects), np.int64, int(arity_array.sum())
    )
    objects, slot = _slot_numbering(first_object + np.arange(len(fn_objects), dtype=np.int64), arity_array)
    slots = CoordSlots.built(positions.astype(np.int64), values, objects, slot)
    boxes = np.fromiter((o.geom_key == BBOX_KEY for o in fn_objects), dtype=bool, count=len(fn_objects))
    if not boxes.any():
        return slots, BBoxGroupTable.empty()
    take = (np.cumsum(arity_array) - arity_array)[boxes][:, None] + np.arange(4)
    groups = BBoxGroupTable.built(
        positions[take].astype(np.int64),
        values[take],
        np.asarray(fn_list, dtype=np.int64)[boxes],
        np.full(int(boxes.sum()), -1, dtype=np.int64),
    )
    return slots, groups


def check_target_ids(target: RolloutTarget, codec: TextCodec) -> None:
    """Raise :class:`PipelineError` unless every coord slot holds a coord id of ``codec`` and every
    FN slot's id is the bin it targets (E5, E10)."""
    vocab = codec.coord_vocab
    for name, slots in (
        ("coord_slots_prefix", target.coord_slots_prefix),
        ("coord_slots_fn", target.coord_slots_fn),
    ):
        bins = vocab.bins_of_array(target.y_train[slots.pos])
        if np.any(bins < 0):
            raise PipelineError(
                f"RolloutTarget.{name}: position {int(slots.pos[np.argmin(bins)])} is not a coord id"
            )
        if name == "coord_slots_fn" and not np.array_equal(bins, slots.target_bin):
            raise PipelineError(f"RolloutTarget.{name}: FN coord ids differ from their GT bins")


__all__ = [
    "PrefixElement",
    "PrefixTable",
    "build_rollout_target",
    "check_target_ids",
    "fn_fragment",
    "fn_lead",
]
