"""Learning-rate schedules and the `Horizon` a run may fix at the end of warm-up (run/schedule.py)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from coordexp.train.run.schedule import SCHEDULES, Horizon, build_scheduler, lr_multiplier


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


def _scheduler(kind: str, warmup: int, total: int | Horizon, min_lr_ratio: float = 0.0):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return build_scheduler(
        optimizer, kind=kind, warmup_steps=warmup, total_steps=total, min_lr_ratio=min_lr_ratio
    )


def test_warmup_ramps_then_cosine_and_linear_decay_to_the_floor():
    def at(step: int, kind: str = "cosine", **floor: float) -> float:
        return lr_multiplier(step, kind=kind, warmup_steps=4, total_steps=12, **floor)

    assert [at(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert at(4) == 1.0 and at(8) == pytest.approx(0.5)
    assert at(12, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert at(8, "linear") == pytest.approx(0.5) and at(99, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_multiplier(0, kind="step", warmup_steps=0, total_steps=1)


@given(
    kind=st.sampled_from(SCHEDULES),
    warmup=st.integers(0, 30),
    cap=st.integers(1, 200),
    total=st.integers(1, 200),
    floor=st.sampled_from([0.0, 0.1]),
)
def test_a_total_fixed_at_the_end_of_warmup_gives_the_rates_of_a_run_built_with_it(
    kind, warmup, cap, total, floor
):
    total = max(total, warmup + 1)
    cap = max(cap, total)
    horizon = Horizon(cap, warmup_steps=warmup)
    fixed = _rates(_scheduler(kind, warmup, horizon, floor), total, fix=(warmup, horizon, total))
    assert horizon.total_steps == total and horizon.fixed_at == warmup
    assert fixed == _rates(_scheduler(kind, warmup, total, floor), total)


def test_the_total_is_fixed_once_and_only_by_the_end_of_warmup():
    horizon = Horizon(100, warmup_steps=10)
    with pytest.raises(ValueError, match="by the end of warm-up"):
        horizon.fix(50, at_step=11)
    with pytest.raises(ValueError, match="leaves none after step 10"):
        horizon.fix(10, at_step=10)
    horizon.fix(50, at_step=10)
    with pytest.raises(ValueError, match="already fixed at step 10"):
        horizon.fix(60, at_step=10)
    assert horizon.as_dict() == {"total_steps": 50, "fixed_at": 10}


def test_a_resumed_horizon_takes_the_checkpoints_total():
    horizon = Horizon(100, warmup_steps=10)
    horizon.restore(50, 10)
    assert horizon.as_dict() == {"total_steps": 50, "fixed_at": 10}
    scheduler = _scheduler("cosine", 10, horizon)
    rates = _rates(scheduler, 50)
    assert rates[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    with pytest.raises(ValueError, match="is not a run"):
        horizon.restore(0, None)


def test_a_horizon_with_another_warmup_is_refused():
    with pytest.raises(ValueError, match="warm-up 5 is not the schedule's 10"):
        _scheduler("cosine", 10, Horizon(100, warmup_steps=5))
