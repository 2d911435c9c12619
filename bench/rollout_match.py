"""Benchmark: Hungarian matching throughput on 30-prediction x 30-GT samples, one CPU core.

Prints one JSON object. Samples are synthetic and seeded: 30 GT objects (half boxes, half
polygons), and 30 predictions of which 24 are jittered copies of GT objects and 6 are random.

Named baseline, same run: ``pycocotools_candidates`` — the candidate pairs' mask IoU computed the
plain way (every geometry with a candidate pair rasterized by pycocotools, one ``iou`` call over the
block). ``maskiou_time_ratio`` = ``maskiou_matrix`` (closed-form boxes, disjoint-rectangle zeros,
pycocotools for the rest) / baseline; ``maskiou_identical_to_baseline`` checks the values agree.

    python bench/rollout_match.py [--samples 200] [--seed 0] [--top-k 10] [--resolution 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from pycocotools import mask as coco_mask

from coordexp.rollout.maskiou import Geometry, canvas_rings, maskiou_matrix
from coordexp.rollout.matching import MatchingConfig, aabbs, candidate_mask, match

N_GT = 30
N_PRED = 30
N_COPIES = 24


def _shape(rng: np.random.Generator, poly: bool) -> Geometry:
    w, h = rng.integers(20, 250, size=2)
    x, y = rng.integers(0, 999 - w), rng.integers(0, 999 - h)
    if not poly:
        return Geometry("bbox_2d", (x, y, x + w, y + h))
    n = int(rng.integers(4, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    cx, cy = x + w / 2, y + h / 2
    xs = np.clip(np.rint(cx + w / 2 * np.cos(angles)), 0, 999)
    ys = np.clip(np.rint(cy + h / 2 * np.sin(angles)), 0, 999)
    return Geometry("poly", tuple(int(v) for v in np.stack([xs, ys], 1).reshape(-1)))


def _jitter(rng: np.random.Generator, g: Geometry) -> Geometry:
    noisy = np.clip(np.asarray(g.values) + rng.integers(-12, 13, size=len(g.values)), 0, 999)
    if g.geom_key == "bbox_2d":
        noisy = np.concatenate([np.minimum(noisy[:2], noisy[2:]), np.maximum(noisy[:2], noisy[2:])])
    return Geometry(g.geom_key, tuple(int(v) for v in noisy))


def make_sample(rng: np.random.Generator) -> tuple[list[Geometry], list[Geometry]]:
    gts = [_shape(rng, poly=bool(k % 2)) for k in range(N_GT)]
    copies = [_jitter(rng, gts[i]) for i in rng.choice(N_GT, N_COPIES, replace=False)]
    extras = [_shape(rng, poly=bool(rng.integers(2))) for _ in range(N_PRED - N_COPIES)]
    preds = copies + extras
    return [preds[i] for i in rng.permutation(N_PRED)], gts


def pycocotools_candidates(
    preds: list[Geometry], gts: list[Geometry], mask: np.ndarray, resolution: int
) -> np.ndarray:
    """The baseline: rasterize every geometry that has a candidate pair, one iou call, NaN elsewhere."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    pred_rles = coco_mask.frPyObjects(
        canvas_rings([preds[i] for i in rows], resolution), resolution, resolution
    )
    gt_rles = coco_mask.frPyObjects(canvas_rings([gts[j] for j in cols], resolution), resolution, resolution)
    block = np.asarray(coco_mask.iou(pred_rles, gt_rles, [0] * len(gt_rles)), dtype=np.float64)
    values = np.full(mask.shape, np.nan)
    values[np.ix_(rows, cols)] = block.reshape(len(rows), len(cols))
    return np.where(mask, values, np.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        # One core: the process (and any BLAS threads it starts) runs on the first allowed CPU.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    cfg = MatchingConfig(candidate_top_k=args.top_k, maskiou_resolution=args.resolution)
    rng = np.random.default_rng(args.seed)
    samples = [make_sample(rng) for _ in range(args.samples)]
    for preds, gts in samples[:5]:
        match(preds, gts, cfg)  # warm-up

    match_s, maskiou_s, baseline_s, matched, cands = [], [], [], [], []
    identical = True
    for preds, gts in samples:
        t0 = time.perf_counter()
        result = match(preds, gts, cfg)
        match_s.append(time.perf_counter() - t0)
        matched.append(len(result.pairs))
        cands.append(result.candidate_pairs)
        mask = candidate_mask(aabbs(preds), aabbs(gts), cfg.candidate_top_k)
        t0 = time.perf_counter()
        ours = maskiou_matrix(preds, gts, mask, cfg.maskiou_resolution).values
        maskiou_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reference = pycocotools_candidates(preds, gts, mask, cfg.maskiou_resolution)
        baseline_s.append(time.perf_counter() - t0)
        identical = identical and np.array_equal(ours, reference, equal_nan=True)

    ms = sorted(1e3 * s for s in match_s)
    print(
        json.dumps(
            {
                "bench": "rollout_match",
                "preds_per_sample": N_PRED,
                "gts_per_sample": N_GT,
                "samples": args.samples,
                "candidate_top_k": cfg.candidate_top_k,
                "maskiou_resolution": cfg.maskiou_resolution,
                "samples_per_s": round(len(ms) / (sum(ms) / 1e3), 1),
                "ms_per_sample_mean": round(statistics.fmean(ms), 3),
                "ms_per_sample_p50": round(ms[len(ms) // 2], 3),
                "ms_per_sample_p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
                "maskiou_ms_per_sample_mean": round(1e3 * statistics.fmean(maskiou_s), 3),
                "baseline": "pycocotools_candidates",
                "baseline_ms_per_sample_mean": round(1e3 * statistics.fmean(baseline_s), 3),
                "maskiou_time_ratio": round(sum(maskiou_s) / sum(baseline_s), 3),
                "maskiou_identical_to_baseline": bool(identical),
                "matched_per_sample_mean": round(statistics.fmean(matched), 2),
                "candidate_pairs_per_sample": round(statistics.fmean(cands), 1),
                "cores": 1,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
