"""``TeacherForcingContext``: one immutable view of a teacher-forced forward (spec 02 §2.3, D19).

Rows are the candidate target rows of a packed micro-batch (every assistant target; in ``rollout``
minus ``prefix_fp``), flattened across segments with the causal shift already applied: row ``r``
holds the logits that predict ``target_ids[r]``. Modules see flat rows only; packing, padding,
segment offsets and prompt lengths were resolved by ``coordexp.core.rows.pack_rows``.

Derived views are memoized on the instance and shared by every module that reads the context. A
view that depends on logits is cached separately for "tracking gradients" and "not tracking", so
a diagnostic running under ``torch.no_grad()`` can never hand a graph-less tensor to an objective.
Views are read-only: never modify a returned tensor in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import torch
from torch.autograd.function import once_differentiable

from coordexp.core.errors import PipelineError
from coordexp.core.geometry import DECODE_MODES, NUM_BINS, decode_coords
from coordexp.core.tokens import Channel, ContextName, SpanKind, Subset, TokenType

__all__ = [
    "ALLOWED_SPAN_KINDS",
    "BBoxGroups",
    "COORD_LOGIT_CLAMP",
    "ContextSet",
    "SegmentInfo",
    "TRAINER_VARIANT_CHANNELS",
    "TeacherForcingContext",
]

#: Coord logits are clamped to ±this before any coord term (D45).
COORD_LOGIT_CLAMP = 1e4

#: Channels each trainer variant may run (D38).
TRAINER_VARIANT_CHANNELS: Mapping[str, frozenset[Channel]] = MappingProxyType(
    {
        "stage1": frozenset({Channel.A}),
        "stage2_two_channel": frozenset({Channel.A, Channel.B}),
        "stage2_rollout_aligned": frozenset({Channel.B}),
    }
)

_CONTEXT_CHANNEL: Mapping[ContextName, Channel] = MappingProxyType(
    {ContextName.GT: Channel.A, ContextName.SELF_CONTEXT: Channel.A, ContextName.ROLLOUT: Channel.B}
)

#: Span kinds a candidate row may carry in each context (``prefix_fp`` rows are never candidates).
ALLOWED_SPAN_KINDS: Mapping[ContextName, frozenset[SpanKind]] = MappingProxyType(
    {
        ContextName.GT: frozenset({SpanKind.BODY, SpanKind.CLOSURE, SpanKind.EOS}),
        ContextName.SELF_CONTEXT: frozenset({SpanKind.BODY, SpanKind.CLOSURE, SpanKind.EOS}),
        ContextName.ROLLOUT: frozenset(
            {SpanKind.PREFIX_OPEN, SpanKind.PREFIX_MATCHED, SpanKind.FN, SpanKind.CLOSURE, SpanKind.EOS}
        ),
    }
)

# Rows per block when a full-vocabulary reduction runs in float32: bounds the temporary to about
# 2**26 elements (256 MiB) whatever the vocabulary size.
_LSE_BLOCK_ELEMENTS = 1 << 26


def _readonly_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen
class SegmentInfo:
    """Read-only per-sample facts of one packed segment.

    Attributes:
        sample_id: the sample's id (dataset index or record id).
        length: tokens in the segment (prompt + assistant), ≥ 1.
        prompt_len: prompt tokens at the start of the segment, ``0 ≤ prompt_len ≤ length``.
        lengths: further named lengths (e.g. rollout ``prefix_len``, ``train_len``, ``encoded_len``).
        counters: per-sample counts (e.g. rollout counters of spec 03 §3.8).
        match: match information (pairs, fp, fn, …) for diagnostics.
    """

    sample_id: int | str
    length: int
    prompt_len: int
    lengths: Mapping[str, int] = attrs.field(factory=dict, converter=_readonly_mapping)
    counters: Mapping[str, float] = attrs.field(factory=dict, converter=_readonly_mapping)
    match: Mapping[str, Any] = attrs.field(factory=dict, converter=_readonly_mapping)

    def __attrs_post_init__(self) -> None:
        where = f"segment {self.sample_id!r}"
        if not (_is_int(self.sample_id) or isinstance(self.sample_id, str)):
            raise PipelineError(
                f"SegmentInfo.sample_id must be an int or str, got {type(self.sample_id).__name__}"
            )
        if not _is_int(self.length) or self.length < 1:
            raise PipelineError(f"{where}: length must be an int >= 1, got {self.length!r}")
        if not _is_int(self.prompt_len) or not 0 <= self.prompt_len <= self.length:
            raise PipelineError(
                f"{where}: prompt_len must be an int in [0, length={self.length}], got {self.prompt_len!r}"
            )
        for key, value in self.lengths.items():
            if not isinstance(key, str) or not _is_int(value) or value < 0:
                raise PipelineError(f"{where}: lengths[{key!r}] must be an int >= 0, got {value!r}")
        for key, value in self.counters.items():
            if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PipelineError(f"{where}: counters[{key!r}] must be a number, got {value!r}")
            if not math.isfinite(value):
                raise PipelineError(f"{where}: counters[{key!r}] must be finite, got {value!r}")


def _check_tensor(value: object, what: str, *, ndim: int, floating: bool) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise PipelineError(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    if value.ndim != ndim:
        raise PipelineError(f"{what}: expected {ndim} dimension(s), got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise PipelineError(f"{what}: expected a floating tensor, got {value.dtype}")
    if not floating and value.dtype != torch.long:
        raise PipelineError(f"{what}: expected dtype torch.long, got {value.dtype}")
    return value


def _first_true(mask: torch.Tensor) -> int | None:
    hits = torch.nonzero(mask.reshape(-1))
    return int(hits[0, 0]) if hits.numel() else None


@attrs.frozen(eq=False)
class BBoxGroups:
    """Bounding-box groups: 4 coord rows (x1, y1, x2, y2) each, with GT bins (spec 02 §2.8).

    Attributes:
        rows: long ``[G, 4]`` row indices into the context (distinct coord rows).
        target: long ``[G, 4]`` target bins in 0..999.
        weight: float ``[G]`` finite ≥ 0 group weight ``g`` (0 on padding packs).
        subset: long ``[G]`` ``Subset`` values.
    """

    rows: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    subset: torch.Tensor

    def __attrs_post_init__(self) -> None:
        rows = _check_tensor(self.rows, "BBoxGroups.rows", ndim=2, floating=False)
        target = _check_tensor(self.target, "BBoxGroups.target", ndim=2, floating=False)
        weight = _check_tensor(self.weight, "BBoxGroups.weight", ndim=1, floating=True)
        subset = _check_tensor(self.subset, "BBoxGroups.subset", ndim=1, floating=False)
        groups = rows.shape[0]
        if rows.shape != (groups, 4) or target.shape != (groups, 4):
            raise PipelineError(
                f"BBoxGroups: rows and target must both be [G, 4], got {tuple(rows.shape)} and "
                f"{tuple(target.shape)}"
            )
        if weight.shape != (groups,) or subset.shape != (groups,):
            raise PipelineError(
                f"BBoxGroups: weight and subset must be [G={groups}], got {tuple(weight.shape)} and "
                f"{tuple(subset.shape)}"
            )
        if len({t.device for t in (rows, target, weight, subset)}) != 1:
            raise PipelineError("BBoxGroups: rows, target, weight and subset must be on one device")
        if groups == 0:
            return
        bad = _first_true((target < 0) | (target >= NUM_BINS))
        if bad is not None:
            raise PipelineError(
                f"BBoxGroups: target bins must lie in 0..{NUM_BINS - 1}, group {bad // 4} has "
                f"{target.reshape(-1)[bad].item()}"
            )
        bad = _first_true(~torch.isfinite(weight) | (weight < 0))
        if bad is not None:
            raise PipelineError(
                f"BBoxGroups: weights must be finite and >= 0, group {bad} has {weight[bad].item()}"
            )
        bad = _first_true((subset < 0) | (subset > max(Subset)))
        if bad is not None:
            raise PipelineError(
                f"BBoxGroups: subset must be a Subset value, group {bad} has {subset[bad].item()}"
            )

    @classmethod
    def empty(cls, device: torch.device | str | None = None) -> BBoxGroups:
        """No groups (G = 0)."""
        return cls(
            rows=torch.zeros((0, 4), dtype=torch.long, device=device),
            target=torch.zeros((0, 4), dtype=torch.long, device=device),
            weight=torch.zeros(0, dtype=torch.float32, device=device),
            subset=torch.zeros(0, dtype=torch.long, device=device),
        )

    @property
    def n_groups(self) -> int:
        return int(self.rows.shape[0])

    @property
    def device(self) -> torch.device:
        return self.rows.device

    def to(self, device: torch.device | str) -> BBoxGroups:
        """The same groups on ``device``."""
        return BBoxGroups(
            rows=self.rows.to(device),
            target=self.target.to(device),
            weight=self.weight.to(device),
            subset=self.subset.to(device),
        )


class _RowLogSumExp(torch.autograd.Function):
    """``LSE(scale · z_r)`` per row, accumulated in ≥ float32 in row blocks.

    Only the input logits and the ``[N]`` result are saved; the backward recomputes the softmax
    block by block, so no extra ``[N, V]`` float tensor lives beyond the gradient itself.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        rows, vocab = logits.shape
        work_dtype = torch.promote_types(logits.dtype, torch.float32)
        block = max(1, _LSE_BLOCK_ELEMENTS // max(1, vocab))
        lse = torch.empty(rows, dtype=work_dtype, device=logits.device)
        for start in range(0, rows, block):
            chunk = logits[start : start + block].to(work_dtype)
            if scale != 1.0:
                chunk = chunk * scale
            lse[start : start + block] = torch.logsumexp(chunk, dim=-1)
        ctx.save_for_backward(logits, lse)
        ctx.scale = scale
        ctx.block = block
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_lse: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        logits, lse = ctx.saved_tensors
        scale, block = ctx.scale, ctx.block
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], block):
            stop = start + block
            probs = logits[start:stop].to(lse.dtype)
            if scale != 1.0:
                probs = probs * scale
            probs = (probs - lse[start:stop, None]).exp_()
            probs.mul_((grad_lse[start:stop] * scale)[:, None])
            grad[start:stop] = probs.to(grad.dtype)
        return grad, None


def _logsumexp_rows(logits: torch.Tensor, scale: float) -> torch.Tensor:
    return _RowLogSumExp.apply(logits, scale)


def _as_kind_set(value: Any, enum_type: type, what: str) -> frozenset[int] | None:
    if value is None:
        return None
    items: Iterable[Any] = (value,) if isinstance(value, (int, enum_type)) else value
    try:
        return frozenset(int(enum_type(item)) for item in items)
    except (TypeError, ValueError) as err:
        names = ", ".join(m.name for m in enum_type)
        raise PipelineError(
            f"mask({what}=...): expected {enum_type.__name__} value(s) ({names}), got {value!r}"
        ) from err


@attrs.frozen(eq=False)
class TeacherForcingContext:
    """Candidate target rows of one (micro-batch, context) with optional logits (spec 02 §2.3).

    Attributes:
        name: the context (``gt``, ``self_context``, ``rollout``).
        channel: ``A`` (gt, self_context) or ``B`` (rollout).
        trainer_variant: ``stage1``, ``stage2_two_channel`` or ``stage2_rollout_aligned``.
        logits: ``[N, V]`` floating, row r predicts ``target_ids[r]``; ``None`` = metadata-only.
        target_ids, token_type, span_kind, segment, object_index, slot, coord_target: long ``[N]``
            (``object_index``, ``slot`` and ``coord_target`` are −1 where not applicable;
            ``segment`` indexes ``segments``).
        row_mult: float ``[N]`` finite ≥ 0 (1.0; 0.0 on padding packs).
        bbox_groups: groups of 4 coord rows.
        coord_ids: long ``[1000]`` token id of each bin.
        coord_decode_mode: ``"exp"`` or ``"st"`` (spec 02 §2.7).
        segments: one ``SegmentInfo`` per packed segment.
    """

    name: ContextName = attrs.field(converter=ContextName)
    channel: Channel = attrs.field(converter=Channel)
    trainer_variant: str
    logits: torch.Tensor | None
    target_ids: torch.Tensor
    token_type: torch.Tensor
    span_kind: torch.Tensor
    segment: torch.Tensor
    object_index: torch.Tensor
    slot: torch.Tensor
    coord_target: torch.Tensor
    row_mult: torch.Tensor
    bbox_groups: BBoxGroups
    coord_ids: torch.Tensor
    coord_decode_mode: str
    segments: tuple[SegmentInfo, ...] = attrs.field(converter=tuple)
    _cache: dict[Hashable, Any] = attrs.field(init=False, factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        self._validate_labels()
        self._validate_rows()
        self._validate_groups()
        if self.logits is not None:
            self._validate_logits(self.logits)

    # ----------------------------------------------------------------------------------- validation
    def _where(self) -> str:
        return f"TeacherForcingContext[{self.name.value}]"

    def _validate_labels(self) -> None:
        allowed = TRAINER_VARIANT_CHANNELS.get(self.trainer_variant)
        if allowed is None:
            raise PipelineError(
                f"{self._where()}: trainer_variant must be one of {sorted(TRAINER_VARIANT_CHANNELS)}, "
                f"got {self.trainer_variant!r}"
            )
        if self.channel not in allowed:
            raise PipelineError(
                f"{self._where()}: trainer_variant {self.trainer_variant!r} has no channel "
                f"{self.channel.value}"
            )
        if _CONTEXT_CHANNEL[self.name] is not self.channel:
            raise PipelineError(
                f"{self._where()}: context {self.name.value!r} belongs to channel "
                f"{_CONTEXT_CHANNEL[self.name].value}, got {self.channel.value}"
            )
        if self.name is ContextName.SELF_CONTEXT and self.trainer_variant != "stage2_two_channel":
            raise PipelineError(f"{self._where()}: self_context exists only in stage2_two_channel")
        if self.coord_decode_mode not in DECODE_MODES:
            raise PipelineError(
                f"{self._where()}: coord_decode_mode must be one of {DECODE_MODES}, "
                f"got {self.coord_decode_mode!r}"
            )
        if self.trainer_variant == "stage1" and self.coord_decode_mode != "exp":
            raise PipelineError(f"{self._where()}: stage1 decodes coordinates with 'exp' (spec 02 §2.7)")
        for i, info in enumerate(self.segments):
            if not isinstance(info, SegmentInfo):
                raise PipelineError(
                    f"{self._where()}: segments[{i}] must be a SegmentInfo, got {type(info).__name__}"
                )

    def _validate_rows(self) -> None:
        where = self._where()
        vectors = {
            name: _check_tensor(getattr(self, name), f"{where}.{name}", ndim=1, floating=False)
            for name in (
                "target_ids",
                "token_type",
                "span_kind",
                "segment",
                "object_index",
                "slot",
                "coord_target",
            )
        }
        vectors["row_mult"] = _check_tensor(self.row_mult, f"{where}.row_mult", ndim=1, floating=True)
        n_rows = self.target_ids.shape[0]
        for name, tensor in vectors.items():
            if tensor.shape[0] != n_rows:
                raise PipelineError(f"{where}: {name} has {tensor.shape[0]} rows, target_ids has {n_rows}")
        coord_ids = _check_tensor(self.coord_ids, f"{where}.coord_ids", ndim=1, floating=False)
        if coord_ids.shape[0] != NUM_BINS:
            raise PipelineError(f"{where}: coord_ids must hold {NUM_BINS} ids, got {coord_ids.shape[0]}")
        devices = {t.device for t in vectors.values()} | {coord_ids.device, self.bbox_groups.device}
        if len(devices) != 1:
            raise PipelineError(
                f"{where}: row tensors, coord_ids and bbox_groups must share one device, got {devices}"
            )
        if int(coord_ids.min()) < 0 or torch.unique(coord_ids).numel() != NUM_BINS:
            raise PipelineError(f"{where}: coord_ids must be {NUM_BINS} distinct non-negative ids")

        def fail(rule: str, mask: torch.Tensor) -> None:
            row = _first_true(mask)
            if row is not None:
                raise PipelineError(
                    f"{where}: row {row} (segment {int(self.segment[row])}, token_type "
                    f"{int(self.token_type[row])}, span_kind {int(self.span_kind[row])}) violates: {rule}"
                )

        token_type, span_kind = self.token_type, self.span_kind
        fail("target_ids must be >= 0", self.target_ids < 0)
        fail(
            f"token_type must be a TokenType value (0..{int(max(TokenType))})",
            (token_type < 0) | (token_type > max(TokenType)),
        )
        allowed = torch.tensor(
            sorted(ALLOWED_SPAN_KINDS[self.name]), dtype=torch.long, device=span_kind.device
        )
        fail(
            f"span_kind must be one of {sorted(k.name for k in ALLOWED_SPAN_KINDS[self.name])} in context "
            f"{self.name.value!r} (prefix_fp rows are never candidate rows)",
            ~torch.isin(span_kind, allowed),
        )
        is_coord = token_type == int(TokenType.COORD)
        fail(
            "coord rows are exactly the rows whose target id is a coord id (D16)",
            is_coord != torch.isin(self.target_ids, coord_ids),
        )
        fail(
            "token_type EOS and span_kind EOS must coincide",
            (token_type == int(TokenType.EOS)) != (span_kind == int(SpanKind.EOS)),
        )
        fail(
            f"coord_target must be -1 or a bin in 0..{NUM_BINS - 1}",
            (self.coord_target < -1) | (self.coord_target >= NUM_BINS),
        )
        fail("only coord rows may have a coord_target", (self.coord_target >= 0) & ~is_coord)
        fail(
            "slot must be >= -1, and >= 0 only on coord rows",
            (self.slot < -1) | ((self.slot >= 0) & ~is_coord),
        )
        fail("object_index must be >= -1", self.object_index < -1)
        fail(
            f"segment must index segments (0..{len(self.segments) - 1})",
            (self.segment < 0) | (self.segment >= len(self.segments)),
        )
        fail("row_mult must be finite and >= 0", ~torch.isfinite(self.row_mult) | (self.row_mult < 0))

    def _validate_groups(self) -> None:
        groups = self.bbox_groups
        if not isinstance(groups, BBoxGroups):
            raise PipelineError(
                f"{self._where()}: bbox_groups must be a BBoxGroups, got {type(groups).__name__}"
            )
        if groups.n_groups == 0:
            return
        rows = groups.rows
        n_rows = self.n_rows
        bad = _first_true((rows < 0) | (rows >= n_rows))
        if bad is not None:
            raise PipelineError(
                f"{self._where()}: bbox group {bad // 4} points at row {int(rows.reshape(-1)[bad])}, "
                f"outside [0, {n_rows})"
            )
        bad = _first_true(~self.coord_rows[rows])
        if bad is not None:
            raise PipelineError(
                f"{self._where()}: bbox group {bad // 4} points at row {int(rows.reshape(-1)[bad])}, "
                "which is not a coord row with a target"
            )
        if torch.unique(rows).numel() != rows.numel():
            raise PipelineError(f"{self._where()}: a coord row belongs to more than one bbox group")
        group_segments = self.segment[rows]
        bad = _first_true((group_segments != group_segments[:, :1]).any(dim=1))
        if bad is not None:
            raise PipelineError(
                f"{self._where()}: bbox group {bad} spans segments {group_segments[bad].tolist()}"
            )

    def _validate_logits(self, logits: object) -> torch.Tensor:
        where = self._where()
        if not isinstance(logits, torch.Tensor):
            raise PipelineError(f"{where}: logits must be a torch.Tensor, got {type(logits).__name__}")
        if logits.ndim != 2 or logits.shape[0] != self.n_rows:
            raise PipelineError(
                f"{where}: logits must have shape [N={self.n_rows}, V], got {tuple(logits.shape)}"
            )
        if not logits.is_floating_point():
            raise PipelineError(f"{where}: logits must be floating point, got {logits.dtype}")
        vocab = logits.shape[1]
        max_coord_id = int(self.coord_ids.max())
        if vocab <= max_coord_id:
            raise PipelineError(
                f"{where}: logits have V={vocab} columns but the largest coord id is {max_coord_id}"
            )
        if self.n_rows and int(self.target_ids.max()) >= vocab:
            raise PipelineError(
                f"{where}: logits have V={vocab} columns but a target id is {int(self.target_ids.max())}"
            )
        if logits.device != self.target_ids.device:
            raise PipelineError(
                f"{where}: logits are on {logits.device}, the rows on {self.target_ids.device}"
            )
        return logits

    # ------------------------------------------------------------------------------------ plumbing
    @property
    def is_meta(self) -> bool:
        """True for a metadata-only context (``logits is None``): masks work, logit views raise."""
        return self.logits is None

    @property
    def n_rows(self) -> int:
        return int(self.target_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.target_ids.device

    def with_logits(self, logits: torch.Tensor) -> TeacherForcingContext:
        """A new context with ``logits`` ``[N, V]`` (``V > max(coord_ids)``); metadata follow its device."""
        if not isinstance(logits, torch.Tensor):
            raise PipelineError(
                f"{self._where()}: logits must be a torch.Tensor, got {type(logits).__name__}"
            )
        source = self if logits.device == self.device else self.to(logits.device)
        return attrs.evolve(source, logits=logits)

    def without_logits(self) -> TeacherForcingContext:
        """The metadata-only view of this context."""
        return attrs.evolve(self, logits=None)

    def to(self, device: torch.device | str) -> TeacherForcingContext:
        """The same context with every tensor on ``device``."""
        moved = {
            name: getattr(self, name).to(device)
            for name in (
                "target_ids",
                "token_type",
                "span_kind",
                "segment",
                "object_index",
                "slot",
                "coord_target",
                "row_mult",
                "coord_ids",
            )
        }
        logits = None if self.logits is None else self.logits.to(device)
        return attrs.evolve(self, logits=logits, bbox_groups=self.bbox_groups.to(device), **moved)

    def _memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _memo_logits(self, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        logits = self._require_logits(key)
        tracking = torch.is_grad_enabled() and logits.requires_grad
        if (key, tracking) not in self._cache:
            tracked = self._cache.get((key, True))
            if not tracking and tracked is not None:
                self._cache[(key, False)] = tracked.detach()
            else:
                self._cache[(key, tracking)] = compute()
        return self._cache[(key, tracking)]

    def _require_logits(self, view: Hashable) -> torch.Tensor:
        if self.logits is None:
            raise PipelineError(
                f"{self._where()}: view {view!r} needs logits but this context is metadata-only "
                "(logits=None); build the full context with ctx.with_logits(logits) first"
            )
        return self.logits

    # --------------------------------------------------------------------------------- metadata views
    def mask(self, *, type: Any = None, span: Any = None) -> torch.Tensor:  # noqa: A002 - contract name
        """Bool ``[N]``: rows whose token type is in ``type`` and span kind is in ``span``.

        Each filter is a ``TokenType`` / ``SpanKind``, an iterable of them, or ``None`` (no filter).
        """
        types = _as_kind_set(type, TokenType, "type")
        spans = _as_kind_set(span, SpanKind, "span")

        def compute() -> torch.Tensor:
            keep = torch.ones(self.n_rows, dtype=torch.bool, device=self.device)
            if types is not None:
                keep &= torch.isin(
                    self.token_type, torch.tensor(sorted(types), dtype=torch.long, device=self.device)
                )
            if spans is not None:
                keep &= torch.isin(
                    self.span_kind, torch.tensor(sorted(spans), dtype=torch.long, device=self.device)
                )
            return keep

        return self._memo(("mask", types, spans), compute)

    @property
    def coord_rows(self) -> torch.Tensor:
        """Bool ``[N]``: coord rows with a target (``token_type == COORD`` and ``coord_target ≥ 0``)."""
        return self._memo(
            "coord_rows", lambda: (self.token_type == int(TokenType.COORD)) & (self.coord_target >= 0)
        )

    @property
    def coord_row_index(self) -> torch.Tensor:
        """Long ``[N_c]``: row indices of ``coord_rows``, ascending."""
        return self._memo("coord_row_index", lambda: torch.nonzero(self.coord_rows).reshape(-1))

    @property
    def coord_targets(self) -> torch.Tensor:
        """Long ``[N_c]``: target bins of the coord rows."""
        return self._memo("coord_targets", lambda: self.coord_target[self.coord_row_index])

    @property
    def coord_row_weight(self) -> torch.Tensor:
        """Float ``[N_c]``: weight of each coord row (spec 02 §2.6).

        Its bbox group's weight when it is in a group, else its ``row_mult``; both are 0 on padding.
        """

        def compute() -> torch.Tensor:
            weight = self.row_mult.to(torch.float32).clone()
            groups = self.bbox_groups
            if groups.n_groups:
                weight[groups.rows] = groups.weight.to(torch.float32)[:, None].expand(-1, 4)
            return weight[self.coord_row_index]

        return self._memo("coord_row_weight", compute)

    @property
    def group_coord_index(self) -> torch.Tensor:
        """Long ``[G, 4]``: each bbox group's rows as positions in the coord rows (0..N_c−1)."""
        return self._memo(
            "group_coord_index",
            lambda: (torch.cumsum(self.coord_rows.to(torch.long), dim=0) - 1)[self.bbox_groups.rows],
        )

    @property
    def target_boxes(self) -> torch.Tensor:
        """Float32 ``[G, 4]``: the groups' target boxes ``bins / 999`` (not canonicalized)."""
        return self._memo("target_boxes", lambda: self.bbox_groups.target.to(torch.float32) / (NUM_BINS - 1))

    # ----------------------------------------------------------------------------------- logit views
    def lse(self, temperature: float = 1.0) -> torch.Tensor:
        """``[N]`` ``LSE(z_r / τ)`` over the full vocabulary, accumulated in ≥ float32.

        A NaN result (a NaN logit in the row) raises ``PipelineError`` (D45).
        """
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise PipelineError(
                f"{self._where()}: temperature must be a finite number > 0, got {temperature!r}"
            )
        tau = float(temperature)

        def compute() -> torch.Tensor:
            result = _logsumexp_rows(self.logits, 1.0 / tau)
            row = _first_true(torch.isnan(result))
            if row is not None:
                raise PipelineError(
                    f"{self._where()}: NaN logit in row {row} (segment {int(self.segment[row])}) (D45)"
                )
            return result

        return self._memo_logits(("lse", tau), compute)

    @property
    def full_lse(self) -> torch.Tensor:
        """``[N]`` logsumexp over the vocabulary at τ = 1; shared by token_ce and coord_reg."""
        return self.lse(1.0)

    @property
    def coord_logits(self) -> torch.Tensor:
        """``[N_c, 1000]`` ``logits[coord_rows][:, coord_ids]`` in ≥ float32, clamped to ±1e4 (D45).

        A NaN raises ``PipelineError``. Gathered in one indexing op: no ``[N_c, V]`` intermediate.
        """

        def compute() -> torch.Tensor:
            logits = self.logits
            rows = self.coord_row_index
            sliced = logits[rows[:, None], self.coord_ids[None, :]]
            sliced = sliced.to(torch.promote_types(logits.dtype, torch.float32))
            bad = _first_true(torch.isnan(sliced).any(dim=1))
            if bad is not None:
                row = int(rows[bad])
                raise PipelineError(
                    f"{self._where()}: NaN coord logit in row {row} (segment {int(self.segment[row])}) (D45)"
                )
            return sliced.clamp(-COORD_LOGIT_CLAMP, COORD_LOGIT_CLAMP)

        return self._memo_logits("coord_logits", compute)

    @property
    def coord_log_probs(self) -> torch.Tensor:
        """``[N_c, 1000]`` ``log_softmax`` of ``coord_logits`` (τ = 1)."""
        return self._memo_logits("coord_log_probs", lambda: torch.log_softmax(self.coord_logits, dim=-1))

    @property
    def coord_probs(self) -> torch.Tensor:
        """``[N_c, 1000]`` ``softmax`` of ``coord_logits`` (τ = 1)."""
        return self._memo_logits("coord_probs", lambda: self.coord_log_probs.exp())

    def decoded_coords(self, mode: str | None = None) -> torch.Tensor:
        """``[N_c]`` decoded coordinates in [0, 1]; ``mode`` defaults to ``coord_decode_mode``."""
        chosen = self.coord_decode_mode if mode is None else mode
        if chosen not in DECODE_MODES:
            raise PipelineError(f"{self._where()}: decode mode must be one of {DECODE_MODES}, got {chosen!r}")
        return self._memo_logits(("decoded_coords", chosen), lambda: decode_coords(self.coord_logits, chosen))

    @property
    def decoded_boxes(self) -> torch.Tensor:
        """``[G, 4]`` decoded (x1, y1, x2, y2) of the bbox groups with ``coord_decode_mode``.

        Raw decoded order, not canonicalized (bbox_geo canonicalizes, spec 02 §2.8).
        """
        return self._memo_logits("decoded_boxes", lambda: self.decoded_coords()[self.group_coord_index])


def _context_by_name(
    contexts: Mapping[Any, TeacherForcingContext],
) -> Mapping[ContextName, TeacherForcingContext]:
    checked: dict[ContextName, TeacherForcingContext] = {}
    for key, ctx in contexts.items():
        name = ContextName(key)
        if not isinstance(ctx, TeacherForcingContext):
            raise PipelineError(f"ContextSet: contexts[{name.value!r}] must be a TeacherForcingContext")
        if ctx.name is not name:
            raise PipelineError(f"ContextSet: contexts[{name.value!r}] holds a {ctx.name.value!r} context")
        checked[name] = ctx
    return MappingProxyType(checked)


@attrs.frozen(eq=False)
class ContextSet:
    """The contexts of one micro-batch as a module receives them, with the spec 02 §2.2 routing.

    Attributes:
        channel: the step's channel.
        contexts: every context of the micro-batch by name.
        text_context: read by token_ce (struct, desc, eos) and coord_reg's ``text_gate``.
        coord_context: read by coord_reg's coord-row terms and bbox_geo.
    """

    channel: Channel = attrs.field(converter=Channel)
    contexts: Mapping[ContextName, TeacherForcingContext] = attrs.field(converter=_context_by_name)
    text_context: TeacherForcingContext
    coord_context: TeacherForcingContext

    def __attrs_post_init__(self) -> None:
        if not self.contexts:
            raise PipelineError("ContextSet: at least one context is required")
        members = {id(ctx) for ctx in self.contexts.values()}
        for role in ("text_context", "coord_context"):
            if id(getattr(self, role)) not in members:
                raise PipelineError(f"ContextSet: {role} must be one of the contexts")
        variants = {ctx.trainer_variant for ctx in self.contexts.values()}
        if len(variants) != 1:
            raise PipelineError(f"ContextSet: contexts disagree on trainer_variant: {sorted(variants)}")
        for name, ctx in self.contexts.items():
            if ctx.channel is not self.channel:
                raise PipelineError(
                    f"ContextSet: context {name.value!r} is on channel {ctx.channel.value}, the set on "
                    f"{self.channel.value}"
                )

    @classmethod
    def for_channel(
        cls,
        channel: Channel | str,
        contexts: Mapping[ContextName | str, TeacherForcingContext],
        n_softctx_iter: int = 1,
    ) -> ContextSet:
        """Route ``contexts`` per spec 02 §2.2.

        Channel A: ``gt`` is the text context; the coord context is ``gt`` for ``n_softctx_iter == 1``
        and ``self_context`` for ``n_softctx_iter ≥ 2`` (which must then be present, and absent
        otherwise). Channel B: ``rollout`` is both.
        """
        chosen = Channel(channel)
        by_name = _context_by_name(contexts)
        if not _is_int(n_softctx_iter) or n_softctx_iter < 1:
            raise PipelineError(
                f"ContextSet.for_channel: n_softctx_iter must be an int >= 1, got {n_softctx_iter!r}"
            )
        if chosen is Channel.A:
            expected = {ContextName.GT} | ({ContextName.SELF_CONTEXT} if n_softctx_iter >= 2 else set())
            coord_name = ContextName.SELF_CONTEXT if n_softctx_iter >= 2 else ContextName.GT
            text_name = ContextName.GT
        else:
            expected = {ContextName.ROLLOUT}
            coord_name = text_name = ContextName.ROLLOUT
        if set(by_name) != expected:
            raise PipelineError(
                f"ContextSet.for_channel: channel {chosen.value} with n_softctx_iter={n_softctx_iter} needs "
                f"contexts {sorted(n.value for n in expected)}, got {sorted(n.value for n in by_name)}"
            )
        return cls(
            channel=chosen,
            contexts=by_name,
            text_context=by_name[text_name],
            coord_context=by_name[coord_name],
        )

    def __getitem__(self, name: ContextName | str) -> TeacherForcingContext:
        key = ContextName(name)
        if key not in self.contexts:
            raise PipelineError(
                f"ContextSet: no {key.value!r} context on channel {self.channel.value} "
                f"(have {sorted(n.value for n in self.contexts)})"
            )
        return self.contexts[key]

    def get(self, name: ContextName | str) -> TeacherForcingContext | None:
        """The context called ``name``, or None when the set has none."""
        return self.contexts.get(ContextName(name))

    @property
    def is_meta(self) -> bool:
        """True when any context is metadata-only."""
        return any(ctx.is_meta for ctx in self.contexts.values())

    def with_logits(self, logits: Mapping[ContextName | str, torch.Tensor]) -> ContextSet:
        """The same routing with every context given its logits (``logits`` names each context once)."""
        given = {ContextName(name): value for name, value in logits.items()}
        if set(given) != set(self.contexts):
            raise PipelineError(
                f"ContextSet.with_logits: expected logits for {sorted(n.value for n in self.contexts)}, "
                f"got {sorted(n.value for n in given)}"
            )
        full = {name: ctx.with_logits(given[name]) for name, ctx in self.contexts.items()}
        return ContextSet(
            channel=self.channel,
            contexts=full,
            text_context=full[self.text_context.name],
            coord_context=full[self.coord_context.name],
        )
