"""Poly OT targets (spec 03 §3.5) and invariant E9."""

from __future__ import annotations

import numpy as np
import ot as pot
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from coordexp.core.errors import ConfigError
from coordexp.rollout import ot as ot_mod
from coordexp.rollout.maskiou import Geometry
from coordexp.rollout.ot import (
    OTFailure,
    OTTarget,
    PolyOTConfig,
    barycentric_projection,
    ot_targets,
    sinkhorn_plan,
)

bins = st.integers(0, 999)


@st.composite
def boxes(draw) -> Geometry:
    x1, x2 = sorted((draw(bins), draw(bins)))
    y1, y2 = sorted((draw(bins), draw(bins)))
    return Geometry("bbox_2d", (x1, y1, x2, y2))


polys = st.lists(st.tuples(bins, bins), min_size=3, max_size=10).map(
    lambda pts: Geometry("poly", tuple(v for p in pts for v in p))
)
ot_configs = st.builds(
    PolyOTConfig,
    epsilon=st.sampled_from([0.01, 0.5, 1.0, 10.0, 100.0, 1e4]),
    iters=st.integers(1, 60),
    cost=st.sampled_from(["l2", "l1"]),
)


def spec_plan(cost: np.ndarray, epsilon: float, iters: int) -> np.ndarray:
    """Direct transcription of spec 03 §3.5 steps 2-3."""
    n, m = cost.shape
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    kernel = np.exp(np.clip(-cost / epsilon, -50.0, 50.0))
    v = np.ones(m)
    for _ in range(iters):
        kv = kernel @ v
        u = a / np.where(kv == 0, 1.0, kv)
        ktu = kernel.T @ u
        v = b / np.where(ktu == 0, 1.0, ktu)
    return u[:, None] * kernel * v[None, :]


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    epsilon=st.sampled_from([0.3, 1.0, 10.0, 50.0, 1000.0]),
    iters=st.integers(1, 80),
)
def test_plan_is_the_spec_iteration(seed: int, n: int, m: int, epsilon: float, iters: int) -> None:
    # Costs up to ~1413 bins: the −50 clamp binds for small ε.
    cost = np.random.default_rng(seed).uniform(0.0, 1413.0, size=(n, m))
    np.testing.assert_allclose(
        sinkhorn_plan(cost, epsilon, iters), spec_plan(cost, epsilon, iters), rtol=1e-9, atol=0
    )


def test_plan_clamp_binds() -> None:
    cost = np.array([[0.0, 600.0], [900.0, 0.0]])
    plan = sinkhorn_plan(cost, 1.0, 5)
    # Both off-diagonal kernels are clamped to e^-50, so the plan is symmetric.
    assert plan[0, 1] == pytest.approx(plan[1, 0], rel=1e-12)
    assert plan[0, 1] > 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("epsilon", [20.0, 80.0])
def test_converged_plan_matches_pot(seed: int, epsilon: float) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 300, size=(6, 2))
    gt = rng.uniform(0, 300, size=(8, 2))
    cost = cdist(pred, gt)
    ours = sinkhorn_plan(cost, epsilon, 3000)
    reference = pot.sinkhorn(
        np.full(6, 1 / 6), np.full(8, 1 / 8), cost, epsilon, numItermax=3000, stopThr=1e-14
    )
    np.testing.assert_allclose(ours, reference, atol=1e-10)
    np.testing.assert_allclose(ours.sum(axis=0), 1 / 8, atol=1e-12)  # ends on the column update
    np.testing.assert_allclose(ours.sum(axis=1), 1 / 6, atol=1e-8)


@settings(max_examples=150, deadline=None)
@given(pred=st.one_of(polys, boxes()), gt=st.one_of(polys, boxes()), cfg=ot_configs)
def test_targets_lie_in_the_gt_aabb(pred: Geometry, gt: Geometry, cfg: PolyOTConfig) -> None:
    target = ot_targets(pred, gt, cfg)
    assert target.geom_key == pred.geom_key
    assert len(target.values) == len(pred.values)
    assert all(isinstance(v, int) for v in target.values)
    gt_pts = gt.points()
    xs, ys = target.values[0::2], target.values[1::2]
    assert min(xs) >= gt_pts[:, 0].min() and max(xs) <= gt_pts[:, 0].max()
    assert min(ys) >= gt_pts[:, 1].min() and max(ys) <= gt_pts[:, 1].max()
    if pred.geom_key == "bbox_2d":
        x1, y1, x2, y2 = target.values
        assert x1 <= x2 and y1 <= y2
    assert target.source == ("gt" if pred.geom_key == gt.geom_key == "bbox_2d" else "ot")


def _min_distinct_distance(points: np.ndarray) -> float:
    d = cdist(points, points)
    d = d[d > 0]
    return float(d.min()) if d.size else np.inf


@settings(max_examples=150, deadline=None)
@given(
    gt=polys,
    epsilon=st.sampled_from([1e-3, 0.1, 0.5, 1.0]),
    iters=st.integers(1, 60),
    cost=st.sampled_from(["l2", "l1"]),
)
def test_pred_equal_to_gt_with_small_epsilon_gives_the_gt(
    gt: Geometry, epsilon: float, iters: int, cost: str
) -> None:
    # Vertices that are distinct lie at least 8 bins apart: the kernel is then ≤ e^-8 off the
    # diagonal and the projection moves each vertex by far less than half a bin.
    assume(_min_distinct_distance(gt.points()) >= 8.0)
    target = ot_targets(gt, gt, PolyOTConfig(epsilon=epsilon, iters=iters, cost=cost))
    assert target == OTTarget("poly", tuple(int(v) for v in gt.values), "ot")


def test_pred_equal_to_gt_moves_crowded_vertices_even_at_epsilon_one() -> None:
    # Known limit of E9 under the spec's algorithm: an end vertex of a run of collinear vertices
    # 1 bin apart has all its near neighbours on one side, so the entropic plan pulls it a bin.
    gt = Geometry("poly", (100, 100, 101, 100, 102, 100, 103, 100, 104, 100, 104, 110))
    target = ot_targets(gt, gt, PolyOTConfig(epsilon=1.0))
    assert target.values[:2] == (101, 100)
    assert target.values[2:8] == gt.values[2:8]


def test_pred_box_equal_to_gt_quad_gives_the_gt() -> None:
    quad = Geometry("poly", (100, 200, 400, 200, 400, 500, 100, 500))
    as_box = Geometry("bbox_2d", (100, 200, 400, 500))
    assert ot_targets(as_box, quad, PolyOTConfig(epsilon=1.0)) == OTTarget(
        "bbox_2d", (100, 200, 400, 500), "ot"
    )
    assert ot_targets(quad, as_box, PolyOTConfig(epsilon=1.0)).values == quad.values


def test_bbox_pairs_use_gt_bins() -> None:
    target = ot_targets(Geometry("bbox_2d", (0, 0, 10, 10)), Geometry("bbox_2d", (50, 60, 70, 80)))
    assert target == OTTarget("bbox_2d", (50, 60, 70, 80), "gt")


def test_large_epsilon_pulls_every_vertex_to_the_gt_centroid() -> None:
    gt = Geometry("poly", (100, 100, 300, 100, 200, 400))
    pred = Geometry("poly", (0, 0, 999, 0, 999, 999, 0, 999))
    target = ot_targets(pred, gt, PolyOTConfig(epsilon=1e7, iters=30))
    assert target.values == (200, 200) * 4


def test_cost_metric_is_used() -> None:
    pred = np.array([[0.0, 0.0], [30.0, 40.0]])
    gt = np.array([[0.0, 50.0], [40.0, 0.0]])
    l2 = barycentric_projection(pred, gt, PolyOTConfig(epsilon=5.0, cost="l2"))
    l1 = barycentric_projection(pred, gt, PolyOTConfig(epsilon=5.0, cost="l1"))
    assert not np.allclose(l1, l2)


def test_rounding_is_half_up_and_clamped(monkeypatch: pytest.MonkeyPatch) -> None:
    projected = np.array([[0.5, 1.5], [2.5, 998.5], [1000.2, -3.0]])
    monkeypatch.setattr(ot_mod, "barycentric_projection", lambda p, g, cfg: projected)
    target = ot_targets(("poly", [0, 0, 10, 0, 5, 5]), ("poly", [0, 0, 10, 0, 5, 5]))
    assert target.values == (1, 2, 3, 999, 999, 0)


def test_failure_on_bad_geometry() -> None:
    with pytest.raises(OTFailure, match="invalid geometry"):
        ot_targets(("poly", [1, 2, 3, 4]), ("poly", [1, 2, 3, 4, 5, 6]))


def test_failure_on_nonfinite_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ot_mod, "sinkhorn_plan", lambda cost, eps, iters: np.full(cost.shape, np.nan))
    with pytest.raises(OTFailure, match="degenerate"):
        ot_targets(("poly", [0, 0, 10, 0, 5, 5]), ("poly", [0, 0, 10, 0, 5, 5]))


def test_failure_on_solver_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args, **kwargs):
        raise FloatingPointError("overflow")

    monkeypatch.setattr(ot_mod, "sinkhorn_plans", explode)
    with pytest.raises(OTFailure, match="FloatingPointError"):
        ot_targets(("poly", [0, 0, 10, 0, 5, 5]), ("bbox_2d", [0, 0, 10, 10]))


def test_failure_on_length_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ot_mod, "barycentric_projection", lambda p, g, cfg: np.zeros((len(p) + 1, 2)))
    with pytest.raises(OTFailure, match="values for a prediction"):
        ot_targets(("poly", [0, 0, 10, 0, 5, 5]), ("poly", [0, 0, 10, 0, 5, 5]))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epsilon", 0.0),
        ("epsilon", float("inf")),
        ("epsilon", -1.0),
        ("iters", 0),
        ("iters", 2.5),
        ("cost", "cosine"),
    ],
)
def test_config_validation_names_the_key(key: str, value) -> None:
    with pytest.raises(ConfigError, match=rf"^rollout_matching\.poly_ot\.{key}: "):
        PolyOTConfig(**{key: value})


def test_config_defaults() -> None:
    assert PolyOTConfig() == PolyOTConfig(epsilon=10.0, iters=30, cost="l2")
