"""Learning-rate schedules and the `Horizon` a run may fix while no rate depends on it (run/schedule.py)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from coordexp.train.run.schedule import SCHEDULES, Horizon, Schedule, build_scheduler, lr_multiplier


def _rates(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int, fix: tuple | None = None) -> list[float]:
    """The learning rate of each of `steps` optimizer steps; `fix = (at, horizon, total)` fixes the
    horizon after `at` steps, as the trainer does."""
    rates = []
    for step in range(steps):
        if fix is not None and step == fix[0]:
            fix[1].fix(fix[2], at_step=step)
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def _schedule(kind: str, warmup: int, min_lr_ratio: float = 0.0, decay_ratio: float = 0.2) -> Schedule:
    return Schedule(kind=kind, warmup_steps=warmup, min_lr_ratio=min_lr_ratio, decay_ratio=decay_ratio)


def _scheduler(schedule: Schedule, total: int | Horizon):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return build_scheduler(optimizer, schedule, total)


def test_warmup_ramps_then_cosine_and_linear_decay_to_the_floor():
    def at(step: int, kind: str = "cosine", **floor: float) -> float:
        return lr_multiplier(step, kind=kind, warmup_steps=4, total_steps=12, **floor)

    assert [at(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert at(4) == 1.0 and at(8) == pytest.approx(0.5)
    assert at(12, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert at(8, "linear") == pytest.approx(0.5) and at(99, "constant") == 1.0
    # warmup_stable_decay: 1 through step 9 (12 − ceil(0.2·12) = 9 starts the decay), then to 0 linearly
    assert [at(s, "warmup_stable_decay") for s in range(4, 12)] == pytest.approx([1] * 6 + [2 / 3, 1 / 3])
    assert at(11, "warmup_stable_decay", min_lr_ratio=0.1) == pytest.approx(0.1 + 0.9 / 3)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_multiplier(0, kind="step", warmup_steps=0, total_steps=1)


@given(
    kind=st.sampled_from(SCHEDULES),
    warmup=st.integers(0, 30),
    cap=st.integers(1, 200),
    total=st.integers(1, 200),
    floor=st.sampled_from([0.0, 0.1]),
    decay_ratio=st.sampled_from([0.05, 0.2, 1.0]),
    late=st.integers(0, 200),
)
def test_a_total_fixed_as_late_as_allowed_gives_the_rates_of_a_run_built_with_it(
    kind, warmup, cap, total, floor, decay_ratio, late
):
    schedule = _schedule(kind, warmup, floor, decay_ratio)
    total = max(total, warmup + 1)
    cap = max(cap, total)
    horizon = Horizon(cap, schedule=schedule)
    # any step from the end of warm-up up to the last one both totals leave free (never before
    # warm-up ends: a decay starts at the earliest there)
    at = min(warmup + late, schedule.free_until(cap), schedule.free_until(total))
    total = horizon.smallest_fixable_total(total, at_step=at)
    fixed = _rates(_scheduler(schedule, horizon), total, fix=(at, horizon, total))
    assert horizon.total_steps == total and horizon.fixed_at == at
    assert fixed == _rates(_scheduler(schedule, total), total)


def test_warmup_stable_decay_can_be_fixed_until_its_decay_begins():
    horizon = Horizon(100, schedule=_schedule("warmup_stable_decay", 10))  # decay from step 80
    assert horizon.fixable_through() == 80
    assert horizon.smallest_fixable_total(60, at_step=70) == 88  # 88 − ceil(17.6) = 70
    with pytest.raises(ValueError, match="would have begun its decay before step 70"):
        horizon.fix(80, at_step=70)  # 80 − 16 = 64
    with pytest.raises(ValueError, match="only be fixed by step 80"):
        horizon.fix(200, at_step=81)
    horizon.fix(88, at_step=70)
    assert horizon.as_dict() == {"total_steps": 88, "fixed_at": 70}


def test_the_total_is_fixed_once_and_only_by_the_end_of_warmup():
    horizon = Horizon(100, schedule=_schedule("cosine", 10))
    with pytest.raises(ValueError, match="only be fixed by step 10"):
        horizon.fix(50, at_step=11)
    with pytest.raises(ValueError, match="leaves none after step 10"):
        horizon.fix(10, at_step=10)
    horizon.fix(50, at_step=10)
    with pytest.raises(ValueError, match="already fixed at step 10"):
        horizon.fix(60, at_step=10)
    assert horizon.as_dict() == {"total_steps": 50, "fixed_at": 10}


def test_a_resumed_horizon_takes_the_checkpoints_total():
    horizon = Horizon(100, schedule=_schedule("cosine", 10))
    horizon.restore(50, 10)
    assert horizon.as_dict() == {"total_steps": 50, "fixed_at": 10}
    scheduler = _scheduler(_schedule("cosine", 10), horizon)
    rates = _rates(scheduler, 50)
    assert rates[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    with pytest.raises(ValueError, match="is not a run"):
        horizon.restore(0, None)


def test_a_horizon_of_another_schedule_is_refused_and_bad_schedules_fail_early():
    with pytest.raises(ValueError, match="is not the scheduler's"):
        _scheduler(_schedule("cosine", 10), Horizon(100, schedule=_schedule("cosine", 5)))
    with pytest.raises(ValueError, match="decay_ratio must be in"):
        _schedule("warmup_stable_decay", 0, decay_ratio=0.0)
    with pytest.raises(ValueError, match="kind"):
        _schedule("step", 0)
