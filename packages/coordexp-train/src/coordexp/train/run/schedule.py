"""Learning-rate schedules as `torch.optim.lr_scheduler.LambdaLR` multipliers.

`warmup_steps` ramps linearly from 0 to 1; after it `constant`, `linear` (to 0 at `total_steps`)
or `cosine` (half cosine to `min_lr_ratio`). Pure functions of the optimizer step, so resume
restores the schedule by restoring the step count.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "linear", "cosine")


def lr_multiplier(step: int, *, kind: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; expected one of {SCHEDULES}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "linear":
        return max(min_lr_ratio, 1.0 - progress)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, kind: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(
            step, kind=kind, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
        ),
    )
