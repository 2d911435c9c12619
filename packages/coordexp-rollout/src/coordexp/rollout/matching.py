"""Hungarian matching of predictions to GT objects (spec 03 §3.4; invariant E7).

Inputs are geometries in bins (see :mod:`coordexp.rollout.maskiou`): valid predictions in
appearance order, GT objects in GT order.

1. **Candidate pruning.** Per prediction, GT objects are ranked by ``(−AABB IoU, gt_idx)`` and the
   first ``candidate_top_k`` are kept; if the prediction's best AABB IoU is ≤ 0, the
   ``candidate_top_k`` GT nearest by squared AABB-centre distance (ties → ``gt_idx``) are kept
   instead. AABBs are taken after clamping to [0, 999], like the mask IoU.
2. **maskIoU** on candidate pairs only (:func:`~coordexp.rollout.maskiou.maskiou_between`;
   :func:`match_many` computes the mask IoUs of several samples in one pass).
3. **Gating.** A candidate with ``maskIoU < maskiou_gate`` is infeasible and counted in
   ``gating_rejections``; non-candidates are infeasible and not counted. A candidate whose maskIoU
   is provably below the gate (an upper bound from pixel rectangles and raster areas) is not
   computed at all: it only needs to be known infeasible, so the result is the same.
4. **Assignment.** The square ``(P+G)`` matrix ``[[1 − maskIoU | fp_cost], [fn_cost | 0]]`` is solved
   with :func:`scipy.optimize.linear_sum_assignment`. Infeasible cells are +inf rather than the
   spec's 1e6: every row and column has a finite dummy alternative, and choosing a 1e6 cell
   classifies its pair as FP + FN exactly like the dummies do, so the classification is the same
   while the solver works on small magnitudes (which the tie-break below relies on).

**Tie-breaking.** Each feasible cell gets ``δ·w(i, j)/S`` added, with ``δ = 1e-6``,
``w(i, j) = (K+1)·i + K·j − i·j + 1`` (``K = max(P, G)``, so ``w ≥ 1``) and ``S`` chosen so that
the added amounts of any assignment sum to less than ``δ``. Consequences:

* if the spec's optimal matched set is unique by a margin > δ in total cost, the perturbed
  problem has the same optimum, so the result is permutation-equivariant for distinct costs;
* among equal-cost matched sets the one with the smallest ``Σ w`` wins: an earlier prediction is
  matched before a later duplicate, an earlier GT before a later duplicate, and pairings keep
  order (``i < i'`` ↔ ``j < j'``). Equal cost between "match" and "FP + FN" resolves to FP + FN;
* the computation is a pure function of its inputs (numpy + scipy, no randomness), hence
  deterministic. Tie resolution is exact while ``δ/(2K³)`` stays well above float64 rounding of
  costs of order 1, i.e. for up to a few hundred objects per side.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import attrs
import numpy as np
from scipy.optimize import linear_sum_assignment

from coordexp.core.errors import ConfigError
from coordexp.rollout.maskiou import (
    MIN_RESOLUTION,
    Geometry,
    GeometryBatch,
    MaskIoUMatrix,
    maskiou_between_many,
)

CONFIG_PATH = "rollout_matching.matching"
TIE_BREAK_DELTA = 1e-6


def _int_at_least(minimum: int):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ConfigError(
                f"{CONFIG_PATH}.{attribute.name}", f"expected an int >= {minimum}, got {value!r}"
            )

    return check


def _real(low: float, high: float, *, low_open: bool):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and value <= high
        if not ok:
            bounds = f"{'(' if low_open else '['}{low}, {high}]" if math.isfinite(high) else f"> {low}"
            raise ConfigError(
                f"{CONFIG_PATH}.{attribute.name}", f"expected a finite number in {bounds}, got {value!r}"
            )

    return check


@attrs.frozen
class MatchingConfig:
    """``rollout_matching.matching.*`` (spec 03 §3.4). Invalid values raise :class:`ConfigError`."""

    candidate_top_k: int = attrs.field(default=10, validator=_int_at_least(1))
    maskiou_gate: float = attrs.field(default=0.3, validator=_real(0.0, 1.0, low_open=False))
    maskiou_resolution: int = attrs.field(default=256, validator=_int_at_least(MIN_RESOLUTION))
    fp_cost: float = attrs.field(default=1.0, validator=_real(0.0, math.inf, low_open=True))
    fn_cost: float = attrs.field(default=1.0, validator=_real(0.0, math.inf, low_open=True))


@attrs.frozen
class MatchResult:
    """Outcome of :func:`match`.

    ``pairs``: ``(pred_idx, gt_idx, maskiou)`` sorted by ``pred_idx`` (maskIoU is for diagnostics
    only, D13). ``fp``: unmatched prediction indices, ascending. ``fn``: unmatched GT indices in
    GT order. ``gating_rejections``: candidate pairs with maskIoU below the gate.
    ``candidate_pairs``: candidate pairs evaluated. ``raster_errors``: candidate pairs whose
    maskIoU was forced to 0 by a raster error (0 with closed-form rasters, see
    :mod:`coordexp.rollout.maskiou`).
    """

    pairs: tuple[tuple[int, int, float], ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]
    gating_rejections: int
    candidate_pairs: int
    raster_errors: int = 0


def aabbs(geometries: Sequence[Geometry]) -> np.ndarray:
    """Axis-aligned boxes ``[n, 4]`` float64 ``(x1, y1, x2, y2)`` of the clamped points."""
    return GeometryBatch.of(geometries).aabb


def aabb_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[A, B]`` of boxes ``a [A, 4]`` and ``b [B, 4]`` (continuous area; 0 where the union is 0)."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(width, 0.0) * np.maximum(height, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def center_sqdist_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance ``[A, B]`` between box centres."""
    ca = (a[:, :2] + a[:, 2:]) / 2.0
    cb = (b[:, :2] + b[:, 2:]) / 2.0
    return ((ca[:, None, :] - cb[None, :, :]) ** 2).sum(axis=-1)


def candidate_mask(pred_boxes: np.ndarray, gt_boxes: np.ndarray, top_k: int) -> np.ndarray:
    """bool ``[P, G]``: the candidate GT objects of each prediction (step 1 of the module doc)."""
    n_pred, n_gt = len(pred_boxes), len(gt_boxes)
    mask = np.zeros((n_pred, n_gt), dtype=bool)
    if n_pred == 0 or n_gt == 0:
        return mask
    k = min(top_k, n_gt)
    iou = aabb_iou_matrix(pred_boxes, gt_boxes)
    # A stable sort keeps equal keys in gt_idx order: the (key, gt_idx) ranking of the module doc.
    chosen = np.argsort(-iou, axis=-1, kind="stable")[:, :k]
    far = iou.max(axis=1) <= 0.0
    if np.count_nonzero(far):
        by_distance = np.argsort(center_sqdist_matrix(pred_boxes[far], gt_boxes), axis=-1, kind="stable")
        chosen[far] = by_distance[:, :k]
    mask[np.arange(n_pred)[:, None], chosen] = True
    return mask


@lru_cache(maxsize=64)
def _tie_break(n_pred: int, n_gt: int) -> np.ndarray:
    """``δ·w(i, j)/S`` ``[P, G]`` (read-only, cached per shape); any assignment's total is below ``δ``."""
    k = max(n_pred, n_gt)
    i = np.arange(n_pred, dtype=np.float64)[:, None]
    j = np.arange(n_gt, dtype=np.float64)[None, :]
    w = (k + 1) * i + k * j - i * j + 1.0
    scale = min(n_pred, n_gt) * float(w.max()) + 1.0
    table = TIE_BREAK_DELTA * w / scale
    table.flags.writeable = False
    return table


def match(preds: Sequence[Any], gts: Sequence[Any], cfg: MatchingConfig = MatchingConfig()) -> MatchResult:
    """Match predictions to GT objects (spec 03 §3.4); see the module docstring for the rules.

    Inputs are validated (:meth:`GeometryBatch.of`); :func:`match_batches` does the work.
    """
    return match_batches(GeometryBatch.of(preds, "preds"), GeometryBatch.of(gts, "gts"), cfg)


def match_batches(
    pred: GeometryBatch, gt: GeometryBatch, cfg: MatchingConfig = MatchingConfig()
) -> MatchResult:
    """:func:`match` on stacked geometries (predictions in appearance order, GT in GT order)."""
    return match_many([(pred, gt)], cfg)[0]


def match_many(
    items: Sequence[tuple[GeometryBatch, GeometryBatch]], cfg: MatchingConfig = MatchingConfig()
) -> list[MatchResult]:
    """:func:`match_batches` for several ``(pred, gt)`` items (e.g. the samples of a decode
    batch), one result per item, identical to matching them one by one: only the mask IoUs of all
    items are computed together (:func:`~coordexp.rollout.maskiou.maskiou_between_many`)."""
    busy = [k for k, (pred, gt) in enumerate(items) if len(pred) and len(gt)]
    candidates = [candidate_mask(items[k][0].aabb, items[k][1].aabb, cfg.candidate_top_k) for k in busy]
    ious = maskiou_between_many(
        [(*items[k], mask) for k, mask in zip(busy, candidates, strict=True)],
        cfg.maskiou_resolution,
        gate=cfg.maskiou_gate,
    )
    results = [
        MatchResult((), tuple(range(len(pred))), tuple(range(len(gt))), 0, 0) for pred, gt in items
    ]
    for k, mask, found in zip(busy, candidates, ious, strict=True):
        results[k] = _assign(mask, found, cfg)
    return results


def _assign(candidates: np.ndarray, ious: MaskIoUMatrix, cfg: MatchingConfig) -> MatchResult:
    """Gating and the dummy-augmented assignment (steps 3–4 of the module doc) of one item with
    ``P, G >= 1``: ``candidates`` bool ``[P, G]``, ``ious`` their mask IoUs."""
    n_pred, n_gt = candidates.shape
    # NaN (not computed: provably below the gate) compares False, i.e. infeasible.
    feasible = candidates & (ious.values >= cfg.maskiou_gate)
    gating_rejections = int(np.count_nonzero(candidates)) - int(np.count_nonzero(feasible))

    size = n_pred + n_gt
    cost = np.zeros((size, size), dtype=np.float64)
    cost[:n_pred, :n_gt] = np.where(feasible, 1.0 - ious.values + _tie_break(n_pred, n_gt), np.inf)
    cost[:n_pred, n_gt:] = cfg.fp_cost
    cost[n_pred:, :n_gt] = cfg.fn_cost
    rows, cols = linear_sum_assignment(cost)

    # linear_sum_assignment returns the rows sorted, so the pairs come out sorted by prediction.
    real = (rows < n_pred) & (cols < n_gt)
    rows, cols = rows[real], cols[real]
    keep = feasible[rows, cols]
    rows, cols = rows[keep], cols[keep]
    pairs = tuple(zip(rows.tolist(), cols.tolist(), ious.values[rows, cols].tolist(), strict=True))

    matched_pred = np.zeros(n_pred, dtype=bool)
    matched_gt = np.zeros(n_gt, dtype=bool)
    matched_pred[rows] = True
    matched_gt[cols] = True
    return MatchResult(
        pairs=pairs,
        fp=tuple((~matched_pred).nonzero()[0].tolist()),
        fn=tuple((~matched_gt).nonzero()[0].tolist()),
        gating_rejections=gating_rejections,
        candidate_pairs=int(np.count_nonzero(candidates)),
        raster_errors=ious.raster_errors,
    )
