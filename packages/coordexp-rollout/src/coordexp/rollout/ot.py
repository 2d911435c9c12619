"""Poly targets by Sinkhorn OT and barycentric projection (spec 03 §3.5, D18; invariant E9).

For a matched pair with a poly on either side, the prediction's points (poly vertices, or a bbox's
four corners (x1,y1),(x2,y1),(x2,y2),(x1,y2)) are transported onto the GT's points:

* cost ``C = cdist(pred, gt)`` in bins (``l2`` Euclidean, or ``l1`` city-block), marginals
  ``a = 1/N``, ``b = 1/M``;
* ``K = exp(clamp(−C/ε, −50, 50))`` and, from ``v = 1``, ``iters`` rounds of ``u = a/(Kv)``,
  ``v = b/(Kᵀu)`` (a zero denominator is replaced by 1); plan ``T = diag(u) K diag(v)``;
* barycentric projection ``ĝ_i = Σ_j T_ij g_j / Σ_j T_ij``, rounded half-up and clamped to 0..999.

**Near-ties.** Once the −50 clamp binds (small ε, far points) a plan row is uniform up to terms
of e⁻⁵⁰, so ``ĝ`` can sit within ~1e-13 bins of a half-bin; float64 rounding of the plan then
decides the rounding, and implementations that order their float operations differently (POT's
``1/((K/a)·v)`` and BLAS ``dot`` versus this batch's ``a/(K·v)`` and ``matmul``) can round such a
value to different bins. Away from these near-ties the targets are identical to the POT-based
implementation this replaced.

**Why not POT here.** The problems are tiny (3–12 points a side, 30 rounds) and a rollout has
a dozen or more of them, so the cost is per-call overhead, not arithmetic: POT's
``sinkhorn_knopp`` (backend dispatch, argument checks and an error test every round) took
0.53 ms per pair, 6.3 ms for the 12 poly pairs of a 30-object ``bench/rollout_prep.py`` rollout —
most of host-side rollout preparation (87 samples/s with POT). POT has no fixed-iteration batched
mode. :func:`sinkhorn_plans` runs the spec iteration directly in NumPy on a *batch* of problems:
4 array operations per round for the whole batch, 0.25 ms for all 12 pairs of a sample (measured
on the bench's samples, one loaded core; the targets of all 1197 pairs were identical to POT's).
It is the spec's own algorithm, not an approximation of POT's; ``test_rollout_ot.py`` checks it
against a line-by-line transcription of the spec and against POT's converged ``sinkhorn`` plan on
well-conditioned inputs.

**Batching without cross-talk.** Problems are zero-padded to sizes rounded up to
:data:`PAD_MULTIPLE` and stacked. The kernel is block-diagonal: real↔padding entries are 0 and
the padding↔padding block is 1 with marginal 1, so the padding is a separate, well-posed dummy
problem that never divides by zero and adds exact zeros to the real sums. Because the padded size
depends only on the pair itself, a pair's arithmetic (and so its result, to the last bit) does not
depend on which other pairs share its batch; :func:`ot_targets` and :func:`ot_targets_many` agree
exactly. The masks, marginals and gather steps of a batch depend only on the slot and the problem
sizes and are cached (:func:`_group_layout`).

**Why one BLAS ``matmul`` per half-round.** Each round is a batched ``matmul`` (one ``gemv`` per
problem inside one NumPy call) and an elementwise division. Measured alternatives cost more on
the bench's batches (12 problems in one 8×8 slot, instructions per half-round): the ``matmul`` is
~18k; ``c_einsum`` ~19k, ``vecdot`` ~26k, a broadcast product plus a reduction ~25k, and a
reduction-free elementwise formulation (product, then a fixed halving tree of additions) needs
~5 NumPy calls at ≥3.5k each. NumPy's per-call dispatch, not BLAS's per-problem interface, sets
the floor, and grouping by identical shape cannot reduce the call count further: the bench's
pairs already share one slot.

**Zero denominators.** With the clamp, ``K ≥ e⁻⁵⁰``, so a denominator can only vanish by
underflow. The batch runs the rounds without the guard: a zero denominator leaves a non-finite
value in ``u`` or ``v`` for good (``a/0 = inf`` makes the next ``Kᵀu`` infinite or NaN, the next
``v`` zero or NaN, the next ``Kv`` zero, …), so a problem whose final scalings are not finite is
rerun with the guard from the start, which gives exactly the guarded result. A non-finite plan or a row without mass is reported
as :class:`OTFailure`.

With ``pred = GT`` and ε ≤ 1 the targets equal the GT (E9) as long as distinct GT vertices are a
few bins apart (the tests use ≥ 8); a vertex at the end of a run of collinear vertices 1 bin apart
has all its near neighbours on one side and is pulled by one bin. Canonicalization (01 §1.7) keeps
such vertices, so this is a property of the spec's algorithm, not a failure.

Targets: a poly prediction gets one projected vertex per pred vertex (flat ``[x, y, ...]``); a
bbox prediction vs a poly GT gets the AABB of its projected corners ``[x1, y1, x2, y2]``; a
bbox–bbox pair gets the GT bins (no OT).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import attrs
import numpy as np

from coordexp.core.errors import ConfigError, CoordexpError
from coordexp.rollout.maskiou import BBOX_KEY, MAX_BIN, POLY_KEY, GeometryBatch, as_geometry

CONFIG_PATH = "rollout_matching.poly_ot"
LOG_KERNEL_FLOOR = 50.0
PAD_MULTIPLE = 8
COSTS = ("l2", "l1")


class OTFailure(CoordexpError):
    """OT targets could not be built for a pair; the caller excludes the pair (spec 03 §3.5 step 5)."""


def _check_epsilon(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{CONFIG_PATH}.epsilon", f"expected a finite number > 0, got {value!r}")


def _check_iters(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{CONFIG_PATH}.iters", f"expected an int >= 1, got {value!r}")


def _check_cost(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in COSTS:
        raise ConfigError(f"{CONFIG_PATH}.cost", f"expected one of {sorted(COSTS)}, got {value!r}")


@attrs.frozen
class PolyOTConfig:
    """``rollout_matching.poly_ot.*``: ``epsilon`` (ε, bins), ``iters`` (Sinkhorn rounds), ``cost``."""

    epsilon: float = attrs.field(default=10.0, validator=_check_epsilon)
    iters: int = attrs.field(default=30, validator=_check_iters)
    cost: str = attrs.field(default="l2", validator=_check_cost)


@attrs.frozen
class OTTarget:
    """Target bins for one prediction, laid out like the prediction's ``values``.

    ``geom_key`` is the prediction's key; ``values`` are ints in 0..999 (``2N`` for a poly with N
    vertices, 4 for a bbox). ``source`` is ``"ot"`` or ``"gt"`` (bbox–bbox pairs).
    """

    geom_key: str
    values: tuple[int, ...]
    source: str


# ---------------------------------------------------------------------------------------------
# batched Sinkhorn
# ---------------------------------------------------------------------------------------------


def padded_size(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`PAD_MULTIPLE` (the batch slot a problem of n points uses)."""
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def pairwise_cost(pred_points: np.ndarray, gt_points: np.ndarray, cost: str) -> np.ndarray:
    """``cdist`` in bins: ``pred [..., N, 2]`` × ``gt [..., M, 2]`` → float64 ``[..., N, M]``.

    ``l2``: ``sqrt(dx² + dy²)``; ``l1``: ``|dx| + |dy|`` (scipy's ``euclidean``/``cityblock``,
    summed in the same order, so the values are identical).
    """
    diff = pred_points[..., :, None, :] - gt_points[..., None, :, :]
    if cost == "l2":
        np.multiply(diff, diff, out=diff)
        return np.sqrt(diff[..., 0] + diff[..., 1])
    if cost == "l1":
        np.abs(diff, out=diff)
        return diff[..., 0] + diff[..., 1]
    raise CoordexpError(f"unknown OT cost {cost!r}; expected one of {COSTS}")


def _rounds(
    kernel: np.ndarray, kernel_t: np.ndarray, a: np.ndarray, b: np.ndarray, iters: int, guard: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``iters`` rounds from ``v = 1``; ``a [B, N, 1]``, ``b [B, M, 1]`` → scalings ``u``, ``v`` (same shapes)."""
    u = np.empty_like(a)
    v = np.ones_like(b)
    kv = np.empty_like(a)
    ktu = np.empty_like(b)
    # Outputs passed positionally: a ufunc parses ``out=`` per call, which costs ~6% of the loop.
    matmul, divide = np.matmul, np.divide
    for _ in range(iters):
        matmul(kernel, v, kv)
        if guard:
            kv[kv == 0.0] = 1.0
        divide(a, kv, u)
        matmul(kernel_t, u, ktu)
        if guard:
            ktu[ktu == 0.0] = 1.0
        divide(b, ktu, v)
    return u, v


@lru_cache(maxsize=8)
def _padding_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """For problems padded to ``size`` points a side, indexed by the real point count ``n``
    (0..size): bool ``[size + 1, size]`` (row n: the first n entries are real) and float64
    ``[size + 1, size]`` (row n: the marginal ``1/n`` on real entries, 1 on padding). Read-only."""
    counts = np.arange(size + 1)
    real = np.arange(size)[None, :] < counts[:, None]
    with np.errstate(divide="ignore"):
        marginal = np.where(real, 1.0 / counts[:, None], 1.0)
    real.flags.writeable = False
    marginal.flags.writeable = False
    return real, marginal


@attrs.frozen(eq=False)
class _GroupLayout:
    """What a batch of problems padded to one ``[N, M]`` slot needs besides its costs (read-only
    arrays, cached per slot and problem sizes by :func:`_group_layout`).

    ``real``: bool ``[B, N, M]``, the problems' own entries; ``padding``: float64 ``[B, N, M]``,
    the kernel off the problems (1 on the padding↔padding block, 0 across); ``a``/``b``: marginals
    ``[B, N, 1]``/``[B, M, 1]`` (``1/n`` on real entries, 1 on padding); ``real_row``: bool
    ``[B, N]``; ``row_steps``/``col_steps``: int64 ``[B, N]``/``[B, M]``, point ``r`` of a problem
    with ``n`` points is its point ``min(r, n − 1)`` (padding repeats the last real point).
    """

    real: np.ndarray
    padding: np.ndarray
    a: np.ndarray
    b: np.ndarray
    real_row: np.ndarray
    row_steps: np.ndarray
    col_steps: np.ndarray


@lru_cache(maxsize=64)
def _group_layout(
    size_n: int, size_m: int, n_rows: tuple[int, ...], n_cols: tuple[int, ...]
) -> _GroupLayout:
    real_rows, row_marginals = _padding_tables(size_n)
    real_cols, col_marginals = _padding_tables(size_m)
    rows, cols = np.array(n_rows, dtype=np.int64), np.array(n_cols, dtype=np.int64)
    real_row = real_rows[rows]
    real_col = real_cols[cols][:, None, :]
    arrays = (
        real_row[:, :, None] & real_col,
        (real_row[:, :, None] == real_col).astype(np.float64),
        row_marginals[rows].reshape(-1, size_n, 1),
        col_marginals[cols].reshape(-1, size_m, 1),
        real_row,
        _clamped_ranges(size_n)[rows],
        _clamped_ranges(size_m)[cols],
    )
    for array in arrays:
        array.flags.writeable = False
    return _GroupLayout(*arrays)


def _sizes_key(counts: Sequence[int] | np.ndarray) -> tuple[int, ...]:
    return tuple(counts.tolist()) if isinstance(counts, np.ndarray) else tuple(counts)


def _padded_plans(
    cost: np.ndarray,
    n_rows: Sequence[int] | np.ndarray,
    n_cols: Sequence[int] | np.ndarray,
    epsilon: float,
    iters: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sinkhorn_plans` on checked inputs → (plans ``[B, N, M]``, bool ``[B, N]`` mask of
    the real rows)."""
    _, size_n, size_m = cost.shape
    layout = _group_layout(size_n, size_m, _sizes_key(n_rows), _sizes_key(n_cols))
    log_kernel = np.minimum(np.maximum(cost / -epsilon, -LOG_KERNEL_FLOOR), LOG_KERNEL_FLOOR)
    # Block-diagonal: the problem, 0 across, and a padding↔padding block of ones (module doc).
    kernel = np.where(layout.real, np.exp(log_kernel), layout.padding)
    a, b = layout.a, layout.b
    kernel_t = np.ascontiguousarray(kernel.transpose(0, 2, 1))
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        u, v = _rounds(kernel, kernel_t, a, b, iters, guard=False)
        # u, v >= 0, so their sum is finite iff every entry is (one check in the common case).
        if not np.isfinite(u.sum() + v.sum()):
            redo = (~(np.isfinite(u).all(axis=(1, 2)) & np.isfinite(v).all(axis=(1, 2)))).nonzero()[0]
            u[redo], v[redo] = _rounds(kernel[redo], kernel_t[redo], a[redo], b[redo], iters, guard=True)
        plans = u * kernel * v.transpose(0, 2, 1)
    plans *= layout.real
    return plans, layout.real_row


def sinkhorn_plans(
    cost: np.ndarray, n_rows: np.ndarray, n_cols: np.ndarray, epsilon: float, iters: int
) -> np.ndarray:
    """Entropic plans of the spec 03 §3.5 iteration for a batch of zero-padded problems.

    ``cost``: float64 ``[B, N, M]``; problem ``k`` uses ``cost[k, :n_rows[k], :n_cols[k]]`` (the
    rest is ignored). Returns float64 ``[B, N, M]`` plans, exactly 0 outside each problem's block.
    See the module docstring for the padding and the zero-denominator rule.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n_rows = np.asarray(n_rows, dtype=np.int64).reshape(-1)
    n_cols = np.asarray(n_cols, dtype=np.int64).reshape(-1)
    if cost.ndim != 3:
        raise CoordexpError(f"sinkhorn_plans needs a [B, N, M] cost, got shape {cost.shape}")
    batch, size_n, size_m = cost.shape
    if n_rows.shape != (batch,) or n_cols.shape != (batch,) or (n_rows < 1).any() or (n_cols < 1).any():
        raise CoordexpError(f"sinkhorn_plans needs {batch} row and column counts >= 1")
    if (n_rows > size_n).any() or (n_cols > size_m).any():
        raise CoordexpError(f"problem sizes exceed the padded cost shape {cost.shape}")
    return _padded_plans(cost, n_rows, n_cols, epsilon, iters)[0]


def sinkhorn_plan(cost: np.ndarray, epsilon: float, iters: int) -> np.ndarray:
    """Entropic plan ``T [N, M]`` (float64) of the spec 03 §3.5 iteration for a cost ``[N, M]``."""
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    padded = np.zeros((1, padded_size(n), padded_size(m)))
    padded[0, :n, :m] = cost
    return sinkhorn_plans(padded, np.array([n]), np.array([m]), epsilon, iters)[0, :n, :m]


def _round_bins(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(np.floor(x + 0.5), 0), MAX_BIN).astype(np.int64)


def _projection_failure(n_pred: int, n_gt: int) -> OTFailure:
    return OTFailure(f"Sinkhorn plan is degenerate (non-finite or zero row mass) for {n_pred}x{n_gt} points")


def _project(plans: np.ndarray, gt_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded plans ``[B, N, M]`` and GT points ``[B, M, 2]`` → (``ĝ [B, N, 2]``, row mass ``[B, N]``).

    Rows without mass (padding, or a degenerate plan) get ``ĝ = 0`` instead of a division by zero.
    """
    mass = plans.sum(axis=2)
    projected = np.matmul(plans, gt_points) / np.where(mass > 0, mass, 1.0)[:, :, None]
    return projected, mass


def barycentric_projection(pred_points: np.ndarray, gt_points: np.ndarray, cfg: PolyOTConfig) -> np.ndarray:
    """Projected points ``ĝ [N, 2]`` (float64, bins) for ``pred_points [N, 2]``, ``gt_points [M, 2]``.

    Raises :class:`OTFailure` if the plan is not finite or a row has zero mass. Computed in the
    padded layout of :func:`ot_targets_many`, so both give the same bits.
    """
    n, m = len(pred_points), len(gt_points)
    plan = sinkhorn_plan(pairwise_cost(pred_points, gt_points, cfg.cost), cfg.epsilon, cfg.iters)
    size_n, size_m = padded_size(n), padded_size(m)
    plans = np.zeros((1, size_n, size_m))
    plans[0, :n, :m] = plan
    gt_padded = np.zeros((1, size_m, 2))
    gt_padded[0, :m] = gt_points
    projected, mass = _project(plans, gt_padded)
    if not np.isfinite(plan).all() or not (mass[0, :n] > 0).all():
        raise _projection_failure(n, m)
    return projected[0, :n]


def _targets_from_projection(pred_key: str, n_values: int, projected: np.ndarray) -> OTTarget:
    if pred_key == POLY_KEY:
        values = _round_bins(projected).reshape(-1)
    else:
        values = _round_bins(np.concatenate([projected.min(axis=0), projected.max(axis=0)]))
    if values.size != n_values:
        raise OTFailure(f"OT target has {values.size} values for a prediction with {n_values}")
    return OTTarget(pred_key, tuple(values.tolist()), "ot")


def ot_targets(pred: Any, gt: Any, cfg: PolyOTConfig = PolyOTConfig()) -> OTTarget:
    """Targets for the matched pair ``(pred, gt)`` (geometries in bins; see the module docstring).

    Raises :class:`OTFailure` on any failure (bad geometry, numerical trouble, length mismatch).
    """
    try:
        pred_geom = as_geometry(pred)
        gt_geom = as_geometry(gt)
    except CoordexpError as exc:
        raise OTFailure(f"invalid geometry for OT: {exc}") from exc

    if pred_geom.geom_key == BBOX_KEY and gt_geom.geom_key == BBOX_KEY:
        gt_box = gt_geom.points()
        values = _round_bins(np.concatenate([gt_box.min(axis=0), gt_box.max(axis=0)]))
        return OTTarget(BBOX_KEY, tuple(values.tolist()), "gt")

    pred_points = np.clip(pred_geom.points(), 0.0, float(MAX_BIN))
    gt_points = np.clip(gt_geom.points(), 0.0, float(MAX_BIN))
    try:
        projected = barycentric_projection(pred_points, gt_points, cfg)
    except OTFailure:
        raise
    except Exception as exc:  # spec 03 §3.5 step 5: any exception excludes the pair
        raise OTFailure(f"OT failed: {type(exc).__name__}: {exc}") from exc
    return _targets_from_projection(pred_geom.geom_key, len(pred_geom.values), projected)


@lru_cache(maxsize=8)
def _clamped_ranges(size: int) -> np.ndarray:
    """int64 ``[size + 1, size]``: row n is ``min(r, n − 1)`` for r in 0..size−1 (read-only)."""
    table = np.minimum(np.arange(size)[None, :], np.arange(size + 1)[:, None] - 1)
    table.flags.writeable = False
    return table


def _ot_group(
    pred: GeometryBatch,
    gt: GeometryBatch,
    slot: tuple[int, int],
    pred_spans: Sequence[tuple[int, int]],
    gt_spans: Sequence[tuple[int, int]],
    pred_is_box: Sequence[bool],
    cfg: PolyOTConfig,
) -> list[OTTarget | OTFailure]:
    """One batch: every pair here pads to the same ``slot = (N, M)``. Pair ``k`` transports
    ``pred`` points ``pred_spans[k] = (first, count)`` onto ``gt`` points ``gt_spans[k]``;
    ``pred_is_box[k]``: its prediction is a bbox."""
    pred_first, n_rows = zip(*pred_spans, strict=True)
    gt_first, n_cols = zip(*gt_spans, strict=True)
    layout = _group_layout(slot[0], slot[1], n_rows, n_cols)
    # np.take: row gathers by fancy indexing cost several times more.
    pred_pts = np.take(pred.stack.points, np.array(pred_first)[:, None] + layout.row_steps, axis=0)
    gt_pts = np.take(gt.stack.points, np.array(gt_first)[:, None] + layout.col_steps, axis=0)

    cost = pairwise_cost(pred_pts, gt_pts, cfg.cost)
    plans, _ = _padded_plans(cost, n_rows, n_cols, cfg.epsilon, cfg.iters)
    mass = plans.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Rows without mass (padding, degenerate plans) give NaN here; they are never read.
        projected = np.matmul(plans, gt_pts) / mass[:, :, None]
        # ĝ is a convex combination of clamped GT points, so it lies in [0, 999] (clamp not
        # needed) and truncating ĝ + 0.5 rounds half up like _round_bins.
        rounded = (projected + 0.5).astype(np.int64).reshape(len(n_rows), -1).tolist()
    masses = mass.tolist()
    out: list[OTTarget | OTFailure] = []
    for k, n in enumerate(n_rows):
        # Plans are >= 0: a real row's mass is finite and > 0 iff the row is usable (NaN fails).
        if not all(0.0 < row_mass < math.inf for row_mass in masses[k][:n]):
            out.append(_projection_failure(n, n_cols[k]))
        elif pred_is_box[k]:
            # Rounding is monotone: the AABB of the rounded corners is the rounded AABB.
            xs, ys = rounded[k][0 : 2 * n : 2], rounded[k][1 : 2 * n : 2]
            out.append(OTTarget(BBOX_KEY, (min(xs), min(ys), max(xs), max(ys)), "ot"))
        else:
            out.append(OTTarget(POLY_KEY, tuple(rounded[k][: 2 * n]), "ot"))
    return out


def ot_targets_many(
    pred: GeometryBatch,
    gt: GeometryBatch,
    pairs: Sequence[tuple[int, int]],
    cfg: PolyOTConfig = PolyOTConfig(),
) -> list[OTTarget | OTFailure]:
    """:func:`ot_targets` for many ``(pred_index, gt_index)`` pairs of two batches, in one pass.

    Returns one entry per pair, in order: its :class:`OTTarget`, or the :class:`OTFailure` that
    excludes it (returned, not raised). The results equal :func:`ot_targets` on the same
    geometries exactly (module docstring). Pairs are grouped by padded size and each group runs as
    one batch; if a group's batch raises, its pairs are redone one by one so that only the failing
    ones are excluded.
    """
    results: list[OTTarget | OTFailure | None] = [None] * len(pairs)
    pred_offsets, gt_offsets = pred.stack.offsets.tolist(), gt.stack.offsets.tolist()
    pred_box, gt_box = pred.is_box.tolist(), gt.is_box.tolist()
    groups: dict[tuple[int, int], list[int]] = {}
    spans: list[tuple[tuple[int, int], tuple[int, int]] | None] = [None] * len(pairs)
    for k, (p, g) in enumerate(pairs):
        if pred_box[p] and gt_box[g]:
            values = _round_bins(gt.aabb[g])
            results[k] = OTTarget(BBOX_KEY, tuple(values.tolist()), "gt")
        else:
            pred_span = (pred_offsets[p], pred_offsets[p + 1] - pred_offsets[p])
            gt_span = (gt_offsets[g], gt_offsets[g + 1] - gt_offsets[g])
            spans[k] = (pred_span, gt_span)
            groups.setdefault((padded_size(pred_span[1]), padded_size(gt_span[1])), []).append(k)
    for slot, members in groups.items():
        try:
            found = _ot_group(
                pred,
                gt,
                slot,
                [spans[k][0] for k in members],  # type: ignore[index]
                [spans[k][1] for k in members],  # type: ignore[index]
                [pred_box[pairs[k][0]] for k in members],
                cfg,
            )
        except Exception:  # noqa: BLE001 - isolate the failing pairs below (spec 03 §3.5 step 5)
            found = []
            for k in members:
                p, g = pairs[k]
                try:
                    found.append(ot_targets(pred.geometry(p), gt.geometry(g), cfg))
                except OTFailure as failure:
                    found.append(failure)
        for k, result in zip(members, found, strict=True):
            results[k] = result
    return results  # type: ignore[return-value]


__all__ = [
    "COSTS",
    "OTFailure",
    "OTTarget",
    "PAD_MULTIPLE",
    "PolyOTConfig",
    "barycentric_projection",
    "ot_targets",
    "ot_targets_many",
    "padded_size",
    "pairwise_cost",
    "sinkhorn_plan",
    "sinkhorn_plans",
]
