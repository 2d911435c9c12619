"""Per-sample target rows and the one place where packing and the causal shift are resolved.

``SampleRows`` holds one sample's assistant targets in sample-local coordinates (token positions
inside the sample's own sequence). ``pack_rows`` concatenates several samples laid out at given
offsets in one packed sequence into the flat rows of a ``TeacherForcingContext`` and returns the
sequence positions whose hidden states predict them (``offset + position − 1``: the causal shift is
applied here, once). Rows of excluded span kinds (``prefix_fp`` by default) are dropped: they are
never candidate rows (spec 02 §2.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch

from coordexp.core.context import BBoxGroups, SegmentInfo, TeacherForcingContext
from coordexp.core.errors import PipelineError
from coordexp.core.geometry import NUM_BINS
from coordexp.core.tokens import Channel, ContextName, SpanKind, Subset, TokenType

__all__ = ["SampleRows", "pack_rows"]

_ROW_FIELDS = ("positions", "target_ids", "token_type", "span_kind", "object_index", "slot", "coord_target")


def _frozen_array(value: object, what: str, *, ndim: int, integer: bool) -> np.ndarray:
    array = np.asarray(value)
    if array.size == 0:
        array = array.reshape((0,) * (ndim - 1) + ((0,) if ndim == 1 else (4,)))
    if array.ndim != ndim:
        raise PipelineError(f"{what}: expected {ndim} dimension(s), got shape {array.shape}")
    if array.size and integer and not np.issubdtype(array.dtype, np.integer):
        raise PipelineError(f"{what}: expected integers, got dtype {array.dtype}")
    if (
        array.size
        and not integer
        and not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer))
    ):
        raise PipelineError(f"{what}: expected numbers, got dtype {array.dtype}")
    frozen = np.array(array, dtype=np.int64 if integer else np.float32, copy=True)
    frozen.flags.writeable = False
    return frozen


@attrs.frozen(eq=False)
class SampleRows:
    """One sample's assistant target rows, in sample-local coordinates.

    Row ``i`` is the target token at ``positions[i]`` of the sample's token sequence (prompt +
    assistant); it is predicted by the hidden state at ``positions[i] − 1``. Rows of every span
    kind may be present (``prefix_fp`` included); ``pack_rows`` drops the excluded ones.

    Attributes:
        segment: the sample's ``SegmentInfo`` (its ``length`` and ``prompt_len`` bound the positions).
        positions: int64 ``[n]`` strictly increasing, in ``[max(1, prompt_len), length)``.
        target_ids: int64 ``[n]`` token ids ≥ 0.
        token_type: int64 ``[n]`` ``TokenType`` values.
        span_kind: int64 ``[n]`` ``SpanKind`` values, never ``PROMPT``.
        object_index: int64 ``[n]`` object of the row or −1 (default all −1).
        slot: int64 ``[n]`` coord slot within its object or −1; ≥ 0 only on coord rows (default −1).
        coord_target: int64 ``[n]`` target bin or −1; ≥ 0 only on coord rows (default −1).
        group_rows: int64 ``[G, 4]`` local row indices (x1, y1, x2, y2) of each bbox group; distinct
            coord rows with a target.
        group_target: int64 ``[G, 4]`` target bins 0..999.
        group_weight: float32 ``[G]`` finite ≥ 0 (default 1.0).
        group_subset: int64 ``[G]`` ``Subset`` values (default ``NONE``).
    """

    segment: SegmentInfo
    positions: np.ndarray
    target_ids: np.ndarray
    token_type: np.ndarray
    span_kind: np.ndarray
    object_index: np.ndarray | None = None
    slot: np.ndarray | None = None
    coord_target: np.ndarray | None = None
    group_rows: np.ndarray | None = None
    group_target: np.ndarray | None = None
    group_weight: np.ndarray | None = None
    group_subset: np.ndarray | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.segment, SegmentInfo):
            raise PipelineError(
                f"SampleRows.segment must be a SegmentInfo, got {type(self.segment).__name__}"
            )
        where = f"SampleRows[{self.segment.sample_id!r}]"
        n_rows = np.asarray(self.positions).shape[0] if np.ndim(self.positions) else -1
        n_groups = np.shape(self.group_rows)[0] if np.ndim(self.group_rows) >= 1 else 0
        defaults = {
            "object_index": np.full(max(n_rows, 0), -1),
            "slot": np.full(max(n_rows, 0), -1),
            "coord_target": np.full(max(n_rows, 0), -1),
            "group_rows": np.zeros((0, 4), dtype=np.int64),
            "group_target": np.zeros((0, 4), dtype=np.int64),
            "group_weight": np.ones(n_groups),
            "group_subset": np.full(n_groups, int(Subset.NONE)),
        }
        for name in _ROW_FIELDS + ("group_rows", "group_target", "group_weight", "group_subset"):
            value = getattr(self, name)
            if value is None:
                if name not in defaults:
                    raise PipelineError(f"{where}: {name} is required")
                value = defaults[name]
            ndim = 2 if name in ("group_rows", "group_target") else 1
            frozen = _frozen_array(value, f"{where}.{name}", ndim=ndim, integer=name != "group_weight")
            object.__setattr__(self, name, frozen)
        self._validate_rows(where)
        self._validate_groups(where)

    def _validate_rows(self, where: str) -> None:
        n_rows = self.positions.shape[0]
        for name in _ROW_FIELDS:
            if getattr(self, name).shape[0] != n_rows:
                raise PipelineError(
                    f"{where}: {name} has {getattr(self, name).shape[0]} rows, positions has {n_rows}"
                )

        def fail(rule: str, mask: np.ndarray) -> None:
            bad = np.flatnonzero(mask)
            if bad.size:
                i = int(bad[0])
                raise PipelineError(f"{where}: row {i} (position {int(self.positions[i])}) violates: {rule}")

        first_target = max(1, self.segment.prompt_len)
        fail("positions must strictly increase", np.diff(self.positions, prepend=-1) <= 0)
        fail(
            f"positions must lie in [max(1, prompt_len)={first_target}, length={self.segment.length})",
            (self.positions < first_target) | (self.positions >= self.segment.length),
        )
        fail("target_ids must be >= 0", self.target_ids < 0)
        fail(
            "token_type must be a TokenType value", (self.token_type < 0) | (self.token_type > max(TokenType))
        )
        fail(
            "span_kind must be a SpanKind value other than PROMPT",
            (self.span_kind <= int(SpanKind.PROMPT)) | (self.span_kind > max(SpanKind)),
        )
        is_coord = self.token_type == int(TokenType.COORD)
        fail(
            "token_type EOS and span_kind EOS must coincide",
            (self.token_type == int(TokenType.EOS)) != (self.span_kind == int(SpanKind.EOS)),
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

    def _validate_groups(self, where: str) -> None:
        n_groups = self.group_rows.shape[0]
        if self.group_rows.shape != (n_groups, 4) or self.group_target.shape != (n_groups, 4):
            raise PipelineError(
                f"{where}: group_rows and group_target must be [G, 4], got {self.group_rows.shape} and "
                f"{self.group_target.shape}"
            )
        if self.group_weight.shape != (n_groups,) or self.group_subset.shape != (n_groups,):
            raise PipelineError(
                f"{where}: group_weight and group_subset must be [G={n_groups}], "
                f"got {self.group_weight.shape} "
                f"and {self.group_subset.shape}"
            )
        if n_groups == 0:
            return

        def fail(rule: str, mask: np.ndarray) -> None:
            bad = np.flatnonzero(mask.reshape(n_groups, -1).any(axis=1))
            if bad.size:
                raise PipelineError(f"{where}: bbox group {int(bad[0])} violates: {rule}")

        rows = self.group_rows
        fail(f"rows must index the sample's rows [0, {self.n_rows})", (rows < 0) | (rows >= self.n_rows))
        is_target_coord = (self.token_type == int(TokenType.COORD)) & (self.coord_target >= 0)
        fail("rows must be coord rows with a coord_target", ~is_target_coord[rows])
        if np.unique(rows).size != rows.size:
            raise PipelineError(f"{where}: a coord row belongs to more than one bbox group (or twice to one)")
        fail(
            f"target bins must lie in 0..{NUM_BINS - 1}",
            (self.group_target < 0) | (self.group_target >= NUM_BINS),
        )
        fail("weight must be finite and >= 0", ~np.isfinite(self.group_weight) | (self.group_weight < 0))
        fail("subset must be a Subset value", (self.group_subset < 0) | (self.group_subset > max(Subset)))

    @property
    def n_rows(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.group_rows.shape[0])

    @property
    def length(self) -> int:
        """Tokens in the sample's sequence (prompt + assistant)."""
        return self.segment.length

    @property
    def prompt_len(self) -> int:
        return self.segment.prompt_len


def _as_coord_ids(
    coord_ids: Sequence[int] | np.ndarray | torch.Tensor, device: torch.device | str | None
) -> torch.Tensor:
    if isinstance(coord_ids, torch.Tensor):
        if coord_ids.is_floating_point():
            raise PipelineError(f"coord_ids must be integer ids, got {coord_ids.dtype}")
        return coord_ids.to(device=device, dtype=torch.long)
    array = np.asarray(coord_ids)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise PipelineError(f"coord_ids must be integer ids, got dtype {array.dtype}")
    return torch.as_tensor(array.astype(np.int64), device=device)


def pack_rows(
    samples: Sequence[SampleRows],
    offsets: Sequence[int],
    *,
    context: ContextName | str,
    channel: Channel | str,
    trainer_variant: str,
    coord_ids: Sequence[int] | np.ndarray | torch.Tensor,
    coord_decode_mode: str,
    row_mult: Sequence[float] | None = None,
    exclude_span_kinds: Sequence[SpanKind] = (SpanKind.PREFIX_FP,),
    device: torch.device | str | None = None,
) -> tuple[TeacherForcingContext, torch.Tensor]:
    """Flatten packed samples into a metadata-only context and its prediction positions.

    Args:
        samples: the packed samples; segment ``i`` of the context is ``samples[i]``.
        offsets: start of each sample in the packed sequence; the ``[offset, offset + length)``
            ranges must not overlap (any order).
        context, channel, trainer_variant, coord_ids, coord_decode_mode: copied onto the context.
        row_mult: per-sample row multiplier (default 1.0; 0.0 for padding packs). It becomes the
            rows' ``row_mult`` and multiplies the sample's bbox group weights.
        exclude_span_kinds: span kinds whose rows are dropped (``prefix_fp``: never candidates).
        device: where the tensors live (default CPU).

    Returns:
        ``(ctx, predict_positions)``: ``ctx`` has ``logits=None`` and N rows in sample order;
        ``predict_positions`` long ``[N]`` = ``offset + position − 1`` indexes the packed sequence's
        hidden states so that ``ctx.with_logits(lm_head(hidden[predict_positions]))`` is the full
        context. Every predict position lies in its own segment ``[offset, offset + length − 1)``.
    """
    n_samples = len(samples)
    if n_samples == 0:
        raise PipelineError("pack_rows: at least one sample is required")
    if len(offsets) != n_samples:
        raise PipelineError(f"pack_rows: got {n_samples} samples but {len(offsets)} offsets")
    for i, sample in enumerate(samples):
        if not isinstance(sample, SampleRows):
            raise PipelineError(f"pack_rows: samples[{i}] must be a SampleRows, got {type(sample).__name__}")
    starts = np.asarray(offsets)
    if starts.ndim != 1 or (starts.size and not np.issubdtype(starts.dtype, np.integer)):
        raise PipelineError(f"pack_rows: offsets must be a sequence of ints, got {offsets!r}")
    starts = starts.astype(np.int64)
    lengths = np.array([sample.length for sample in samples], dtype=np.int64)
    if starts.min() < 0:
        raise PipelineError(f"pack_rows: offsets must be >= 0, got {starts.tolist()}")
    order = np.argsort(starts, kind="stable")
    overlap = np.flatnonzero(starts[order][1:] < (starts + lengths)[order][:-1])
    if overlap.size:
        a, b = int(order[overlap[0]]), int(order[overlap[0] + 1])
        raise PipelineError(
            f"pack_rows: sample {a} occupies [{int(starts[a])}, {int(starts[a] + lengths[a])}) and overlaps "
            f"sample {b} starting at {int(starts[b])}"
        )
    if row_mult is None:
        sample_mult = np.ones(n_samples, dtype=np.float32)
    else:
        sample_mult = np.asarray(row_mult, dtype=np.float64)
        if (
            sample_mult.shape != (n_samples,)
            or not np.all(np.isfinite(sample_mult))
            or np.any(sample_mult < 0)
        ):
            raise PipelineError(
                f"pack_rows: row_mult must hold {n_samples} finite values >= 0, got {list(row_mult)!r}"
            )
        sample_mult = sample_mult.astype(np.float32)

    row_counts = np.array([sample.n_rows for sample in samples], dtype=np.int64)
    group_counts = np.array([sample.n_groups for sample in samples], dtype=np.int64)
    row_base = np.concatenate(([0], np.cumsum(row_counts)[:-1]))
    row_sample = np.repeat(np.arange(n_samples, dtype=np.int64), row_counts)
    group_sample = np.repeat(np.arange(n_samples, dtype=np.int64), group_counts)
    columns = {name: np.concatenate([getattr(sample, name) for sample in samples]) for name in _ROW_FIELDS}
    try:
        excluded = np.array(sorted(int(SpanKind(kind)) for kind in exclude_span_kinds), dtype=np.int64)
    except ValueError as err:
        raise PipelineError(
            f"pack_rows: exclude_span_kinds must hold SpanKind values, got {exclude_span_kinds!r}"
        ) from err
    keep = ~np.isin(columns["span_kind"], excluded)
    new_index = np.cumsum(keep) - 1

    global_group_rows = (
        np.concatenate([sample.group_rows for sample in samples]) + row_base[group_sample][:, None]
    )
    dropped = np.flatnonzero(~keep[global_group_rows].all(axis=1))
    if dropped.size:
        g = int(dropped[0])
        s = int(group_sample[g])
        raise PipelineError(
            f"pack_rows: bbox group {g - int(np.sum(group_counts[:s]))} of sample "
            f"{samples[s].segment.sample_id!r} "
            f"points at a row of an excluded span kind {[SpanKind(k).name for k in excluded]}"
        )
    group_weight = np.concatenate([sample.group_weight for sample in samples]) * sample_mult[group_sample]

    def tensor(values: np.ndarray, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(values), dtype=dtype, device=device)

    groups = BBoxGroups(
        rows=tensor(new_index[global_group_rows].reshape(-1, 4)),
        target=tensor(np.concatenate([sample.group_target for sample in samples]).reshape(-1, 4)),
        weight=tensor(group_weight, torch.float32),
        subset=tensor(np.concatenate([sample.group_subset for sample in samples])),
    )
    ctx = TeacherForcingContext(
        name=context,
        channel=channel,
        trainer_variant=trainer_variant,
        logits=None,
        target_ids=tensor(columns["target_ids"][keep]),
        token_type=tensor(columns["token_type"][keep]),
        span_kind=tensor(columns["span_kind"][keep]),
        segment=tensor(row_sample[keep]),
        object_index=tensor(columns["object_index"][keep]),
        slot=tensor(columns["slot"][keep]),
        coord_target=tensor(columns["coord_target"][keep]),
        row_mult=tensor(sample_mult[row_sample][keep], torch.float32),
        bbox_groups=groups,
        coord_ids=_as_coord_ids(coord_ids, device),
        coord_decode_mode=coord_decode_mode,
        segments=tuple(sample.segment for sample in samples),
    )
    predict_positions = tensor((starts[row_sample] + columns["positions"] - 1)[keep])
    return ctx, predict_positions
