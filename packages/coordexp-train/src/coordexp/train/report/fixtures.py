"""Deterministic demo inputs of a report, for tests and documentation examples.

:func:`write_demo_eval_dir` writes images and a ``gt_vs_pred.jsonl`` (records from
:func:`coordexp.train.eval.fixtures.random_records`); :func:`write_demo_metrics` writes a
``metrics.jsonl`` in the executor's format (train lines each step, eval lines every 20 steps).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from coordexp.train.eval.fixtures import random_records
from coordexp.train.eval.records import GT_VS_PRED_FILE, ImageRecord, write_records


def write_demo_eval_dir(
    eval_dir: Path, n_images: int = 10, seed: int = 7, with_images: bool = True
) -> list[ImageRecord]:
    """Write ``n_images`` random records (30 % polys) and, optionally, a gradient image for each."""
    records = random_records(n_images, seed=seed, poly_fraction=0.3)
    if with_images:
        for record in records:
            path = eval_dir / record.image
            path.parent.mkdir(parents=True, exist_ok=True)
            ramp = np.linspace(40, 220, record.width).astype(np.uint8)
            pixels = np.broadcast_to(ramp[None, :, None], (record.height, record.width, 3))
            Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    write_records(eval_dir / GT_VS_PRED_FILE, records)
    return records


def write_demo_metrics(run_dir: Path, steps: int = 60) -> Path:
    """Write ``{run_dir}/metrics.jsonl`` with decaying losses and rising eval mAP/AP50."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, steps + 1):
        lines.append(
            {
                "step": step,
                "kind": "train",
                "loss/total": 2.0 * math.exp(-step / 25) + 0.2,
                "loss/gt/struct_ce": math.exp(-step / 20),
                "loss/gt/coord_soft_ce": math.exp(-step / 40),
                "train/lr_max": 1e-4,
                "train/grad_norm_max": None,  # the executor logs non-finite values as null
            }
        )
        if step % 20 == 0:
            lines.append(
                {
                    "step": step,
                    "kind": "eval",
                    "val/loss/total": 2.2 * math.exp(-step / 25) + 0.3,
                    "rollout/mAP": 0.4 * (1 - math.exp(-step / 30)),
                    "rollout/AP50": 0.6 * (1 - math.exp(-step / 30)),
                }
            )
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path
