"""Batched poly OT (spec 03 §3.5): one pass over a sample's pairs equals the per-pair targets, a
problem's plan does not depend on the other problems of its batch, and batched plans match POT."""

from __future__ import annotations

import numpy as np
import ot as pot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.rollout import ot as ot_mod
from coordexp.rollout.maskiou import Geometry, GeometryBatch
from coordexp.rollout.ot import (
    OTFailure,
    OTTarget,
    PolyOTConfig,
    ot_targets,
    ot_targets_many,
    sinkhorn_plan,
    sinkhorn_plans,
)

bins = st.integers(0, 999)


@st.composite
def shapes(draw) -> Geometry:
    if draw(st.booleans()):
        x1, x2 = sorted((draw(bins), draw(bins)))
        y1, y2 = sorted((draw(bins), draw(bins)))
        return Geometry("bbox_2d", (x1, y1, x2, y2))
    n = draw(st.integers(3, 20))  # up to 20 vertices: three padded sizes (8, 16, 24)
    return Geometry("poly", tuple(draw(bins) for _ in range(2 * n)))


configs = st.builds(
    PolyOTConfig,
    epsilon=st.sampled_from([0.5, 1.0, 10.0, 100.0]),
    iters=st.integers(1, 40),
    cost=st.sampled_from(["l2", "l1"]),
)


def _per_pair(pred: Geometry, gt: Geometry, cfg: PolyOTConfig) -> OTTarget | str:
    try:
        return ot_targets(pred, gt, cfg)
    except OTFailure as failure:
        return f"failure: {failure}"


@settings(max_examples=100, deadline=None)
@given(
    preds=st.lists(shapes(), min_size=1, max_size=8),
    gts=st.lists(shapes(), min_size=1, max_size=8),
    cfg=configs,
    data=st.data(),
)
def test_batch_equals_per_pair_to_the_bit(preds, gts, cfg, data) -> None:
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, len(preds) - 1), st.integers(0, len(gts) - 1)), max_size=12)
    )
    batched = ot_targets_many(GeometryBatch.of(preds), GeometryBatch.of(gts), pairs, cfg)
    got = [f"failure: {r}" if isinstance(r, OTFailure) else r for r in batched]
    assert got == [_per_pair(preds[p], gts[g], cfg) for p, g in pairs]


def test_a_failing_batch_is_redone_pair_by_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    preds = [Geometry("poly", (0, 0, 10, 0, 5, 5)), Geometry("poly", (100, 100, 140, 100, 120, 130))]
    gts = [Geometry("poly", (1, 1, 11, 1, 6, 6)), Geometry("poly", (101, 100, 141, 100, 121, 131))]
    expected = [ot_targets(preds[0], gts[0]), ot_targets(preds[1], gts[1])]
    real = ot_mod._padded_plans

    def fails_for_batches(cost, n_rows, n_cols, epsilon, iters):
        if cost.shape[0] > 1:
            raise FloatingPointError("batch trouble")
        return real(cost, n_rows, n_cols, epsilon, iters)

    monkeypatch.setattr(ot_mod, "_padded_plans", fails_for_batches)
    batch = ot_targets_many(GeometryBatch.of(preds), GeometryBatch.of(gts), [(0, 0), (1, 1)])
    assert batch == expected


def _guarded_transcription(cost: np.ndarray, epsilon: float, iters: int, floor: float) -> np.ndarray:
    n, m = cost.shape
    kernel = np.exp(np.clip(-cost / epsilon, -floor, floor))
    v = np.ones(m)
    for _ in range(iters):
        kv = kernel @ v
        u = (1.0 / n) / np.where(kv == 0, 1.0, kv)
        ktu = kernel.T @ u
        v = (1.0 / m) / np.where(ktu == 0, 1.0, ktu)
    return u[:, None] * kernel * v[None, :]


def test_zero_denominators_follow_the_spec_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the −50 clamp a denominator never vanishes; lifting the clamp lets exp underflow to 0 for
    # the far point, so the unguarded pass leaves inf/nan and the guarded rerun must take over.
    monkeypatch.setattr(ot_mod, "LOG_KERNEL_FLOOR", 1e4)
    cost = np.array([[0.0, 3.0, 5.0], [9000.0, 9500.0, 9900.0]])
    plan = sinkhorn_plan(cost, 1.0, 7)
    reference = _guarded_transcription(cost, 1.0, 7, 1e4)
    assert np.isfinite(plan).all() and (plan[1] == 0).all()
    np.testing.assert_allclose(plan, reference, rtol=1e-12, atol=0)


def _batch_of(costs: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    padded = np.zeros((len(costs), size, size))
    for k, cost in enumerate(costs):
        padded[k, : cost.shape[0], : cost.shape[1]] = cost
    return padded, np.array([c.shape[0] for c in costs]), np.array([c.shape[1] for c in costs])


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    others=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), max_size=6),
    shape=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    position=st.integers(0, 6),
    epsilon=st.sampled_from([0.5, 10.0, 100.0]),
    iters=st.integers(1, 40),
)
def test_a_plan_does_not_depend_on_the_other_problems_of_its_batch(
    seed, others, shape, position, epsilon, iters
) -> None:
    # Neighbours of the same and of other sizes in the same padded slot (8 x 8), before and after.
    rng = np.random.default_rng(seed)
    costs = [rng.uniform(0.0, 1413.0, size=s) for s in [*others, shape, shape]]
    target = costs.pop(len(others))
    position = min(position, len(costs))
    costs.insert(position, target)
    batch = sinkhorn_plans(*_batch_of(costs, 8), epsilon, iters)
    alone = sinkhorn_plans(*_batch_of([target], 8), epsilon, iters)
    assert batch[position].tobytes() == alone[0].tobytes()
    n, m = shape
    assert batch[position, :n, :m].tobytes() == sinkhorn_plan(target, epsilon, iters).tobytes()


def test_a_degenerate_neighbour_leaves_a_plan_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lifting the clamp makes the first problem's kernel underflow: its unguarded rounds go
    # non-finite and it is rerun with the guard; the second problem's bits must not change.
    monkeypatch.setattr(ot_mod, "LOG_KERNEL_FLOOR", 1e4)
    degenerate = np.array([[0.0, 3.0, 5.0], [9000.0, 9500.0, 9900.0]])
    normal = np.random.default_rng(0).uniform(0.0, 300.0, size=(5, 6))
    batch = sinkhorn_plans(*_batch_of([degenerate, normal], 8), 1.0, 7)
    alone = sinkhorn_plans(*_batch_of([normal], 8), 1.0, 7)
    assert np.isfinite(batch).all()
    assert batch[1].tobytes() == alone[0].tobytes()
    np.testing.assert_allclose(
        batch[0, :2, :3], _guarded_transcription(degenerate, 1.0, 7, 1e4), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("epsilon", [20.0, 80.0])
def test_batched_converged_plans_match_pot(epsilon: float) -> None:
    # The batched path itself (problems of several sizes side by side) against POT's solver.
    rng = np.random.default_rng(7)
    shapes_ = [(6, 8), (3, 5), (8, 8), (4, 2)]
    points = [(rng.uniform(0, 300, size=(n, 2)), rng.uniform(0, 300, size=(m, 2))) for n, m in shapes_]
    costs = [np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(axis=-1)) for p, g in points]
    plans = sinkhorn_plans(*_batch_of(costs, 8), epsilon, 3000)
    for k, ((n, m), cost) in enumerate(zip(shapes_, costs, strict=True)):
        reference = pot.sinkhorn(
            np.full(n, 1 / n), np.full(m, 1 / m), cost, epsilon, numItermax=3000, stopThr=1e-14
        )
        np.testing.assert_allclose(plans[k, :n, :m], reference, atol=1e-10)
        assert not plans[k, n:].any() and not plans[k, :, m:].any()
