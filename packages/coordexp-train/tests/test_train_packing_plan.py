"""H1 (spec 07) and the step plan (spec 06 §6.7, 04 §4.1) as properties.

* The static plan is first-fit-decreasing on `(−len, index)`, deterministic, never splits a
  sample, keeps `Σ len ≤ cap`, ascending indices inside a pack, packs ordered by smallest index.
* The DDP pad/drop lengths are exact.
* `StepSchedule`: each rank gets E/W packs per step, ranks' slots are disjoint and cover the
  step, an epoch never visits a pack twice, and every answer is a pure function of the step (so
  resume is exact); the plan itself never changes with the epoch.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError, DataContractError
from coordexp.train.packing.plan import (
    StepSchedule,
    epoch_visit_order,
    first_fit_decreasing,
    fit_to_world,
    plan_sha256,
    sequential_groups,
)


@st.composite
def lengths_and_cap(draw: st.DrawFn) -> tuple[list[int], int]:
    cap = draw(st.integers(1, 300))
    lengths = draw(st.lists(st.integers(1, cap), min_size=0, max_size=60))
    return lengths, cap


def reference_ffd(lengths: list[int], cap: int) -> list[list[int]]:
    """Independent statement of the spec: visit samples by (−len, index); each goes into the
    earliest-opened pack whose running total stays ≤ cap, else opens a new one."""
    bins: list[list[int]] = []
    totals: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        target = next((b for b, total in enumerate(totals) if total + lengths[i] <= cap), None)
        if target is None:
            bins.append([])
            totals.append(0)
            target = len(bins) - 1
        bins[target].append(i)
        totals[target] += lengths[i]
    return sorted((sorted(b) for b in bins), key=lambda b: b[0])


@settings(max_examples=200, deadline=None)
@given(lengths_and_cap())
def test_ffd_plan_properties(case):
    lengths, cap = case
    packs = first_fit_decreasing(lengths, cap)
    # Deterministic and equal to the spec's statement.
    assert packs == first_fit_decreasing(list(lengths), cap) == reference_ffd(lengths, cap)
    # A partition of the samples: every index exactly once, never split.
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
    for pack in packs:
        assert pack and pack == sorted(pack)
        assert sum(lengths[i] for i in pack) <= cap
    assert [p[0] for p in packs] == sorted(p[0] for p in packs)
    # First fit: no two packs could have been merged, and the count is at least the volume bound.
    totals = [sum(lengths[i] for i in p) for p in packs]
    assert all(totals[a] + totals[b] > cap for a in range(len(packs)) for b in range(a + 1, len(packs)))
    assert len(packs) >= math.ceil(sum(lengths) / cap)


@settings(max_examples=100, deadline=None)
@given(lengths_and_cap(), st.integers(1, 5))
def test_plan_depends_only_on_lengths_and_cap(case, epochs):
    """Epoch invariance: nothing but (lengths, cap) enters the plan, so its sha256 is one value."""
    lengths, cap = case
    digests = {plan_sha256(first_fit_decreasing(lengths, cap)) for _ in range(epochs)}
    assert len(digests) == 1


def test_too_long_sample_is_a_data_error_naming_it():
    with pytest.raises(DataContractError) as err:
        first_fit_decreasing([3, 9, 4, 12], 8, sample_ids=["a", "b", "c", "d"])
    assert err.value.rule == "too_long"
    assert "'b' encodes to 9 tokens > template.max_length=8 (2 samples in all)" in str(err.value)


def test_cap_must_be_positive():
    with pytest.raises(ConfigError, match="packing cap must be >= 1"):
        first_fit_decreasing([1], 0)


def test_spec_example_ordering():
    # (−len, index): 5@1 and 5@3 tie → index 1 first; 4 joins the first pack with room.
    assert first_fit_decreasing([2, 5, 4, 5, 1], 9) == [[0, 3, 4], [1, 2]]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 8), st.booleans())
def test_fit_to_world_pad_and_drop_lengths(n_packs, world, drop_last):
    packs = [[i] for i in range(n_packs)]
    if drop_last and n_packs < world:
        with pytest.raises(ConfigError, match="cannot feed"):
            fit_to_world(packs, world, drop_last=True)
        return
    fitted = fit_to_world(packs, world, drop_last=drop_last)
    assert len(fitted) % world == 0
    if drop_last:
        assert len(fitted) == (n_packs // world) * world and fitted == packs[: len(fitted)]
    else:
        assert len(fitted) == math.ceil(n_packs / world) * world
        assert fitted[:n_packs] == packs
        # The padding repeats the plan from its start (spec: plan[:(−P) mod W]), cycling when P is tiny.
        assert fitted[n_packs:] == [packs[i % n_packs] for i in range(len(fitted) - n_packs)]
        if (-n_packs) % world <= n_packs:
            assert fitted == packs + packs[: (-n_packs) % world]


def test_empty_plan_is_an_error():
    with pytest.raises(ConfigError, match="packing plan is empty"):
        fit_to_world([], 2, drop_last=False)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 7))
def test_sequential_groups(n, size):
    groups = sequential_groups(n, size)
    assert [i for g in groups for i in g] == list(range(n))
    assert all(len(g) == size for g in groups[:-1]) and 1 <= len(groups[-1]) <= size


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, int, int]:
    world = draw(st.integers(1, 4))
    per_rank = draw(st.integers(1, 3))
    packs_per_step = world * per_rank
    n_packs = draw(st.integers(packs_per_step, 4 * packs_per_step + 3))
    seed = draw(st.integers(0, 2**31 - 1))
    return n_packs, packs_per_step, world, seed


@settings(max_examples=200, deadline=None)
@given(schedules(), st.integers(0, 3))
def test_step_schedule_properties(params, epoch):
    n_packs, e, world, seed = params
    schedule = StepSchedule(n_packs, packs_per_step=e, world_size=world, seed=seed)
    spe = schedule.steps_per_epoch
    assert spe == n_packs // e
    visited: list[int] = []
    for step in range(epoch * spe, (epoch + 1) * spe):
        assert schedule.epoch_of(step) == epoch
        per_rank = [schedule.packs_for(step, r) for r in range(world)]
        assert all(len(p) == e // world for p in per_rank)
        flat = [p for ps in per_rank for p in ps]
        assert len(set(flat)) == e  # disjoint slots, covering the step's E packs
        assert all(0 <= p < n_packs for p in flat)
        visited.extend(flat)
    # An epoch visits distinct packs: all of them when E divides P.
    assert len(set(visited)) == len(visited) == spe * e
    assert sorted(visited) == sorted(epoch_visit_order(n_packs, seed=seed, epoch=epoch)[: spe * e].tolist())


@settings(max_examples=100, deadline=None)
@given(schedules(), st.lists(st.integers(0, 50), min_size=1, max_size=12))
def test_resume_is_a_pure_function_of_the_step(params, steps):
    """A fresh schedule (a resumed run) answers any step, in any order, like the original."""
    n_packs, e, world, seed = params
    original = StepSchedule(n_packs, packs_per_step=e, world_size=world, seed=seed)
    expected = {s: [original.packs_for(s, r) for r in range(world)] for s in range(51)}
    resumed = StepSchedule(n_packs, packs_per_step=e, world_size=world, seed=seed)
    for s in steps:
        assert [resumed.packs_for(s, r) for r in range(world)] == expected[s]


def test_visit_order_is_seeded_per_epoch():
    a = epoch_visit_order(50, seed=0, epoch=0)
    assert sorted(a.tolist()) == list(range(50))
    assert a.tolist() == epoch_visit_order(50, seed=0, epoch=0).tolist()
    assert a.tolist() != epoch_visit_order(50, seed=0, epoch=1).tolist()
    assert a.tolist() != epoch_visit_order(50, seed=1, epoch=0).tolist()


def test_schedule_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="not divisible by world size 2"):
        StepSchedule(10, packs_per_step=3, world_size=2, seed=0)
    with pytest.raises(ConfigError, match="exceeds the 3 packs"):
        StepSchedule(3, packs_per_step=4, world_size=1, seed=0)
