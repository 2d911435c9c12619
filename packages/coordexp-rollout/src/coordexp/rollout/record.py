"""``RolloutTarget``: the rich per-sample record of a prepared rollout (spec 03 §3.7; invariant E10).

Positions are assistant-relative: position ``p`` is ``y_train[p]``, i.e. token ``prompt_len + p`` of
the teacher-forced sequence ``prompt_ids + y_train``; "tail-local" means ``p − prefix_len``.
``y_train = prefix_ids + encode(fragment) + [eos_id]`` (03 §3.6).

Per-position labels (``token_type``, ``span_kind``, int64 ``[train_len]``) are stored once; the
§3.7 position lists (``prefix_struct_pos``, ``prefix_fp_pos``, ``tail_struct_pos``,
``tail_desc_pos``, ``closure_pos``, ``eos_pos``) are derived from them. Coord slots and bbox/poly
groups carry targets. Construction validates the structural contract and raises
:class:`~coordexp.core.errors.PipelineError`: every position lies in ``[0, train_len)``, slots sit on
coord tokens of their own span kind (matched prefix / FN), prefix groups lie in ``[0, prefix_len)``
and FN groups in ``[prefix_len, train_len)``, every group position is a slot with the same target,
and the eos is the last token and the only eos.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import numpy as np

from coordexp.core.codec import MAX_BIN
from coordexp.core.errors import PipelineError
from coordexp.core.tokens import SpanKind, TokenType

PREFIX_KINDS = (SpanKind.PREFIX_OPEN, SpanKind.PREFIX_MATCHED, SpanKind.PREFIX_FP)
TAIL_KINDS = (SpanKind.FN, SpanKind.CLOSURE, SpanKind.EOS)
# _REGION[kind]: 1 for span kinds of the prefix, 2 for those of the FN tail, 0 otherwise.
_REGION = np.zeros(max(SpanKind) + 1, dtype=np.int8)
_REGION[[int(k) for k in PREFIX_KINDS]] = 1
_REGION[[int(k) for k in TAIL_KINDS]] = 2
# _LAYOUT[kind]: _REGION with the eos kind singled out as 3; a valid record's per-position codes
# are p ones, then twos, then one three (see _layout_bytes).
_LAYOUT = _REGION.copy()
_LAYOUT[int(SpanKind.EOS)] = 3
# _SLOT_SIDE[kind]: 1 for PREFIX_MATCHED (prefix slots), 2 for FN (FN slots), 0 otherwise.
_SLOT_SIDE = np.zeros(max(SpanKind) + 1, dtype=np.int8)
_SLOT_SIDE[int(SpanKind.PREFIX_MATCHED)] = 1
_SLOT_SIDE[int(SpanKind.FN)] = 2


def _int_array(value: Any, what: str, ndim: int = 1, width: int | None = None) -> np.ndarray:
    """A read-only int64 copy of ``value`` with ``ndim`` dimensions (``[n]`` or ``[n, width]``)."""
    array = np.asarray(value)
    if array.size == 0:
        array = np.zeros((0,) if ndim == 1 else (0, width or 0), dtype=np.int64)
    if array.ndim != ndim or (width is not None and array.shape[1] != width):
        expected = "[n]" if ndim == 1 else f"[n, {width}]"
        raise PipelineError(f"{what}: expected an int array {expected}, got shape {array.shape}")
    if array.dtype != np.int64 and array.size and not np.issubdtype(array.dtype, np.integer):
        raise PipelineError(f"{what}: expected integers, got dtype {array.dtype}")
    frozen = array.astype(np.int64, copy=True)
    frozen.flags.writeable = False
    return frozen


def _built(cls: type, **fields: Any) -> Any:
    """An instance of the frozen attrs class ``cls`` from fields already in their final form, without
    running ``__init__``'s conversion and checks.

    For tables that :mod:`coordexp.rollout.targets` has just built as fresh int64 arrays: they go
    straight into a :class:`RolloutTarget`, whose validation checks the whole record (the boundary),
    so checking each table on its own first would only repeat that work per sample.
    """
    instance = object.__new__(cls)
    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        object.__setattr__(instance, name, value)
    return instance


def _readonly(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen(eq=False)
class CoordSlots:
    """Coord slots ``{pos, target_bin, object, slot}`` as parallel int64 arrays ``[n]``.

    ``object`` numbers the records of ``Y_train`` in order (prefix elements first, FN objects
    continue after them); ``slot`` is the value index inside its object's geometry.
    """

    pos: np.ndarray
    target_bin: np.ndarray
    object: np.ndarray
    slot: np.ndarray

    def __attrs_post_init__(self) -> None:
        for name in ("pos", "target_bin", "object", "slot"):
            object.__setattr__(self, name, _int_array(getattr(self, name), f"CoordSlots.{name}"))
        n = self.pos.shape[0]
        if any(getattr(self, name).shape[0] != n for name in ("target_bin", "object", "slot")):
            raise PipelineError("CoordSlots: pos, target_bin, object and slot must have the same length")
        if n and (self.target_bin.min() < 0 or self.target_bin.max() > MAX_BIN):
            raise PipelineError(f"CoordSlots: target bins must lie in 0..{MAX_BIN}")
        if n and (self.object.min() < 0 or self.slot.min() < 0):
            raise PipelineError("CoordSlots: object and slot must be >= 0")

    @classmethod
    def empty(cls) -> CoordSlots:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def built(
        cls, pos: np.ndarray, target_bin: np.ndarray, object: np.ndarray, slot: np.ndarray
    ) -> CoordSlots:
        """From fresh int64 ``[n]`` arrays made by trusted code, unchecked (see :func:`_built`);
        :class:`RolloutTarget` checks them."""
        return _built(cls, pos=pos, target_bin=target_bin, object=object, slot=slot)

    def __len__(self) -> int:
        return int(self.pos.shape[0])


@attrs.frozen(eq=False)
class BBoxGroupTable:
    """Bbox groups: ``pos [G, 4]`` (x1, y1, x2, y2 positions), ``target [G, 4]`` bins,
    ``gt_index [G]``, ``pred_index [G]`` (−1 for FN groups), ``weight [G]`` float32 (1.0)."""

    pos: np.ndarray
    target: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray
    weight: np.ndarray

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "pos", _int_array(self.pos, "BBoxGroupTable.pos", 2, 4))
        object.__setattr__(self, "target", _int_array(self.target, "BBoxGroupTable.target", 2, 4))
        object.__setattr__(self, "gt_index", _int_array(self.gt_index, "BBoxGroupTable.gt_index"))
        object.__setattr__(self, "pred_index", _int_array(self.pred_index, "BBoxGroupTable.pred_index"))
        weight = np.array(np.asarray(self.weight, dtype=np.float32).reshape(-1), copy=True)
        weight.flags.writeable = False
        object.__setattr__(self, "weight", weight)
        n = self.pos.shape[0]
        if any(a.shape[0] != n for a in (self.target, self.gt_index, self.pred_index, self.weight)):
            raise PipelineError(
                "BBoxGroupTable: pos, target, gt_index, pred_index and weight must have G rows"
            )
        if n and (self.target.min() < 0 or self.target.max() > MAX_BIN):
            raise PipelineError(f"BBoxGroupTable: target bins must lie in 0..{MAX_BIN}")
        if n and (self.gt_index.min() < 0 or self.pred_index.min() < -1):
            raise PipelineError("BBoxGroupTable: gt_index must be >= 0 and pred_index >= -1")
        if not np.all(np.isfinite(self.weight)) or np.any(self.weight < 0):
            raise PipelineError("BBoxGroupTable: weights must be finite and >= 0")

    @classmethod
    def empty(cls) -> BBoxGroupTable:
        z = np.zeros((0, 4), np.int64)
        e = np.zeros(0, np.int64)
        return cls(z, z, e, e, np.zeros(0, np.float32))

    @classmethod
    def built(
        cls, pos: np.ndarray, target: np.ndarray, gt_index: np.ndarray, pred_index: np.ndarray
    ) -> BBoxGroupTable:
        """From fresh int64 arrays (``[G, 4]``, ``[G, 4]``, ``[G]``, ``[G]``) made by trusted code,
        weight 1.0, unchecked (see :func:`_built`); :class:`RolloutTarget` checks them."""
        weight = np.ones(len(gt_index), dtype=np.float32)
        return _built(cls, pos=pos, target=target, gt_index=gt_index, pred_index=pred_index, weight=weight)

    def __len__(self) -> int:
        return int(self.pos.shape[0])


@attrs.frozen
class PolyGroup:
    """A matched poly prediction: ``pos[2n]`` coord positions, ``target[2n]`` bins (OT targets)."""

    pos: tuple[int, ...] = attrs.field(converter=tuple)
    target: tuple[int, ...] = attrs.field(converter=tuple)
    gt_index: int
    pred_index: int

    def __attrs_post_init__(self) -> None:
        if len(self.pos) != len(self.target) or len(self.pos) < 6 or len(self.pos) % 2:
            raise PipelineError(
                f"PolyGroup: pos and target need the same even length >= 6, got {len(self.pos)} and "
                f"{len(self.target)}"
            )

    @classmethod
    def built(
        cls, pos: tuple[int, ...], target: tuple[int, ...], gt_index: int, pred_index: int
    ) -> PolyGroup:
        """From int tuples made by trusted code, unchecked (see :func:`_built`); :class:`RolloutTarget`
        checks them."""
        return _built(cls, pos=pos, target=target, gt_index=gt_index, pred_index=pred_index)

    @classmethod
    def built_many(
        cls,
        pos: list[int],
        target: list[int],
        bounds: list[tuple[int, int]],
        gt_index: list[int],
        pred_index: list[int],
    ) -> tuple[PolyGroup, ...]:
        """Groups ``k`` = ``pos[a:b]``, ``target[a:b]`` for ``(a, b) = bounds[k]`` with
        ``gt_index[k]``/``pred_index[k]``, each made by :meth:`built`."""
        return tuple(
            cls.built(tuple(pos[start:end]), tuple(target[start:end]), gt, pred)
            for (start, end), gt, pred in zip(bounds, gt_index, pred_index, strict=True)
        )


@attrs.frozen
class MatchSummary:
    """Matching outcome as trained.

    ``pairs``: supervised ``(pred_index, gt_index, maskiou)`` (maskIoU for diagnostics only, D13).
    ``fp``: predictions trained as masked FP spans (unmatched, plus excluded pairs), ascending.
    ``fn``: GT indices appended to ``Y_train``, in GT order (unmatched plus excluded).
    ``excluded``: ``(pred_index, gt_index)`` pairs whose OT targets failed (03 §3.5 step 5).
    Prediction indices number the valid records in appearance order.
    """

    pairs: tuple[tuple[int, int, float], ...] = ()
    fp: tuple[int, ...] = ()
    fn: tuple[int, ...] = ()
    excluded: tuple[tuple[int, int], ...] = ()
    gating_rejections: int = 0
    candidate_pairs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": [list(p) for p in self.pairs],
            "fp": list(self.fp),
            "fn": list(self.fn),
            "excluded": [list(p) for p in self.excluded],
            "gating_rejections": self.gating_rejections,
            "candidate_pairs": self.candidate_pairs,
        }


@attrs.frozen
class RolloutFlags:
    """``invalid_rollout`` (with ``invalid_reason``, see :mod:`coordexp.rollout.trim`), ``truncated``
    (``max_new_tokens`` reached without an eos), ``overlength_fallback``, ``ends_with_eos``
    (an eos id or the fused literal stopped the text), ``retokenize_fail``."""

    invalid_rollout: bool = False
    invalid_reason: str | None = None
    truncated: bool = False
    overlength_fallback: bool = False
    ends_with_eos: bool = False
    retokenize_fail: bool = False


@attrs.frozen
class ParseCounts:
    """What the rollout parse found (before any fallback): ``drop_counts`` (every bucket),
    ``valid_records``, ``field_order_mismatch``, ``degenerate_pred_bbox``, and
    ``dropped_incomplete_tail`` (1 when an element in progress was cut off, else 0)."""

    drop_counts: Mapping[str, int] = attrs.field(factory=dict, converter=_readonly)
    valid_records: int = 0
    field_order_mismatch: int = 0
    degenerate_pred_bbox: int = 0
    dropped_incomplete_tail: int = 0

    @property
    def dropped(self) -> int:
        return int(sum(self.drop_counts.values()))


@attrs.frozen
class DecodeInfo:
    """``seed`` of the request (None if unknown), decoding ``params`` (``DecodeParams.to_dict()``),
    ``rollout_len`` (generated ids, eos included), ``finish_reason``."""

    seed: int | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_readonly)
    rollout_len: int = 0
    finish_reason: str = "stop"


def _positions(mask: np.ndarray) -> np.ndarray:
    out = np.flatnonzero(mask).astype(np.int64)
    out.flags.writeable = False
    return out


@attrs.frozen(eq=False)
class RolloutTarget:
    """One rollout turned into a teacher-forced target (module doc).

    ``y_train`` int64 ``[train_len]``; ``token_type``/``span_kind`` int64 ``[train_len]``
    (``TokenType``/``SpanKind`` values); ``prefix_text`` and ``fragment_text`` are the decoded prefix
    and the FN fragment (``lead + records + "]}"``); ``n_prefix_objects`` counts the prefix's complete
    elements (FN objects are numbered from it).
    """

    prompt_len: int
    prefix_len: int
    y_train: np.ndarray
    token_type: np.ndarray
    span_kind: np.ndarray
    prefix_text: str
    fragment_text: str
    n_prefix_objects: int
    coord_slots_prefix: CoordSlots
    coord_slots_fn: CoordSlots
    bbox_groups_prefix: BBoxGroupTable
    bbox_groups_fn: BBoxGroupTable
    poly_groups_prefix: tuple[PolyGroup, ...]
    match: MatchSummary
    flags: RolloutFlags
    counts: ParseCounts
    decode: DecodeInfo

    def __attrs_post_init__(self) -> None:
        for name in ("y_train", "token_type", "span_kind"):
            object.__setattr__(self, name, _int_array(getattr(self, name), f"RolloutTarget.{name}"))
        self._validate()

    @classmethod
    def built(cls, **fields: Any) -> RolloutTarget:
        """From the fields :func:`coordexp.rollout.targets.build_rollout_target` makes, checking what
        the builder does not establish itself; a record failing any of it gets the full validation,
        which names the problem (or passes a valid record this shortcut did not recognize).

        The builder makes ``y_train``/``token_type``/``span_kind`` fresh int64 ``[train_len]``
        arrays, checks the FN slots against the fragment's ids (coord tokens inside their
        geometries, carrying their GT bins), and cuts every bbox and poly group out of the slot
        arrays it writes (so each group position is a slot with that slot's target). What it is
        handed is checked here: the prefix slots (inside ``[0, prefix_len)``, on coord tokens of
        span kind ``prefix_matched``, each position once, bins in 0..999, objects >= 0), the span-kind
        layout (prefix kinds before ``prefix_len``, tail kinds after, the eos kind last), the single
        trailing eos, the prefix groups' indices and the poly groups' lengths.
        """
        target = _built(cls, **fields)
        if not _builder_record_valid(target):
            target._validate_in_detail()
        return target

    # -- lengths ------------------------------------------------------------------------------
    @property
    def train_len(self) -> int:
        """``prefix_len + len(fragment ids) + 1``."""
        return int(self.y_train.shape[0])

    @property
    def encoded_len(self) -> int:
        """Tokens of the teacher-forced sequence: ``prompt_len + train_len``."""
        return self.prompt_len + self.train_len

    @property
    def text(self) -> str:
        """``prefix_text + fragment_text`` (the eos token not included)."""
        return self.prefix_text + self.fragment_text

    # -- §3.7 position lists --------------------------------------------------------------------
    def _where(self, kinds: tuple[SpanKind, ...], types: tuple[TokenType, ...] | None = None) -> np.ndarray:
        mask = np.isin(self.span_kind, [int(k) for k in kinds])
        if types is not None:
            mask &= np.isin(self.token_type, [int(t) for t in types])
        return _positions(mask)

    @property
    def prefix_struct_pos(self) -> np.ndarray:
        """Struct positions of the matched prefix, ``prefix_open`` included."""
        return self._where((SpanKind.PREFIX_OPEN, SpanKind.PREFIX_MATCHED), (TokenType.STRUCT,))

    @property
    def prefix_desc_pos(self) -> np.ndarray:
        """Desc positions of matched records (token_ce weight 0; listed for diagnostics)."""
        return self._where((SpanKind.PREFIX_MATCHED,), (TokenType.DESC,))

    @property
    def prefix_fp_pos(self) -> np.ndarray:
        """Every position of an FP span (masked)."""
        return self._where((SpanKind.PREFIX_FP,))

    @property
    def tail_struct_pos(self) -> np.ndarray:
        """Struct positions of the FN fragment (leading ``", "`` included, closure excluded)."""
        return self._where((SpanKind.FN,), (TokenType.STRUCT,))

    @property
    def tail_desc_pos(self) -> np.ndarray:
        """Desc positions of the FN fragment."""
        return self._where((SpanKind.FN,), (TokenType.DESC,))

    @property
    def closure_pos(self) -> np.ndarray:
        """Positions of the closing ``]}`` (tokens fused with it included, D26)."""
        return self._where((SpanKind.CLOSURE,))

    @property
    def eos_pos(self) -> int:
        """Position of the eos token: ``train_len − 1``."""
        return self.train_len - 1

    # -- validation -----------------------------------------------------------------------------
    def _validate(self) -> None:
        """Raise :class:`PipelineError` unless the record meets the contract of the module doc.

        Valid records (every record the builder makes) are recognized by a few whole-array tests
        (:func:`_certainly_valid`); anything else gets the check-by-check pass that names the
        problem.
        """
        if not _certainly_valid(self):
            self._validate_in_detail()

    def _validate_in_detail(self) -> None:
        n = self.train_len
        if self.token_type.shape != (n,) or self.span_kind.shape != (n,):
            raise PipelineError(
                f"RolloutTarget: token_type {self.token_type.shape} and span_kind {self.span_kind.shape} "
                f"must have train_len={n} entries"
            )
        if not 1 <= self.prefix_len < n:
            raise PipelineError(f"RolloutTarget: prefix_len {self.prefix_len} must lie in [1, train_len={n})")
        if self.prompt_len < 0:
            raise PipelineError(f"RolloutTarget: prompt_len must be >= 0, got {self.prompt_len}")
        if self.y_train.min() < 0:
            raise PipelineError("RolloutTarget: y_train ids must be >= 0")
        kinds = self.span_kind
        if kinds.min() < 0 or kinds.max() >= _REGION.shape[0]:
            raise PipelineError("RolloutTarget: span_kind holds values outside the SpanKind range")
        expected_region = np.full(n, 2, dtype=np.int8)
        expected_region[: self.prefix_len] = 1
        wrong = _REGION[kinds] != expected_region
        if np.count_nonzero(wrong):
            bad = int(np.argmax(wrong))
            raise PipelineError(
                f"RolloutTarget: position {bad} has span kind {SpanKind(int(kinds[bad])).name}, which "
                f"does not belong {'before' if bad < self.prefix_len else 'after'} "
                f"prefix_len={self.prefix_len}"
            )
        eos_type, eos_kind = int(TokenType.EOS), int(SpanKind.EOS)
        if (
            self.token_type[-1] != eos_type
            or kinds[-1] != eos_kind
            or np.count_nonzero(self.token_type[:-1] == eos_type)
            or np.count_nonzero(kinds[:-1] == eos_kind)
        ):
            raise PipelineError(
                "RolloutTarget: the eos must be the last token and the only eos (type and span kind)"
            )
        slots = (self.coord_slots_prefix, self.coord_slots_fn)
        self._check_tables()
        self._check_slots(
            self.coord_slots_prefix, 0, self.prefix_len, SpanKind.PREFIX_MATCHED, "coord_slots_prefix"
        )
        self._check_slots(self.coord_slots_fn, self.prefix_len, n, SpanKind.FN, "coord_slots_fn")
        all_pos = np.concatenate([s.pos for s in slots])
        # Positions are in [0, n) here, so a count above 1 is a repeat.
        if all_pos.size and np.bincount(all_pos, minlength=n).max() > 1:
            raise PipelineError("RolloutTarget: a position appears in more than one coord slot")
        target_of = np.full(n, -1, dtype=np.int64)
        target_of[all_pos] = np.concatenate([s.target_bin for s in slots])
        self._check_groups(
            self.bbox_groups_prefix.pos,
            self.bbox_groups_prefix.target,
            0,
            self.prefix_len,
            target_of,
            "bbox_groups_prefix",
        )
        self._check_groups(
            self.bbox_groups_fn.pos,
            self.bbox_groups_fn.target,
            self.prefix_len,
            n,
            target_of,
            "bbox_groups_fn",
        )
        if len(self.bbox_groups_fn) and np.any(self.bbox_groups_fn.pred_index != -1):
            raise PipelineError("RolloutTarget: FN bbox groups have no prediction (pred_index must be -1)")
        if self.poly_groups_prefix:
            # All poly groups in one check; on a failure, find the group to name it.
            polys = self.poly_groups_prefix
            flat_pos = np.fromiter(itertools.chain.from_iterable(g.pos for g in polys), dtype=np.int64)
            flat_target = np.fromiter(itertools.chain.from_iterable(g.target for g in polys), dtype=np.int64)
            in_bounds = flat_pos.min() >= 0 and flat_pos.max() < self.prefix_len
            if not in_bounds or not np.array_equal(target_of[flat_pos], flat_target):
                for k, group in enumerate(polys):
                    self._check_groups(
                        np.asarray([group.pos]),
                        np.asarray([group.target]),
                        0,
                        self.prefix_len,
                        target_of,
                        f"poly_groups_prefix[{k}]",
                    )

    def _check_tables(self) -> None:
        """What the tables' own constructors check, for tables built unchecked (:func:`_built`)."""
        for name in ("coord_slots_prefix", "coord_slots_fn"):
            table = getattr(self, name)
            arrays = (table.pos, table.target_bin, table.object, table.slot)
            if any(a.dtype != np.int64 or a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
                raise PipelineError(
                    f"RolloutTarget.{name}: pos, target_bin, object and slot must be int64 [n]"
                )
            if len(table) and (
                table.target_bin.min() < 0
                or table.target_bin.max() > MAX_BIN
                or table.object.min() < 0
                or table.slot.min() < 0
            ):
                raise PipelineError(
                    f"RolloutTarget.{name}: target bins must lie in 0..{MAX_BIN}, objects and slots >= 0"
                )
        for name in ("bbox_groups_prefix", "bbox_groups_fn"):
            table = getattr(self, name)
            if not _groups_shaped(table):
                raise PipelineError(
                    f"RolloutTarget.{name}: groups need pos/target int64 [G, 4] and [G] indices"
                )
            g = table.gt_index.shape[0]
            if g and (table.gt_index.min() < 0 or table.pred_index.min() < -1):
                raise PipelineError(f"RolloutTarget.{name}: gt_index must be >= 0 and pred_index >= -1")
            if g and not (np.isfinite(table.weight).all() and table.weight.min() >= 0):
                raise PipelineError(f"RolloutTarget.{name}: weights must be finite and >= 0")
        for k, group in enumerate(self.poly_groups_prefix):
            if len(group.pos) != len(group.target) or len(group.pos) < 6 or len(group.pos) % 2:
                raise PipelineError(
                    f"RolloutTarget.poly_groups_prefix[{k}]: pos and target need the same even length >= 6"
                )

    def _check_slots(self, slots: CoordSlots, low: int, high: int, kind: SpanKind, what: str) -> None:
        if not len(slots):
            return
        if slots.pos.min() < low or slots.pos.max() >= high:
            raise PipelineError(f"RolloutTarget.{what}: positions must lie in [{low}, {high})")
        not_coord = self.token_type[slots.pos] != int(TokenType.COORD)
        if np.count_nonzero(not_coord):
            bad = int(slots.pos[np.argmax(not_coord)])
            raise PipelineError(f"RolloutTarget.{what}: position {bad} is not a coord token")
        other_kind = self.span_kind[slots.pos] != int(kind)
        if np.count_nonzero(other_kind):
            bad = int(slots.pos[np.argmax(other_kind)])
            raise PipelineError(
                f"RolloutTarget.{what}: position {bad} has span kind "
                f"{SpanKind(int(self.span_kind[bad])).name}, expected {kind.name}"
            )

    @staticmethod
    def _check_groups(
        pos: np.ndarray, target: np.ndarray, low: int, high: int, target_of: np.ndarray, what: str
    ) -> None:
        """``target_of[p]``: the slot target at position p, −1 where p is no slot."""
        if not pos.size:
            return
        if pos.min() < low or pos.max() >= high:
            raise PipelineError(f"RolloutTarget.{what}: positions must lie in [{low}, {high})")
        differs = target_of[pos.reshape(-1)] != target.reshape(-1)
        if np.count_nonzero(differs):
            bad = int(np.argmax(differs))
            p, t = int(pos.reshape(-1)[bad]), int(target.reshape(-1)[bad])
            raise PipelineError(
                f"RolloutTarget.{what}: position {p} is not a coord slot with target {t} "
                f"(slot target {int(target_of[p])}, -1 = no slot)"
            )


def _groups_shaped(table: Any) -> bool:
    """A bbox-group table's `pos`/`target` are int64 `[G, 4]` and `pred_index`/`weight` are `[G]`."""
    g = table.gt_index.shape[0]
    return (
        table.pos.shape == (g, 4)
        and table.target.shape == (g, 4)
        and table.pred_index.shape == (g,)
        and table.weight.shape == (g,)
        and table.pos.dtype == np.int64
        and table.target.dtype == np.int64
    )


def _layout_bytes(prefix_len: int, train_len: int) -> bytes:
    """The :data:`_LAYOUT` codes (int8) of a valid record's positions, as bytes."""
    return b"\x01" * prefix_len + b"\x02" * (train_len - prefix_len - 1) + b"\x03"


def _below(values: np.ndarray, bound: int) -> bool:
    """True when every entry of the int64 array ``values`` lies in ``[0, bound)`` (one reduction:
    read as uint64, negative entries are huge)."""
    return not values.size or int(values.view(np.uint64).max()) < bound


def _tables_well_formed(target: RolloutTarget) -> bool:
    """The dtypes and shapes :meth:`RolloutTarget._check_tables` requires (no values read)."""
    for table in (target.coord_slots_prefix, target.coord_slots_fn):
        arrays = (table.pos, table.target_bin, table.object, table.slot)
        if any(
            type(a) is not np.ndarray or a.dtype != np.int64 or a.ndim != 1 or a.shape != arrays[0].shape
            for a in arrays
        ):
            return False
    for table in (target.bbox_groups_prefix, target.bbox_groups_fn):
        arrays = (table.pos, table.target, table.gt_index, table.pred_index, table.weight)
        if any(type(a) is not np.ndarray for a in arrays):
            return False
        if (
            not _groups_shaped(table)
            or table.gt_index.dtype != np.int64
            or table.pred_index.dtype != np.int64
            or table.weight.dtype.kind != "f"
        ):
            return False
    return all(
        len(group.pos) == len(group.target) and len(group.pos) >= 6 and not len(group.pos) % 2
        for group in target.poly_groups_prefix
    )


def _builder_record_valid(target: RolloutTarget) -> bool:
    """The part of :func:`_certainly_valid` that :meth:`RolloutTarget.built` needs (its doc)."""
    n, p = target.train_len, target.prefix_len
    token_type, kinds = target.token_type, target.span_kind
    if not 1 <= p < n or target.prompt_len < 0 or not _tables_well_formed(target):
        return False
    if not _below(kinds, _LAYOUT.shape[0]) or _LAYOUT[kinds].tobytes() != _layout_bytes(p, n):
        return False
    eos_type = int(TokenType.EOS)
    if token_type[-1] != eos_type or np.count_nonzero(token_type == eos_type) != 1:
        return False
    slots = target.coord_slots_prefix
    if len(slots):
        pos = slots.pos
        if not _below(pos, p) or not _below(slots.target_bin, MAX_BIN + 1) or slots.object.min() < 0:
            return False
        if np.count_nonzero(kinds[pos] != int(SpanKind.PREFIX_MATCHED)):
            return False
        if np.count_nonzero(token_type[pos] != int(TokenType.COORD)) or np.bincount(pos).max() > 1:
            return False
    groups = target.bbox_groups_prefix
    return not len(groups) or bool(groups.gt_index.min() >= 0 and groups.pred_index.min() >= -1)


def _certainly_valid(target: RolloutTarget) -> bool:
    """True only when :meth:`RolloutTarget._validate_in_detail` would pass: the same conditions,
    tested on concatenated arrays with a few reductions. False means "check in detail" (which then
    raises, or passes for a valid record this test did not recognize)."""
    n, p = target.train_len, target.prefix_len
    token_type, kinds = target.token_type, target.span_kind
    if token_type.shape != (n,) or kinds.shape != (n,) or not 1 <= p < n or target.prompt_len < 0:
        return False
    if not _tables_well_formed(target) or target.y_train.min() < 0 or not _below(kinds, _LAYOUT.shape[0]):
        return False
    # Region of every span kind, and the eos kind exactly at the end; the eos type likewise.
    if _LAYOUT[kinds].tobytes() != _layout_bytes(p, n):
        return False
    eos_type = int(TokenType.EOS)
    if token_type[-1] != eos_type or np.count_nonzero(token_type == eos_type) != 1:
        return False
    slots_prefix, slots_fn = target.coord_slots_prefix, target.coord_slots_fn
    all_pos = np.concatenate([slots_prefix.pos, slots_fn.pos])
    all_bins = np.concatenate([slots_prefix.target_bin, slots_fn.target_bin])
    if all_pos.size:
        numbering = np.concatenate([slots_prefix.object, slots_prefix.slot, slots_fn.object, slots_fn.slot])
        if not _below(all_bins, MAX_BIN + 1) or numbering.min() < 0 or not _below(all_pos, n):
            return False
        # Slots sit on coord tokens of their side's span kind (which also puts them on the right
        # side of prefix_len), each position at most once.
        side = b"\x01" * len(slots_prefix) + b"\x02" * len(slots_fn)
        if _SLOT_SIDE[kinds[all_pos]].tobytes() != side:
            return False
        if np.count_nonzero(token_type[all_pos] != int(TokenType.COORD)):
            return False
        if np.bincount(all_pos, minlength=n).max() > 1:
            return False
    target_of = np.full(n, -1, dtype=np.int64)
    target_of[all_pos] = all_bins
    groups_prefix, groups_fn = target.bbox_groups_prefix, target.bbox_groups_fn
    polys = target.poly_groups_prefix
    prefix_pos = groups_prefix.pos.reshape(-1)
    prefix_target = groups_prefix.target.reshape(-1)
    if polys:
        try:
            poly_pos = np.fromiter(itertools.chain.from_iterable(g.pos for g in polys), dtype=np.int64)
            poly_target = np.fromiter(itertools.chain.from_iterable(g.target for g in polys), dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            return False  # not int positions: the detailed pass reports it where it would
        prefix_pos = np.concatenate([prefix_pos, poly_pos])
        prefix_target = np.concatenate([prefix_target, poly_target])
    fn_pos = groups_fn.pos.reshape(-1)
    if not _below(prefix_pos, p) or (fn_pos.size and (fn_pos.min() < p or fn_pos.max() >= n)):
        return False
    group_pos = np.concatenate([prefix_pos, fn_pos])
    group_target = np.concatenate([prefix_target, groups_fn.target.reshape(-1)])
    if target_of[group_pos].tobytes() != group_target.tobytes():
        return False
    gt_index = np.concatenate([groups_prefix.gt_index, groups_fn.gt_index])
    weights = np.concatenate([groups_prefix.weight, groups_fn.weight])
    return not gt_index.size or bool(
        gt_index.min() >= 0
        and (not len(groups_prefix) or groups_prefix.pred_index.min() >= -1)
        and not np.count_nonzero(groups_fn.pred_index != -1)
        and weights.min() >= 0
        and weights.max() < np.inf
    )


__all__ = [
    "BBoxGroupTable",
    "CoordSlots",
    "DecodeInfo",
    "MatchSummary",
    "ParseCounts",
    "PolyGroup",
    "RolloutFlags",
    "RolloutTarget",
]
