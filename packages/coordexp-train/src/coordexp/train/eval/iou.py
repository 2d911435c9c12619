"""IoU between the pixel geometries of one image (spec 06 §6.5).

Two boxes use the exact box IoU in pixels. A pair that involves a poly uses the maskIoU of
spec 03 §3.4 (:func:`coordexp.rollout.maskiou.maskiou_matrix`): the pixel points are mapped back
to the continuous bin frame ``v·999/max(1, side−1)`` (x with the width, y with the height) and
rasterized on the R×R canvas there. Scaling x and y by constants multiplies every area by the same
factor, so the IoU is that of the pixel shapes up to rasterization.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coordexp.rollout.maskiou import Geometry, maskiou_matrix
from coordexp.train.eval.records import GTItem, PredItem

MASKIOU_RESOLUTION = 256  # rollout_matching.matching.maskiou_resolution default (03 §3.4)


def box_iou_matrix(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Exact IoU of xyxy boxes: float64 ``[P, 4]`` × ``[G, 4]`` → ``[P, G]``; 0 where the union is 0."""
    lt = np.maximum(pred_boxes[:, None, :2], gt_boxes[None, :, :2])
    rb = np.minimum(pred_boxes[:, None, 2:], gt_boxes[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=-1)
    area_p = np.prod(pred_boxes[:, 2:] - pred_boxes[:, :2], axis=-1)
    area_g = np.prod(gt_boxes[:, 2:] - gt_boxes[:, :2], axis=-1)
    union = area_p[:, None] + area_g[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _bin_frame(item: GTItem | PredItem, width: int, height: int) -> Geometry:
    points = np.asarray(item.points, dtype=np.float64)
    points[0::2] *= 999.0 / max(1, width - 1)
    points[1::2] *= 999.0 / max(1, height - 1)
    return Geometry(item.type, points.tolist())


def iou_matrix(
    preds: Sequence[PredItem],
    gts: Sequence[GTItem],
    width: int,
    height: int,
    maskiou_resolution: int = MASKIOU_RESOLUTION,
) -> np.ndarray:
    """IoU of every (pred, gt) pair of one image: float64 ``[P, G]`` in [0, 1].

    Box–box pairs: exact pixel box IoU. Pairs with a poly on either side: maskIoU (a raster
    error gives 0, as in 03 §3.4).
    """
    n_pred, n_gt = len(preds), len(gts)
    ious = np.zeros((n_pred, n_gt), dtype=np.float64)
    if n_pred == 0 or n_gt == 0:
        return ious
    pred_is_box = np.array([p.type == "bbox_2d" for p in preds])
    gt_is_box = np.array([g.type == "bbox_2d" for g in gts])
    box_pairs = pred_is_box[:, None] & gt_is_box[None, :]
    if box_pairs.any():
        pred_rows, gt_cols = np.flatnonzero(pred_is_box), np.flatnonzero(gt_is_box)
        pred_boxes = np.array([preds[i].points for i in pred_rows], dtype=np.float64)
        gt_boxes = np.array([gts[j].points for j in gt_cols], dtype=np.float64)
        ious[np.ix_(pred_rows, gt_cols)] = box_iou_matrix(pred_boxes, gt_boxes)
    if not box_pairs.all():
        masks = maskiou_matrix(
            [_bin_frame(p, width, height) for p in preds],
            [_bin_frame(g, width, height) for g in gts],
            candidates=~box_pairs,
            resolution=maskiou_resolution,
        )
        ious = np.where(box_pairs, ious, np.nan_to_num(masks.values, nan=0.0))
    return ious
