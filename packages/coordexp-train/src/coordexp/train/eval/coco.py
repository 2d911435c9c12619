"""COCO bbox mAP of ``gt_vs_pred`` records (spec 06 §6.4; invariants I2, I3).

GT: a bbox becomes ``[x1, y1, x2−x1, y2−y1]`` pixels with ``area = w·h``; a poly becomes its
axis-aligned bounding box with the shoelace area of the polygon; ``iscrowd = 0``; degenerate
boxes are kept. Detections: the same xywh box, the category of the normalized desc, the score.
Detections are listed image by image in appearance order, so the stable COCO sort keeps that
order for equal scores. Parameters are the standard COCOeval bbox ones.

Backends: ``faster`` (faster-coco-eval, default) and ``pycocotools`` (the reference). Their
12-stat vectors agree to ~1e-16: pycocotools computes precision as ``tp/(tp+fp+eps)``, which is
``1 − 2⁻⁵²`` rather than 1.0 at a lone first true positive, and faster-coco-eval's C++ code gives
1.0 there. Both libraries print; their output is captured and kept as ``summary_text``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any, Literal, get_args

import attrs
import numpy as np

from coordexp.train.eval.categories import CategoryMap
from coordexp.train.eval.keys import COCO_STAT_KEYS, MAP_KEY
from coordexp.train.eval.records import GTItem, ImageRecord, PredItem

Backend = Literal["faster", "pycocotools"]
BACKENDS: tuple[str, ...] = get_args(Backend)

# Order of COCOeval's 12 bbox stats.
STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip


def check_backend(backend: Any) -> Backend:
    if backend not in BACKENDS:
        raise ValueError(f"COCO backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def shoelace_area(points: Sequence[int]) -> float:
    """Area of the polygon with flat vertices ``[x1, y1, x2, y2, ...]`` (absolute shoelace)."""
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def xywh(item: GTItem | PredItem) -> list[float]:
    """The item's axis-aligned box as COCO ``[x, y, w, h]`` pixels (a poly's AABB)."""
    xs, ys = item.points[0::2], item.points[1::2]
    x1, y1 = min(xs), min(ys)
    return [float(x1), float(y1), float(max(xs) - x1), float(max(ys) - y1)]


def gt_area(item: GTItem) -> float:
    """``w·h`` of a bbox; the shoelace area of a poly."""
    if item.type == "poly":
        return shoelace_area(item.points)
    _, _, w, h = xywh(item)
    return w * h


@attrs.frozen
class CocoInputs:
    """The COCO GT dataset dict, the detection list and the number of unmapped predictions."""

    gt: dict[str, Any]
    detections: list[dict[str, Any]]
    unmapped_pred_count: int


def coco_inputs(records: Sequence[ImageRecord], categories: CategoryMap) -> CocoInputs:
    """COCO GT dict and detections of ``records``; COCO image id = ``image_id + 1`` (ids ≥ 1)."""
    images, annotations, detections = [], [], []
    unmapped = 0
    for record in records:
        coco_id = record.image_id + 1
        images.append(
            {"id": coco_id, "width": record.width, "height": record.height, "file_name": record.image}
        )
        for item in record.gt:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": coco_id,
                    "category_id": categories.id_of(item.desc),
                    "bbox": xywh(item),
                    "area": gt_area(item),
                    "iscrowd": 0,
                }
            )
        for pred in record.pred:
            category = categories.id_of(pred.desc)
            if category is None:
                unmapped += 1
                continue
            detections.append(
                {"image_id": coco_id, "category_id": category, "bbox": xywh(pred), "score": pred.score}
            )
    gt = {"images": images, "annotations": annotations, "categories": categories.as_coco()}
    return CocoInputs(gt, detections, unmapped)


@attrs.frozen
class CocoResult:
    """COCOeval output: the 12 stats (``STAT_NAMES`` order; −1 = undefined) and the printed text.

    ``evaluated`` is False when there were no detections and COCOeval was skipped (stats all 0.0).
    """

    stats: tuple[float, ...]
    summary_text: str
    evaluated: bool

    def metric_values(self) -> dict[str, float]:
        """Logged keys: a stat of −1 drops its key, except ``rollout/mAP`` which becomes 0.0."""
        values: dict[str, float] = {}
        for name, stat in zip(STAT_NAMES, self.stats):
            key = COCO_STAT_KEYS.get(name)
            if key is None:
                continue
            if stat < 0:
                if key == MAP_KEY:
                    values[key] = 0.0
                continue
            values[key] = float(stat)
        return values


def _run_faster(gt: dict[str, Any], detections: list[dict[str, Any]]) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt, print_function=print)
    coco_dt = coco_gt.loadRes(detections)
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=print)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


def _run_pycocotools(gt: dict[str, Any], detections: list[dict[str, Any]]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(detections)
    evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


_RUNNERS = {"faster": _run_faster, "pycocotools": _run_pycocotools}


def run_cocoeval(inputs: CocoInputs, backend: Backend = "faster") -> CocoResult:
    """Standard COCOeval bbox on ``inputs`` with ``backend``; no detections → skipped, all 0.0.

    Both libraries mutate their inputs (detections gain ids and areas), so they get copies.
    """
    runner = _RUNNERS[check_backend(backend)]
    if not inputs.detections:
        return CocoResult((0.0,) * len(STAT_NAMES), "", evaluated=False)
    gt = {key: [dict(entry) for entry in value] for key, value in inputs.gt.items()}
    detections = [dict(d, bbox=list(d["bbox"])) for d in inputs.detections]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        stats = runner(gt, detections)
    if stats.shape[0] < len(STAT_NAMES):
        raise RuntimeError(f"{backend} COCOeval returned {stats.shape[0]} stats, expected {len(STAT_NAMES)}")
    summary = "\n".join(
        line for line in buffer.getvalue().splitlines() if line.lstrip().startswith("Average")
    )
    return CocoResult(tuple(float(s) for s in stats[: len(STAT_NAMES)]), summary, evaluated=True)


def coco_metrics(
    records: Sequence[ImageRecord], categories: CategoryMap, backend: Backend = "faster"
) -> CocoResult:
    """COCOeval bbox of ``records`` with ``categories`` (unmapped predictions left out)."""
    return run_cocoeval(coco_inputs(records, categories), backend)
