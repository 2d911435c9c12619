"""`fit_steps`: the demo's step counts scaled to a wall-clock budget (recipes/demo_budget.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError
from coordexp.train.recipes.demo import DemoSettings
from coordexp.train.recipes.demo_budget import (
    FIXED_COST_IN_PACKS,
    MARGIN,
    MIN_STAGE1_FRACTION,
    BudgetPlan,
    StepTimes,
    fit_steps,
    stage1_decider,
)

# the 2-core EPYC: 2 packs per Stage-1 step at 0.48 s, so 0.24 s per pack
SLOW = StepTimes(vision_step_s=0.17, stage1_step_s=0.48, probe_s=20.0, stage1_packs=2)
FIXED = FIXED_COST_IN_PACKS * 0.24


def test_counts_that_fit_are_kept():
    # 40 s of setup and probe + fixed costs of 280 packs at 0.125 s + 1200·0.12 + 2000·0.25
    times = StepTimes(0.12, 0.25, 15.0, stage1_packs=2)
    plan = fit_steps(900.0, 40.0, times, vision_steps=1200, stage1_steps=2000)
    assert plan.full and (plan.vision_fraction, plan.stage1_fraction) == (1.0, 1.0)
    assert (plan.vision_steps, plan.stage1_steps) == (1200, 2000)
    assert plan.projected_total_s == pytest.approx(40 + 280 * 0.125 + 144 + 500)
    assert "the full counts fit" in plan.describe()


def test_stage1_takes_the_cut_while_it_keeps_its_floor():
    plan = fit_steps(900.0, 60.0, SLOW, vision_steps=1200, stage1_steps=2000)
    available = (1 - MARGIN) * 900 - 60 - FIXED
    assert plan.vision_fraction == 1.0 and plan.vision_steps == 1200
    assert plan.stage1_fraction == pytest.approx((available - 1200 * 0.17) / (2000 * 0.48))
    assert MIN_STAGE1_FRACTION < plan.stage1_fraction < 1.0
    assert plan.stage1_steps == math.floor(plan.stage1_fraction * 2000)
    assert available - 0.48 < plan.projected_total_s - 60 - FIXED <= available  # within a step


def test_below_the_floor_both_phases_keep_the_same_share_of_it():
    plan = fit_steps(600.0, 60.0, SLOW, vision_steps=1200, stage1_steps=2000)
    available = (1 - MARGIN) * 600 - 60 - FIXED
    k = available / (1200 * 0.17 + MIN_STAGE1_FRACTION * 2000 * 0.48)
    assert 0 < k < 1
    assert plan.vision_fraction == pytest.approx(k)
    assert plan.stage1_fraction == pytest.approx(k * MIN_STAGE1_FRACTION)
    assert plan.vision_steps == math.floor(k * 1200)
    assert plan.stage1_steps == math.floor(k * MIN_STAGE1_FRACTION * 2000)


def test_the_cut_is_continuous_at_the_floor():
    # the budget at which Stage-1 sits exactly at its floor with the vision steps whole
    budget = (60 + FIXED + 1200 * 0.17 + MIN_STAGE1_FRACTION * 2000 * 0.48) / (1 - MARGIN)
    above = fit_steps(budget + 1e-6, 60.0, SLOW, vision_steps=1200, stage1_steps=2000)
    below = fit_steps(budget - 1e-6, 60.0, SLOW, vision_steps=1200, stage1_steps=2000)
    assert above.stage1_fraction == pytest.approx(MIN_STAGE1_FRACTION) == pytest.approx(below.stage1_fraction)
    assert above.vision_fraction == 1.0 and below.vision_fraction == pytest.approx(1.0)


def test_a_phase_with_no_steps_stays_off_and_gives_its_time_to_the_other():
    no_vision = StepTimes(0.0, 0.48, 10.0, stage1_packs=2)
    plan = fit_steps(900.0, 60.0, no_vision, vision_steps=0, stage1_steps=2000)
    assert plan.vision_steps == 0
    assert plan.stage1_steps == math.floor(((1 - MARGIN) * 900 - 60 - FIXED) / 0.48)


def test_an_impossible_budget_keeps_one_step_per_phase_and_projects_the_overrun():
    plan = fit_steps(60.0, 55.0, SLOW, vision_steps=1200, stage1_steps=2000)
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
    packs=st.integers(1, 8),
)
def test_the_plan_never_adds_steps_cuts_stage1_first_and_fits_whenever_it_can(
    budget, elapsed, tv, ts, vision, stage1, packs
):
    times = StepTimes(tv, ts, 1.0, stage1_packs=packs)
    plan = fit_steps(budget, elapsed, times, vision_steps=vision, stage1_steps=stage1)
    assert 0.0 <= plan.vision_fraction <= 1.0 and 0.0 <= plan.stage1_fraction <= 1.0
    assert plan.vision_steps <= vision and 1 <= plan.stage1_steps <= stage1
    assert (plan.vision_steps == 0) == (vision == 0)
    if plan.vision_fraction < 1.0:  # the vision steps are cut only below Stage-1's floor
        assert plan.stage1_fraction <= MIN_STAGE1_FRACTION + 1e-9
    if plan.vision_steps != 1 and plan.stage1_steps > 1:
        assert plan.projected_total_s <= (1 - MARGIN) * budget + 1e-6


def test_the_fixed_costs_count_in_packs_so_the_packs_per_step_do_not_change_them():
    four = StepTimes(0.17, 0.96, 20.0, stage1_packs=4)  # the same machine, twice the packs per step
    two, four_plan = fit_steps(900.0, 60.0, SLOW, vision_steps=1200, stage1_steps=2000), fit_steps(
        900.0, 60.0, four, vision_steps=1200, stage1_steps=1000
    )
    assert SLOW.pack_s == four.pack_s == pytest.approx(0.24)
    assert two.projected_total_s == pytest.approx(four_plan.projected_total_s, abs=0.96)
    assert two.stage1_steps // 2 == four_plan.stage1_steps


@pytest.mark.parametrize("packs", [0, -1, 1.5, True])
def test_a_probe_without_a_whole_positive_pack_count_is_refused(packs):
    with pytest.raises(ValueError, match="stage1_packs"):
        StepTimes(0.1, 0.5, 1.0, stage1_packs=packs)


def test_the_reproduce_arguments_rerun_the_counts_without_a_budget():
    plan = fit_steps(900.0, 60.0, SLOW, vision_steps=1200, stage1_steps=2000)
    assert plan.reproduce_args() == [
        "--budget", "0", "--vision-steps", str(plan.vision_steps), f"training.max_steps={plan.stage1_steps}",
    ]
    record = plan.as_dict()
    assert record["stage1_steps"] == plan.stage1_steps and record["reproduce"] == plan.reproduce_args()
    assert isinstance(plan, BudgetPlan)
    assert f"{plan.stage1_steps} Stage-1 steps by the probe" in plan.describe()


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


def test_stage1_decider_fills_the_time_left_after_what_follows_stage1():
    now = [100.0]
    decide = stage1_decider(400.0, packs=2, after_cost_in_packs=200.0, drift=0.25, clock=lambda: now[0])
    # 300 s left, minus 200 packs at 0.25 s = 250 s for steps of 0.5 s, planned at 0.625 s (25 %
    # slower than measured): 400 more after the 20 done
    assert decide(20, 0.5) == 420
    now[0] = 360.0  # 40 s left, less than what follows Stage-1: one more step, never none
    assert decide(20, 0.5) == 21
    with pytest.raises(ValueError, match="packs"):
        stage1_decider(400.0, packs=0)


def test_a_plan_takes_the_count_the_run_fixed_and_reruns_it():
    probed = fit_steps(900.0, 60.0, SLOW, vision_steps=1200, stage1_steps=2000)
    assert probed.stage1_probed_steps is None and "by the probe" in probed.describe()
    ran = probed.with_stage1_run(900, of=2000)
    assert (ran.stage1_steps, ran.stage1_fraction) == (900, 0.45)
    assert ran.stage1_probed_steps == probed.stage1_steps
    assert ran.reproduce_args()[-1] == "training.max_steps=900"
    assert ran.as_dict()["stage1_probed_steps"] == probed.stage1_steps
    assert f"(probe: {probed.stage1_steps})" in ran.describe() and "rerun exactly" in ran.describe()


def test_the_demo_decodes_coords_by_expectation_unless_told_otherwise():
    assert DemoSettings().coord_pick == "expectation" and DemoSettings().decode_batch_size == 64
    assert DemoSettings(coord_pick="token").coord_pick == "token"
    with pytest.raises(ValueError, match="coord_pick"):
        DemoSettings(coord_pick="mean")
