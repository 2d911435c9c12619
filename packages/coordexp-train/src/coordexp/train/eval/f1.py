"""F1@IoU of ``gt_vs_pred`` records (spec 06 §6.5; invariant I4).

Per image, candidate pairs share the normalized desc (ignored for ``f1_loc``) and have
``IoU ≥ thr`` (:func:`coordexp.train.eval.iou.iou_matrix`); they are sorted by
``(−IoU, pred_index, gt_index)`` and matched greedily 1:1. Counts are micro-summed over images:
``P = TP/(TP+FP)`` (1 with no predictions), ``R = TP/(TP+FN)`` (1 with no GT),
``F1 = 2PR/(P+R)`` (0 when ``P+R = 0``). Scores are ignored.

One greedy pass at the lowest threshold serves every threshold: the sorted candidate list at
``thr`` is a prefix of the list at 0.50 (IoU is the primary key), and a greedy pass over a prefix
makes exactly the choices the full pass makes on it, so ``TP(thr)`` is the number of pairs the
0.50 pass matched with ``IoU ≥ thr``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from coordexp.train.eval.categories import normalize_desc
from coordexp.train.eval.iou import MASKIOU_RESOLUTION, iou_matrix
from coordexp.train.eval.keys import F1_KEYS
from coordexp.train.eval.records import ImageRecord

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.50 + 0.05 * i, 2) for i in range(10))
MIN_IOU = IOU_THRESHOLDS[0]


@attrs.frozen
class GreedyMatch:
    """1:1 greedy matching of one image.

    ``gt_of_pred``: int64 ``[P]``, the matched GT index or −1; ``iou_of_pred``: float64 ``[P]``,
    the IoU of the matched pair (NaN when unmatched).
    """

    gt_of_pred: np.ndarray
    iou_of_pred: np.ndarray

    def matched_ious(self) -> np.ndarray:
        return self.iou_of_pred[self.gt_of_pred >= 0]


def greedy_match(
    ious: np.ndarray, allowed: np.ndarray, pred_index: np.ndarray, min_iou: float = MIN_IOU
) -> GreedyMatch:
    """Greedy 1:1 matching on pairs with ``allowed & (IoU ≥ min_iou)``, in ``(−IoU, pred_index, gt_index)`` order.

    ``ious``: float ``[P, G]``; ``allowed``: bool ``[P, G]``; ``pred_index``: int ``[P]`` (the
    predictions' appearance indices, the secondary key).
    """
    n_pred, n_gt = ious.shape
    gt_of_pred = np.full(n_pred, -1, dtype=np.int64)
    iou_of_pred = np.full(n_pred, np.nan, dtype=np.float64)
    rows, cols = np.nonzero(allowed & (ious >= min_iou))
    if rows.size == 0:
        return GreedyMatch(gt_of_pred, iou_of_pred)
    pair_iou = ious[rows, cols]
    order = np.lexsort((cols, pred_index[rows], -pair_iou))  # last key is the primary one
    gt_taken = np.zeros(n_gt, dtype=bool)
    for r, c, v in zip(rows[order].tolist(), cols[order].tolist(), pair_iou[order].tolist()):
        if gt_of_pred[r] < 0 and not gt_taken[c]:
            gt_of_pred[r] = c
            iou_of_pred[r] = v
            gt_taken[c] = True
    return GreedyMatch(gt_of_pred, iou_of_pred)


def same_desc_mask(record: ImageRecord) -> np.ndarray:
    """bool ``[P, G]``: the prediction and the GT object have the same normalized desc."""
    pred = np.array([normalize_desc(p.desc) for p in record.pred], dtype=object)
    gt = np.array([normalize_desc(g.desc) for g in record.gt], dtype=object)
    return (pred[:, None] == gt[None, :]).astype(bool).reshape(len(pred), len(gt))


@attrs.frozen
class ImageMatches:
    """Both matchings of one image: ``by_desc`` (same normalized desc) and ``loc`` (desc ignored)."""

    ious: np.ndarray
    by_desc: GreedyMatch
    loc: GreedyMatch


def match_image(record: ImageRecord, maskiou_resolution: int = MASKIOU_RESOLUTION) -> ImageMatches:
    """The IoU matrix and the desc-aware and desc-free greedy matchings of one image (IoU ≥ 0.50)."""
    ious = iou_matrix(record.pred, record.gt, record.width, record.height, maskiou_resolution)
    pred_index = np.array([p.pred_index for p in record.pred], dtype=np.int64)
    everything = np.ones_like(ious, dtype=bool)
    return ImageMatches(
        ious,
        greedy_match(ious, same_desc_mask(record), pred_index),
        greedy_match(ious, everything, pred_index),
    )


def prf(tp: float, n_pred: float, n_gt: float) -> tuple[float, float, float]:
    """Precision, recall and F1 with the empty conventions of spec 06 §6.5."""
    precision = tp / n_pred if n_pred > 0 else 1.0
    recall = tp / n_gt if n_gt > 0 else 1.0
    total = precision + recall
    return precision, recall, (2.0 * precision * recall / total if total > 0 else 0.0)


@attrs.frozen
class F1Counts:
    """Micro-summed counts: ``tp[i]`` at ``IOU_THRESHOLDS[i]`` (desc-aware), ``tp_loc`` at 0.50."""

    tp: tuple[int, ...]
    tp_loc: int
    n_pred: int
    n_gt: int

    def metric_values(self) -> dict[str, float]:
        """The F1 keys of spec 06 §6.6 (``F1_KEYS`` order): f1, precision and recall at 0.50, f1 at
        0.75, the mean f1 over 0.50:0.05:0.95, and the desc-free f1_loc at 0.50."""
        per_thr = [prf(tp, self.n_pred, self.n_gt) for tp in self.tp]
        p50, r50, f50 = per_thr[0]
        values = (
            f50,
            p50,
            r50,
            per_thr[IOU_THRESHOLDS.index(0.75)][2],
            float(np.mean([f for _, _, f in per_thr])),
            prf(self.tp_loc, self.n_pred, self.n_gt)[2],
        )
        return dict(zip(F1_KEYS, values))


def f1_counts(records: Sequence[ImageRecord], maskiou_resolution: int = MASKIOU_RESOLUTION) -> F1Counts:
    """Micro-summed F1 counts over ``records``."""
    thresholds = np.asarray(IOU_THRESHOLDS)
    tp = np.zeros(len(IOU_THRESHOLDS), dtype=np.int64)
    tp_loc = n_pred = n_gt = 0
    for record in records:
        n_pred += len(record.pred)
        n_gt += len(record.gt)
        if not record.pred or not record.gt:
            continue
        matches = match_image(record, maskiou_resolution)
        tp += (matches.by_desc.matched_ious()[:, None] >= thresholds[None, :]).sum(axis=0)
        tp_loc += int(matches.loc.matched_ious().size)
    return F1Counts(tuple(int(t) for t in tp), tp_loc, n_pred, n_gt)
