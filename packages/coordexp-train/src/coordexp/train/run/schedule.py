"""Learning-rate schedules as `torch.optim.lr_scheduler.LambdaLR` multipliers.

`warmup_steps` ramps linearly from 0 to 1; after it `constant`, `linear` (to 0 at `total_steps`)
or `cosine` (half cosine to `min_lr_ratio`). Pure functions of the optimizer step, so resume
restores the schedule by restoring the step count.

The total is held by a :class:`Horizon`, which a run may fix once, at the end of warm-up: up to
and including step ``warmup_steps`` no multiplier depends on the total (the ramp, then progress 0),
so a run whose total is fixed there has exactly the learning rates of a run configured with that
total from the start (`coordexp demo` fits Stage-1 to its time budget this way).
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


class Horizon:
    """The schedule's total step count; :meth:`fix` may change it once, by the end of warm-up."""

    def __init__(self, total_steps: int, *, warmup_steps: int) -> None:
        self._total = total_steps
        self.warmup_steps = warmup_steps
        self.fixed_at: int | None = None

    @property
    def total_steps(self) -> int:
        return self._total

    def fix(self, total_steps: int, *, at_step: int) -> None:
        """Set the total after `at_step` optimizer steps; only once, and only by step `warmup_steps`,
        after which the multipliers already used would have depended on the old total."""
        if self.fixed_at is not None:
            raise ValueError(f"the schedule's total was already fixed at step {self.fixed_at}")
        if at_step > self.warmup_steps:
            raise ValueError(
                f"the schedule's total can only be fixed by the end of warm-up (step {self.warmup_steps}), "
                f"not at step {at_step}"
            )
        if total_steps <= at_step:
            raise ValueError(f"a total of {total_steps} steps leaves none after step {at_step}")
        self._total, self.fixed_at = total_steps, at_step

    def restore(self, total_steps: int, fixed_at: int | None) -> None:
        """Take a checkpoint's horizon on resume (its total was already fixed in the saved run)."""
        if total_steps < 1:
            raise ValueError(f"a checkpoint's total of {total_steps} steps is not a run")
        self._total, self.fixed_at = total_steps, fixed_at

    def as_dict(self) -> dict[str, int | None]:
        return {"total_steps": self._total, "fixed_at": self.fixed_at}


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    kind: str,
    warmup_steps: int,
    total_steps: int | Horizon,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` over `total_steps`: a count, or a :class:`Horizon` whose total is read at every step."""
    if isinstance(total_steps, Horizon):
        horizon = total_steps
    else:
        horizon = Horizon(total_steps, warmup_steps=warmup_steps)
    if horizon.warmup_steps != warmup_steps:
        raise ValueError(f"the horizon's warm-up {horizon.warmup_steps} is not the schedule's {warmup_steps}")

    def multiplier(step: int) -> float:
        return lr_multiplier(
            step, kind=kind, warmup_steps=warmup_steps, total_steps=horizon.total_steps, min_lr_ratio=min_lr_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
