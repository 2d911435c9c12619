"""Batched poly OT (spec 03 §3.5): one pass over a sample's pairs equals the per-pair targets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.rollout import ot as ot_mod
from coordexp.rollout.maskiou import Geometry, GeometryBatch
from coordexp.rollout.ot import OTFailure, OTTarget, PolyOTConfig, ot_targets, ot_targets_many, sinkhorn_plan

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
