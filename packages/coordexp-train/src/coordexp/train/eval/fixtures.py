"""Deterministic synthetic ``gt_vs_pred`` records for tests, parity checks and report demos.

:func:`random_records` draws images with random GT boxes (and optionally polys) and predictions
that are jittered copies of GT objects (sometimes with a wrong desc), duplicates and pure false
positives, with random scores. Everything derives from the ``seed`` argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coordexp.train.eval.records import GTItem, ImageRecord, ParseSummary, PredItem

DEFAULT_DESCS: tuple[str, ...] = ("cat", "dog", "person", "red car", "traffic light")


def simple_record(
    image_id: int,
    gt: Sequence[GTItem],
    pred: Sequence[PredItem],
    *,
    width: int = 640,
    height: int = 480,
    score_source: str = "coord_logprob",
    image: str | None = None,
    invalid_rollout: bool = False,
    truncated: bool = False,
    errors: Sequence[str] = (),
) -> ImageRecord:
    """An :class:`ImageRecord` with plausible defaults for the generation fields."""
    return ImageRecord(
        image_id=image_id,
        image=image if image is not None else f"images/{image_id:05d}.png",
        width=width,
        height=height,
        gt=gt,
        pred=pred,
        pred_score_source=score_source,
        raw_output="",
        ends_with_eos=not truncated,
        truncated=truncated,
        invalid_rollout=invalid_rollout,
        parse=ParseSummary(len(pred)),
        errors=errors,
    )


def _random_box(rng: np.random.Generator, width: int, height: int) -> list[int]:
    x1 = int(rng.integers(0, width - 2))
    y1 = int(rng.integers(0, height - 2))
    x2 = int(rng.integers(x1 + 1, min(width - 1, x1 + width // 2) + 1))
    y2 = int(rng.integers(y1 + 1, min(height - 1, y1 + height // 2) + 1))
    return [x1, y1, x2, y2]


def _jitter(
    rng: np.random.Generator, points: Sequence[int], width: int, height: int, scale: int
) -> list[int]:
    noise = rng.integers(-scale, scale + 1, size=len(points))
    out = np.asarray(points) + noise
    out[0::2] = np.clip(out[0::2], 0, width - 1)
    out[1::2] = np.clip(out[1::2], 0, height - 1)
    if len(points) == 4:
        out = np.array([min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]), max(out[1], out[3])])
    return out.tolist()


def _box_poly(box: Sequence[int]) -> list[int]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2, y1, (x1 + x2) // 2, y2]


def random_records(
    n_images: int,
    seed: int,
    *,
    descs: Sequence[str] = DEFAULT_DESCS,
    size: tuple[int, int] = (640, 480),
    max_gt: int = 6,
    poly_fraction: float = 0.0,
) -> list[ImageRecord]:
    """``n_images`` records with ids ``0..n_images−1``; ``poly_fraction`` of objects are triangles."""
    rng = np.random.default_rng(seed)
    width, height = size
    records = []
    for image_id in range(n_images):
        gt = []
        for _ in range(int(rng.integers(0, max_gt + 1))):
            box = _random_box(rng, width, height)
            desc = str(rng.choice(descs))
            if rng.random() < poly_fraction:
                gt.append(GTItem("poly", _box_poly(box), desc))
            else:
                gt.append(GTItem("bbox_2d", box, desc))
        candidates = []
        for g in gt:
            if rng.random() < 0.8:
                desc = g.desc if rng.random() < 0.8 else str(rng.choice(descs))
                candidates.append((g.type, _jitter(rng, g.points, width, height, 12), desc))
            if rng.random() < 0.15:
                candidates.append((g.type, _jitter(rng, g.points, width, height, 30), g.desc))
        for _ in range(int(rng.integers(0, 3))):
            candidates.append(("bbox_2d", _random_box(rng, width, height), str(rng.choice(descs))))
        order = rng.permutation(len(candidates))
        pred = [
            PredItem(
                candidates[i][0], candidates[i][1], candidates[i][2], float(rng.uniform(0.01, 1.0)), index
            )
            for index, i in enumerate(order.tolist())
        ]
        records.append(simple_record(image_id, gt, pred, width=width, height=height))
    return records
