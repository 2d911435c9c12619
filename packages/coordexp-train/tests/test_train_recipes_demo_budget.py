"""`fit_steps`: the demo's step counts scaled to a wall-clock budget (recipes/demo_budget.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError
from coordexp.train.recipes.demo import DemoSettings
from coordexp.train.recipes.demo_budget import MARGIN, MIN_STAGE1_FRACTION, BudgetPlan, StepTimes, fit_steps

SLOW = StepTimes(vision_step_s=0.17, stage1_step_s=0.96, probe_s=20.0)


def test_counts_that_fit_are_kept():
    # 40 s of setup and probe + 70·0.5 + 1200·0.12 + 1000·0.5
    plan = fit_steps(900.0, 40.0, StepTimes(0.12, 0.5, 15.0), vision_steps=1200, stage1_steps=1000)
    assert plan.full and (plan.vision_fraction, plan.stage1_fraction) == (1.0, 1.0)
    assert (plan.vision_steps, plan.stage1_steps) == (1200, 1000)
    assert plan.projected_total_s == pytest.approx(40 + 35 + 144 + 500)
    assert "the full counts fit" in plan.describe()


def test_stage1_takes_the_cut_while_it_keeps_its_floor():
    plan = fit_steps(900.0, 60.0, SLOW, vision_steps=1200, stage1_steps=1000)
    available = (1 - MARGIN) * 900 - 60 - 70 * 0.96
    assert plan.vision_fraction == 1.0 and plan.vision_steps == 1200
    assert plan.stage1_fraction == pytest.approx((available - 1200 * 0.17) / (1000 * 0.96))
    assert MIN_STAGE1_FRACTION < plan.stage1_fraction < 1.0
    assert plan.stage1_steps == math.floor(plan.stage1_fraction * 1000)
    assert available - 0.96 < plan.projected_total_s - 60 - 70 * 0.96 <= available  # within a step


def test_below_the_floor_both_phases_keep_the_same_share_of_it():
    plan = fit_steps(600.0, 60.0, SLOW, vision_steps=1200, stage1_steps=1000)
    available = (1 - MARGIN) * 600 - 60 - 70 * 0.96
    k = available / (1200 * 0.17 + MIN_STAGE1_FRACTION * 1000 * 0.96)
    assert 0 < k < 1
    assert plan.vision_fraction == pytest.approx(k)
    assert plan.stage1_fraction == pytest.approx(k * MIN_STAGE1_FRACTION)
    assert plan.vision_steps == math.floor(k * 1200)
    assert plan.stage1_steps == math.floor(k * MIN_STAGE1_FRACTION * 1000)


def test_the_cut_is_continuous_at_the_floor():
    # the budget at which Stage-1 sits exactly at its floor with the vision steps whole
    budget = (60 + 70 * 0.96 + 1200 * 0.17 + MIN_STAGE1_FRACTION * 1000 * 0.96) / (1 - MARGIN)
    above = fit_steps(budget + 1e-6, 60.0, SLOW, vision_steps=1200, stage1_steps=1000)
    below = fit_steps(budget - 1e-6, 60.0, SLOW, vision_steps=1200, stage1_steps=1000)
    assert above.stage1_fraction == pytest.approx(MIN_STAGE1_FRACTION) == pytest.approx(below.stage1_fraction)
    assert above.vision_fraction == 1.0 and below.vision_fraction == pytest.approx(1.0)


def test_a_phase_with_no_steps_stays_off_and_gives_its_time_to_the_other():
    plan = fit_steps(900.0, 60.0, StepTimes(0.0, 0.96, 10.0), vision_steps=0, stage1_steps=1000)
    assert plan.vision_steps == 0
    assert plan.stage1_steps == math.floor(((1 - MARGIN) * 900 - 60 - 70 * 0.96) / 0.96)


def test_an_impossible_budget_keeps_one_step_per_phase_and_projects_the_overrun():
    plan = fit_steps(60.0, 55.0, SLOW, vision_steps=1200, stage1_steps=1000)
    assert plan.vision_fraction == 0.0 and plan.stage1_fraction == 0.0
    assert (plan.vision_steps, plan.stage1_steps) == (1, 1)
    assert plan.projected_total_s > 60.0
    assert "cut to fit (vision x0.00, Stage-1 x0.00)" in plan.describe()


@given(
    budget=st.floats(60, 7200),
    elapsed=st.floats(0, 300),
    tv=st.floats(0.01, 2.0),
    ts=st.floats(0.05, 5.0),
    vision=st.integers(0, 5000),
    stage1=st.integers(1, 5000),
)
def test_the_plan_never_adds_steps_cuts_stage1_first_and_fits_whenever_it_can(
    budget, elapsed, tv, ts, vision, stage1
):
    plan = fit_steps(budget, elapsed, StepTimes(tv, ts, 1.0), vision_steps=vision, stage1_steps=stage1)
    assert 0.0 <= plan.vision_fraction <= 1.0 and 0.0 <= plan.stage1_fraction <= 1.0
    assert plan.vision_steps <= vision and 1 <= plan.stage1_steps <= stage1
    assert (plan.vision_steps == 0) == (vision == 0)
    if plan.vision_fraction < 1.0:  # the vision steps are cut only below Stage-1's floor
        assert plan.stage1_fraction <= MIN_STAGE1_FRACTION + 1e-9
    if plan.vision_steps != 1 and plan.stage1_steps > 1:
        assert plan.projected_total_s <= (1 - MARGIN) * budget + 1e-6


def test_the_reproduce_arguments_rerun_the_counts_without_a_budget():
    plan = fit_steps(900.0, 60.0, SLOW, vision_steps=1200, stage1_steps=1000)
    assert plan.reproduce_args() == [
        "--budget", "0", "--vision-steps", str(plan.vision_steps), f"training.max_steps={plan.stage1_steps}",
    ]
    record = plan.as_dict()
    assert record["stage1_steps"] == plan.stage1_steps and record["reproduce"] == plan.reproduce_args()
    assert isinstance(plan, BudgetPlan) and "Rerun exactly: coordexp demo --budget 0" in plan.describe()


@pytest.mark.parametrize("budget", [0.0, -5.0, float("inf"), float("nan")])
def test_a_budget_that_is_not_a_positive_time_is_refused(budget):
    with pytest.raises(ConfigError, match="demo.budget"):
        fit_steps(budget, 0.0, SLOW, vision_steps=10, stage1_steps=10)
    with pytest.raises(ConfigError, match="demo.budget"):
        DemoSettings(budget_s=budget)


def test_negative_step_counts_are_refused():
    with pytest.raises(ConfigError, match="demo.stage1_steps"):
        fit_steps(900.0, 0.0, SLOW, vision_steps=10, stage1_steps=-1)


def test_the_demo_defaults_to_the_issue_budget_of_15_minutes_and_none_turns_it_off():
    assert DemoSettings().budget_s == 900.0
    assert DemoSettings(budget_s=None).budget_s is None
