"""Learning-rate schedules as `torch.optim.lr_scheduler.LambdaLR` multipliers.

`warmup_steps` ramps linearly from 0 to 1; after it `constant`, `linear` (to 0 at `total_steps`),
`cosine` (half cosine to `min_lr_ratio`) or `warmup_stable_decay` (1 until the last
`decay_ratio`·total steps, then linearly to `min_lr_ratio`; a coordexp extension of spec 05's
three). Pure functions of the optimizer step, so resume restores the schedule by restoring the
step count.

The total is held by a :class:`Horizon`, which a run may fix once, at a step up to which no
multiplier depended on the total (:meth:`Schedule.free_until`): the end of warm-up for `linear`
and `cosine` (the ramp, then progress 0), the start of the decay for `warmup_stable_decay`, any
step for `constant`. A run whose total is fixed there has exactly the learning rates of a run
configured with that total from the start (`coordexp demo` fits Stage-1 to its time budget so).
"""

from __future__ import annotations

import math

import attrs
import torch

SCHEDULES = ("constant", "linear", "cosine", "warmup_stable_decay")
#: `warmup_stable_decay`'s default share of the total spent decaying
DEFAULT_DECAY_RATIO = 0.2


def _check_ratio(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class Schedule:
    """A schedule's shape; the total step count is an argument of every method (a Horizon's)."""

    kind: str = attrs.field(validator=attrs.validators.in_(SCHEDULES))
    warmup_steps: int = attrs.field(validator=attrs.validators.ge(0))
    min_lr_ratio: float = 0.0
    decay_ratio: float = attrs.field(default=DEFAULT_DECAY_RATIO, validator=_check_ratio)

    def decay_start(self, total_steps: int) -> int:
        """`warmup_stable_decay`: the first step of the decay (never inside warm-up)."""
        return max(self.warmup_steps, total_steps - math.ceil(self.decay_ratio * total_steps))

    def free_until(self, total_steps: int) -> int:
        """The last step whose multiplier is the same for every total whose own `free_until` is
        at least that step (so a total may be fixed after that many steps)."""
        if self.kind == "constant":
            return total_steps - 1
        if self.kind == "warmup_stable_decay":
            return self.decay_start(total_steps)
        return self.warmup_steps

    def multiplier(self, step: int, total_steps: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "warmup_stable_decay":
            start = self.decay_start(total_steps)
            if step < start:
                return 1.0
            progress = min(1.0, (step - start) / max(1, total_steps - start))
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 - progress)
        span = max(1, total_steps - self.warmup_steps)
        progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        if self.kind == "linear":
            return max(self.min_lr_ratio, 1.0 - progress)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(
    step: int,
    *,
    kind: str,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
    decay_ratio: float = DEFAULT_DECAY_RATIO,
) -> float:
    if kind not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; expected one of {SCHEDULES}")
    schedule = Schedule(
        kind=kind, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, decay_ratio=decay_ratio
    )
    return schedule.multiplier(step, total_steps)


class Horizon:
    """The schedule's total step count; :meth:`fix` may change it once, while no multiplier used
    so far depends on it."""

    def __init__(self, total_steps: int, *, schedule: Schedule) -> None:
        self._total = total_steps
        self.schedule = schedule
        self.fixed_at: int | None = None

    @property
    def total_steps(self) -> int:
        return self._total

    @property
    def warmup_steps(self) -> int:
        return self.schedule.warmup_steps

    def fixable_through(self) -> int:
        """The last step after which the (unfixed) total may still be fixed."""
        return self.schedule.free_until(self._total)

    def smallest_fixable_total(self, total_steps: int, *, at_step: int) -> int:
        """The smallest total >= `total_steps` that may be fixed after `at_step` steps (one whose
        decay, if any, has not begun by then)."""
        total = max(total_steps, at_step + 1)
        while self.schedule.free_until(total) < at_step:
            total += 1
        return total

    def fix(self, total_steps: int, *, at_step: int) -> None:
        """Set the total after `at_step` optimizer steps; only once, and only while no multiplier
        used so far (under the old total or the new one) depends on the total."""
        if self.fixed_at is not None:
            raise ValueError(f"the schedule's total was already fixed at step {self.fixed_at}")
        if at_step > self.fixable_through():
            raise ValueError(
                f"the schedule's total can only be fixed by step {self.fixable_through()} "
                f"({self.schedule.kind}, {self.warmup_steps} warm-up steps), not at step {at_step}"
            )
        if total_steps <= at_step:
            raise ValueError(f"a total of {total_steps} steps leaves none after step {at_step}")
        if self.schedule.free_until(total_steps) < at_step:
            raise ValueError(
                f"a total of {total_steps} steps would have begun its decay before step {at_step}"
            )
        self._total, self.fixed_at = total_steps, at_step

    def restore(self, total_steps: int, fixed_at: int | None) -> None:
        """Take a checkpoint's horizon on resume (its total was already fixed in the saved run)."""
        if total_steps < 1:
            raise ValueError(f"a checkpoint's total of {total_steps} steps is not a run")
        self._total, self.fixed_at = total_steps, fixed_at

    def as_dict(self) -> dict[str, int | None]:
        return {"total_steps": self._total, "fixed_at": self.fixed_at}


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: Schedule, total_steps: int | Horizon
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` over `total_steps`: a count, or a :class:`Horizon` whose total is read at every step."""
    horizon = total_steps if isinstance(total_steps, Horizon) else Horizon(total_steps, schedule=schedule)
    if horizon.schedule != schedule:
        raise ValueError(f"the horizon's schedule {horizon.schedule} is not the scheduler's {schedule}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule.multiplier(step, horizon.total_steps)
    )
