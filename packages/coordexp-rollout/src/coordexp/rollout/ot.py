"""Poly targets by Sinkhorn OT and barycentric projection (spec 03 §3.5, D18; invariant E9).

For a matched pair with a poly on either side, the prediction's points (poly vertices, or a bbox's
four corners (x1,y1),(x2,y1),(x2,y2),(x1,y2)) are transported onto the GT's points:

* cost ``C = cdist(pred, gt)`` in bins (``l2`` Euclidean, or ``l1`` city-block), marginals
  ``a = 1/N``, ``b = 1/M``;
* ``K = exp(clamp(−C/ε, −50, 50))`` and, from ``v = 1``, ``iters`` rounds of ``u = a/(Kv)``,
  ``v = b/(Kᵀu)``; plan ``T = diag(u) K diag(v)``;
* barycentric projection ``ĝ_i = Σ_j T_ij g_j / Σ_j T_ij``, rounded half-up and clamped to 0..999.

**POT usage.** POT's ``sinkhorn_knopp`` starts from ``u = 1/N`` and updates ``v`` before ``u``, so
on its own it ends on the other marginal. Run on the transposed problem ``(b, a, Cᵀ)`` with a
zero log-warmstart, its scalings are exactly the spec's ``v`` and ``u`` in the spec's order and
from ``v = 1``. The clamp is applied by capping the cost at ``50·ε`` (``C ≥ 0``, so only the lower
clamp can bind), and ``stopThr = 0`` makes it run exactly ``iters`` rounds. With the clamp,
``K ≥ e⁻⁵⁰ > 0``, so the spec's zero-denominator rule can never fire; a non-finite plan is still
reported as :class:`OTFailure`. ``test_rollout_ot.py`` checks this against a direct transcription
of the spec iteration and against POT's converged plan.

With ``pred = GT`` and ε ≤ 1 the targets equal the GT (E9) as long as distinct GT vertices are a
few bins apart (the tests use ≥ 8); a vertex at the end of a run of collinear vertices 1 bin apart
has all its near neighbours on one side and is pulled by one bin. Canonicalization (01 §1.7) keeps
such vertices, so this is a property of the spec's algorithm, not a failure.

Targets: a poly prediction gets one projected vertex per pred vertex (flat ``[x, y, ...]``); a
bbox prediction vs a poly GT gets the AABB of its projected corners ``[x1, y1, x2, y2]``; a
bbox–bbox pair gets the GT bins (no OT).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import attrs
import numpy as np
import ot as pot
from scipy.spatial.distance import cdist

from coordexp.core.errors import ConfigError, CoordexpError
from coordexp.rollout.maskiou import BBOX_KEY, MAX_BIN, POLY_KEY, as_geometry

CONFIG_PATH = "rollout_matching.poly_ot"
LOG_KERNEL_FLOOR = 50.0
_CDIST_METRIC = {"l2": "euclidean", "l1": "cityblock"}


class OTFailure(CoordexpError):
    """OT targets could not be built for a pair; the caller excludes the pair (spec 03 §3.5 step 5)."""


def _check_epsilon(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{CONFIG_PATH}.epsilon", f"expected a finite number > 0, got {value!r}")


def _check_iters(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{CONFIG_PATH}.iters", f"expected an int >= 1, got {value!r}")


def _check_cost(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in _CDIST_METRIC:
        raise ConfigError(f"{CONFIG_PATH}.cost", f"expected one of {sorted(_CDIST_METRIC)}, got {value!r}")


@attrs.frozen
class PolyOTConfig:
    """``rollout_matching.poly_ot.*``: ``epsilon`` (ε, bins), ``iters`` (Sinkhorn rounds), ``cost``."""

    epsilon: float = attrs.field(default=10.0, validator=_check_epsilon)
    iters: int = attrs.field(default=30, validator=_check_iters)
    cost: str = attrs.field(default="l2", validator=_check_cost)


@attrs.frozen
class OTTarget:
    """Target bins for one prediction, laid out like the prediction's ``values``.

    ``geom_key`` is the prediction's key; ``values`` are ints in 0..999 (``2N`` for a poly with N
    vertices, 4 for a bbox). ``source`` is ``"ot"`` or ``"gt"`` (bbox–bbox pairs).
    """

    geom_key: str
    values: tuple[int, ...]
    source: str


def sinkhorn_plan(cost: np.ndarray, epsilon: float, iters: int) -> np.ndarray:
    """Entropic plan ``T [N, M]`` (float64) of the spec 03 §3.5 iteration for a cost ``[N, M]``."""
    n, m = cost.shape
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    capped = np.minimum(cost, LOG_KERNEL_FLOOR * epsilon)
    with warnings.catch_warnings():
        # POT warns on numerical trouble; a non-finite result is turned into OTFailure below.
        warnings.simplefilter("ignore")
        plan_t = pot.bregman.sinkhorn_knopp(
            b,
            a,
            np.ascontiguousarray(capped.T),
            epsilon,
            numItermax=iters,
            stopThr=0.0,
            warn=False,
            warmstart=(np.zeros(m), np.zeros(n)),
        )
    return np.asarray(plan_t, dtype=np.float64).T


def _round_bins(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, MAX_BIN).astype(np.int64)


def barycentric_projection(pred_points: np.ndarray, gt_points: np.ndarray, cfg: PolyOTConfig) -> np.ndarray:
    """Projected points ``ĝ [N, 2]`` (float64, bins) for ``pred_points [N, 2]``, ``gt_points [M, 2]``.

    Raises :class:`OTFailure` if the plan is not finite or a row has zero mass.
    """
    cost = cdist(pred_points, gt_points, metric=_CDIST_METRIC[cfg.cost])
    plan = sinkhorn_plan(cost, cfg.epsilon, cfg.iters)
    mass = plan.sum(axis=1)
    if not np.isfinite(plan).all() or not (mass > 0).all():
        raise OTFailure(
            "Sinkhorn plan is degenerate (non-finite or zero row mass) for "
            f"{len(pred_points)}x{len(gt_points)} points"
        )
    return (plan @ gt_points) / mass[:, None]


def ot_targets(pred: Any, gt: Any, cfg: PolyOTConfig = PolyOTConfig()) -> OTTarget:
    """Targets for the matched pair ``(pred, gt)`` (geometries in bins; see the module docstring).

    Raises :class:`OTFailure` on any failure (bad geometry, numerical trouble, length mismatch).
    """
    try:
        pred_geom = as_geometry(pred)
        gt_geom = as_geometry(gt)
    except CoordexpError as exc:
        raise OTFailure(f"invalid geometry for OT: {exc}") from exc

    if pred_geom.geom_key == BBOX_KEY and gt_geom.geom_key == BBOX_KEY:
        gt_box = gt_geom.points()
        values = _round_bins(np.concatenate([gt_box.min(axis=0), gt_box.max(axis=0)]))
        return OTTarget(BBOX_KEY, tuple(values.tolist()), "gt")

    pred_points = np.clip(pred_geom.points(), 0.0, float(MAX_BIN))
    gt_points = np.clip(gt_geom.points(), 0.0, float(MAX_BIN))
    try:
        projected = barycentric_projection(pred_points, gt_points, cfg)
    except OTFailure:
        raise
    except Exception as exc:  # spec 03 §3.5 step 5: any exception excludes the pair
        raise OTFailure(f"OT failed: {type(exc).__name__}: {exc}") from exc

    if pred_geom.geom_key == POLY_KEY:
        values = _round_bins(projected).reshape(-1)
    else:
        values = _round_bins(np.concatenate([projected.min(axis=0), projected.max(axis=0)]))
    if values.size != len(pred_geom.values):
        raise OTFailure(f"OT target has {values.size} values for a prediction with {len(pred_geom.values)}")
    return OTTarget(pred_geom.geom_key, tuple(values.tolist()), "ot")
