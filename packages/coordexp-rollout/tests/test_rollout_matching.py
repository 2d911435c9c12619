"""Hungarian matching (spec 03 §3.4) and invariant E7."""

from __future__ import annotations

import itertools

import attrs
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError
from coordexp.rollout.maskiou import Geometry, maskiou_matrix
from coordexp.rollout.matching import (
    MatchingConfig,
    MatchResult,
    aabb_iou_matrix,
    aabbs,
    candidate_mask,
    center_sqdist_matrix,
    match,
)


def box(x1: int, y1: int, x2: int, y2: int) -> Geometry:
    return Geometry("bbox_2d", (x1, y1, x2, y2))


@st.composite
def shapes(draw) -> Geometry:
    x = draw(st.integers(0, 900))
    y = draw(st.integers(0, 900))
    w = draw(st.integers(8, 999 - x))
    h = draw(st.integers(8, 999 - y))
    if draw(st.booleans()):
        return box(x, y, x + w, y + h)
    # A triangle or a quad inside the drawn extent.
    n = draw(st.integers(3, 5))
    pts = [(draw(st.integers(x, x + w)), draw(st.integers(y, y + h))) for _ in range(n)]
    return Geometry("poly", tuple(v for p in pts for v in p))


def jitter(g: Geometry, dx: int, dy: int) -> Geometry:
    vals = [min(999, max(0, v + (dx if k % 2 == 0 else dy))) for k, v in enumerate(g.values)]
    return Geometry(g.geom_key, tuple(vals))


@st.composite
def scenes(draw, max_gt: int = 6, max_extra: int = 3):
    """GT shapes, predictions that are jittered copies of some GT plus random extras."""
    gts = draw(st.lists(shapes(), min_size=0, max_size=max_gt))
    preds = []
    for g in gts:
        if draw(st.booleans()):
            preds.append(jitter(g, draw(st.integers(-40, 40)), draw(st.integers(-40, 40))))
    preds += draw(st.lists(shapes(), min_size=0, max_size=max_extra))
    order = draw(st.permutations(range(len(preds))))
    return [preds[i] for i in order], gts


configs = st.builds(
    MatchingConfig,
    candidate_top_k=st.integers(1, 8),
    maskiou_gate=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.9]),
    maskiou_resolution=st.sampled_from([32, 128, 256]),
    fp_cost=st.sampled_from([0.3, 1.0, 2.0]),
    fn_cost=st.sampled_from([0.3, 1.0, 2.0]),
)


def feasibility(preds, gts, cfg: MatchingConfig) -> tuple[np.ndarray, np.ndarray]:
    cand = candidate_mask(aabbs(preds), aabbs(gts), cfg.candidate_top_k)
    ious = maskiou_matrix(preds, gts, cand, cfg.maskiou_resolution).values
    return cand & (np.nan_to_num(ious, nan=-1.0) >= cfg.maskiou_gate), ious


def matching_cost(pairs, n_pred: int, n_gt: int, ious: np.ndarray, cfg: MatchingConfig) -> float:
    return (
        sum(1.0 - ious[p, g] for p, g in pairs)
        + cfg.fp_cost * (n_pred - len(pairs))
        + cfg.fn_cost * (n_gt - len(pairs))
    )


def all_matchings(feasible: np.ndarray):
    """Every set of disjoint feasible (pred, gt) pairs (small problems only)."""
    n_pred, n_gt = feasible.shape

    def rec(p: int, used: frozenset):
        if p == n_pred:
            yield ()
            return
        yield from rec(p + 1, used)
        for g in range(n_gt):
            if feasible[p, g] and g not in used:
                for rest in rec(p + 1, used | {g}):
                    yield ((p, g),) + rest

    return list(rec(0, frozenset()))


def check_partition(result: MatchResult, n_pred: int, n_gt: int) -> None:
    matched_p = [p for p, _, _ in result.pairs]
    matched_g = [g for _, g, _ in result.pairs]
    assert sorted(matched_p + list(result.fp)) == list(range(n_pred))
    assert sorted(matched_g + list(result.fn)) == list(range(n_gt))
    assert list(result.fn) == sorted(result.fn) and list(result.fp) == sorted(result.fp)


# --- E7 properties -------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(scene=scenes(), cfg=configs)
def test_partition_gate_and_fp_below_gate(scene, cfg: MatchingConfig) -> None:
    preds, gts = scene
    result = match(preds, gts, cfg)
    check_partition(result, len(preds), len(gts))
    for _, _, iou in result.pairs:
        assert iou >= cfg.maskiou_gate
    # A prediction below the gate against every GT is FP.
    full = maskiou_matrix(preds, gts, None, cfg.maskiou_resolution).values
    for p in range(len(preds)):
        if len(gts) and (full[p] < cfg.maskiou_gate).all():
            assert p in result.fp
    assert result.candidate_pairs == len(preds) * min(cfg.candidate_top_k, len(gts))
    assert 0 <= result.gating_rejections <= result.candidate_pairs
    assert result.raster_errors == 0


@settings(max_examples=80, deadline=None)
@given(scene=scenes(max_gt=4, max_extra=2), cfg=configs)
def test_result_is_a_minimum_cost_matching(scene, cfg: MatchingConfig) -> None:
    preds, gts = scene
    assume(len(preds) <= 5)
    feasible, ious = feasibility(preds, gts, cfg)
    best = min(matching_cost(m, len(preds), len(gts), ious, cfg) for m in all_matchings(feasible))
    result = match(preds, gts, cfg)
    got = matching_cost([(p, g) for p, g, _ in result.pairs], len(preds), len(gts), ious, cfg)
    assert got == pytest.approx(best, abs=2e-6)


@settings(max_examples=80, deadline=None)
@given(scene=scenes(max_gt=4, max_extra=2), cfg=configs, data=st.data())
def test_permutation_equivariant_for_distinct_costs(scene, cfg: MatchingConfig, data) -> None:
    preds, gts = scene
    assume(len(preds) <= 5)
    # Candidate sets depend on gt_idx only through ties; keep every GT a candidate.
    cfg = attrs.evolve(cfg, candidate_top_k=max(1, len(gts)))
    feasible, ious = feasibility(preds, gts, cfg)
    costs = sorted(matching_cost(m, len(preds), len(gts), ious, cfg) for m in all_matchings(feasible))
    assume(len(costs) == 1 or costs[1] - costs[0] > 1e-4)  # a unique optimum

    perm_p = data.draw(st.permutations(range(len(preds))))
    perm_g = data.draw(st.permutations(range(len(gts))))
    base = match(preds, gts, cfg)
    permuted = match([preds[i] for i in perm_p], [gts[j] for j in perm_g], cfg)
    mapped = sorted((perm_p[p], perm_g[g], iou) for p, g, iou in permuted.pairs)
    assert mapped == sorted(base.pairs)
    assert sorted(perm_p[p] for p in permuted.fp) == list(base.fp)
    assert sorted(perm_g[g] for g in permuted.fn) == list(base.fn)
    assert permuted.gating_rejections == base.gating_rejections
    assert permuted.candidate_pairs == base.candidate_pairs


@settings(max_examples=60, deadline=None)
@given(scene=scenes(), cfg=configs)
def test_deterministic(scene, cfg: MatchingConfig) -> None:
    preds, gts = scene
    assert match(preds, gts, cfg) == match(list(preds), list(gts), cfg)


# --- hand-built examples -------------------------------------------------------------------------


def test_empty_predictions_are_all_fn() -> None:
    result = match([], [box(0, 0, 10, 10), box(5, 5, 50, 50)])
    assert result == MatchResult((), (), (0, 1), 0, 0)


def test_empty_gt_is_all_fp() -> None:
    result = match([box(0, 0, 10, 10), box(5, 5, 50, 50)], [])
    assert result == MatchResult((), (0, 1), (), 0, 0)
    assert match([], []) == MatchResult((), (), (), 0, 0)


def test_perfect_match() -> None:
    gts = [box(100, 100, 300, 300), Geometry("poly", (500, 500, 700, 520, 600, 700))]
    result = match(list(reversed(gts)), gts)
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 1), (1, 0)]
    assert all(iou == 1.0 for _, _, iou in result.pairs)
    assert result.fp == () and result.fn == ()


def test_gating_rejects_low_overlap() -> None:
    gt = box(0, 0, 400, 400)
    pred = box(300, 0, 700, 400)  # IoU ≈ 1/7
    result = match([pred], [gt], MatchingConfig(maskiou_gate=0.3))
    assert result.pairs == () and result.fp == (0,) and result.fn == (0,)
    assert result.gating_rejections == 1 and result.candidate_pairs == 1
    accepted = match([pred], [gt], MatchingConfig(maskiou_gate=0.1))
    assert [(p, g) for p, g, _ in accepted.pairs] == [(0, 0)] and accepted.gating_rejections == 0


def test_pruning_keeps_the_true_match_among_many_distractors() -> None:
    rng = np.random.default_rng(0)
    target = box(400, 400, 520, 530)
    distractors = []
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(0, 940, size=2))
        cand = box(x, y, x + 50, y + 50)
        if aabb_iou_matrix(aabbs([cand]), aabbs([target]))[0, 0] == 0.0:
            distractors.append(cand)
    # Overlapping distractors that overlap the prediction less than the target does.
    distractors += [box(380, 380, 640, 640), box(420, 300, 560, 460), box(300, 420, 470, 700)]
    gts = distractors[:20] + [target] + distractors[20:]
    pred = box(405, 402, 522, 528)
    result = match([pred], gts, MatchingConfig(candidate_top_k=2))
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 20)]
    assert result.candidate_pairs == 2
    assert len(result.fn) == len(gts) - 1


def test_pruning_falls_back_to_nearest_centres_when_nothing_overlaps() -> None:
    gts = [box(900, 900, 950, 950), box(300, 0, 340, 40), box(0, 300, 40, 340), box(120, 0, 160, 40)]
    pred = box(0, 0, 100, 100)
    mask = candidate_mask(aabbs([pred]), aabbs(gts), 2)
    # Centre distances²: 1_800_050, 65_000, 65_000 (tie → lower gt_idx), 14_400.
    np.testing.assert_array_equal(mask, [[False, True, False, True]])
    # With gate 0 a zero-IoU candidate is feasible (cost 1) and gets matched when FP + FN cost more.
    result = match([pred], gts, MatchingConfig(candidate_top_k=1, maskiou_gate=0.0))
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 3)]
    assert result.pairs[0][2] == 0.0


def test_candidate_ties_go_to_lower_gt_index() -> None:
    pred = aabbs([box(0, 0, 100, 100)])
    gts = aabbs([box(500, 500, 600, 600), box(0, 0, 50, 100), box(50, 0, 100, 100), box(0, 0, 100, 50)])
    # GT 1, 2 and 3 all have IoU 0.5 with the prediction.
    np.testing.assert_array_equal(candidate_mask(pred, gts, 1), [[False, True, False, False]])
    np.testing.assert_array_equal(candidate_mask(pred, gts, 2), [[False, True, True, False]])
    np.testing.assert_array_equal(candidate_mask(pred, gts, 10), [[True, True, True, True]])


def test_duplicate_predictions_first_one_wins() -> None:
    gt = box(100, 100, 300, 300)
    pred = box(110, 100, 300, 310)
    result = match([pred, pred, pred], [gt])
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 0)]
    assert result.fp == (1, 2)


def test_duplicate_gt_first_one_wins() -> None:
    gt = box(100, 100, 300, 300)
    result = match([box(110, 100, 300, 310)], [gt, gt, gt])
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 0)]
    assert result.fn == (1, 2)


def test_duplicates_on_both_sides_pair_in_order() -> None:
    gt = box(100, 100, 300, 300)
    pred = box(110, 100, 300, 310)
    result = match([pred] * 3, [gt] * 2)
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 0), (1, 1)]
    assert result.fp == (2,)
    assert all(match([pred] * 3, [gt] * 2) == result for _ in range(3))


def test_identical_predictions_pair_in_order() -> None:
    # Both predictions fit both GTs (with different IoUs); either assignment costs the same.
    pred = box(150, 120, 320, 300)
    gts = [box(100, 100, 300, 300), box(110, 100, 300, 310)]
    result = match([pred, pred], gts)
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 0), (1, 1)]
    swapped = match([pred, pred], gts[::-1])
    assert [(p, g) for p, g, _ in swapped.pairs] == [(0, 0), (1, 1)]


def test_identical_predictions_keep_order_across_a_gap() -> None:
    pred = box(100, 100, 300, 300)
    near = box(150, 120, 320, 300)
    gts = [near, box(600, 600, 800, 800), near, pred]
    result = match([pred, pred, pred], gts)
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 0), (1, 2), (2, 3)]
    assert result.fn == (1,)


def test_equal_cost_alternatives_prefer_earlier_prediction() -> None:
    # Pred 0 fits GT 1 exactly as well as pred 1 fits GT 0, and neither fits the other GT.
    gts = [box(0, 0, 200, 200), box(600, 600, 800, 800)]
    preds = [box(600, 600, 800, 800), box(0, 0, 200, 200)]
    result = match(preds, gts)
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 1), (1, 0)]


def test_fp_plus_fn_cheaper_than_a_weak_match() -> None:
    gt = box(0, 0, 400, 400)
    pred = box(100, 0, 500, 400)  # IoU 0.6 → cost 0.4
    cfg = MatchingConfig(maskiou_gate=0.3, fp_cost=0.1, fn_cost=0.1)
    result = match([pred], [gt], cfg)
    assert result.pairs == () and result.fp == (0,) and result.fn == (0,)
    assert result.gating_rejections == 0


def test_exact_tie_between_match_and_fp_plus_fn_leaves_both_unmatched() -> None:
    # At R = 1000 the projection is the identity and the raster IoU is exactly 0.5: cost 0.5 = 0.25 + 0.25.
    gt = box(100, 100, 500, 500)
    pred = box(100, 100, 300, 500)
    cfg = MatchingConfig(maskiou_resolution=1000, fp_cost=0.25, fn_cost=0.25)
    result = match([pred], [gt], cfg)
    assert result.pairs == () and result.fp == (0,) and result.fn == (0,)
    assert match([pred], [gt], attrs.evolve(cfg, fp_cost=0.2501)).pairs == ((0, 0, 0.5),)


def test_accepts_coordobject_like_inputs() -> None:
    class Obj:
        def __init__(self, geom_key, values):
            self.desc = "thing"
            self.geom_key = geom_key
            self.values = values

    result = match([Obj("bbox_2d", [0, 0, 100, 100])], [Obj("poly", [0, 0, 100, 0, 100, 100, 0, 100])])
    assert [(p, g) for p, g, _ in result.pairs] == [(0, 0)]


def test_accepts_core_coordobjects() -> None:
    from coordexp.core.coordjson.serialize import CoordObject

    preds = [
        CoordObject("cat", "bbox_2d", (0, 0, 100, 100)),
        CoordObject("sign", "poly", (300, 200, 360, 260, 240, 260)),
    ]
    gts = [CoordObject("sign", "poly", (300, 200, 360, 260, 240, 260))]
    result = match(preds, gts)
    assert result.pairs == ((1, 0, 1.0),) and result.fp == (0,) and result.fn == ()


# --- building blocks -----------------------------------------------------------------------------


def _scalar_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@settings(max_examples=50, deadline=None)
@given(a=st.lists(shapes(), min_size=1, max_size=5), b=st.lists(shapes(), min_size=1, max_size=5))
def test_vectorized_aabb_iou_and_distance_match_scalar(a, b) -> None:
    ba, bb = aabbs(a), aabbs(b)
    iou = aabb_iou_matrix(ba, bb)
    d2 = center_sqdist_matrix(ba, bb)
    for i, j in itertools.product(range(len(a)), range(len(b))):
        assert iou[i, j] == pytest.approx(_scalar_iou(ba[i], bb[j]), abs=1e-12)
        ci = ((ba[i][0] + ba[i][2]) / 2, (ba[i][1] + ba[i][3]) / 2)
        cj = ((bb[j][0] + bb[j][2]) / 2, (bb[j][1] + bb[j][3]) / 2)
        assert d2[i, j] == pytest.approx((ci[0] - cj[0]) ** 2 + (ci[1] - cj[1]) ** 2)


def test_degenerate_boxes_have_zero_aabb_iou() -> None:
    flat = aabbs([box(10, 10, 10, 10)])
    np.testing.assert_array_equal(aabb_iou_matrix(flat, flat), [[0.0]])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 6))
def test_candidate_mask_equivariant_without_ties(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    # Every box contains the centre region, so all IoUs are positive and (a.s.) distinct.
    lo = rng.uniform(0, 400, size=(9, 2))
    hi = rng.uniform(600, 999, size=(9, 2))
    boxes_ = np.concatenate([lo, hi], axis=1)
    preds, gts = boxes_[:3], boxes_[3:]
    mask = candidate_mask(preds, gts, k)
    perm = rng.permutation(len(gts))
    np.testing.assert_array_equal(candidate_mask(preds, gts[perm], k), mask[:, perm])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("candidate_top_k", 0),
        ("candidate_top_k", 2.0),
        ("maskiou_gate", -0.1),
        ("maskiou_gate", 1.5),
        ("maskiou_gate", float("nan")),
        ("maskiou_resolution", 8),
        ("fp_cost", 0.0),
        ("fn_cost", -1.0),
        ("fn_cost", float("inf")),
    ],
)
def test_config_validation_names_the_key(key: str, value) -> None:
    with pytest.raises(ConfigError, match=rf"^rollout_matching\.matching\.{key}: "):
        MatchingConfig(**{key: value})


def test_config_defaults() -> None:
    cfg = MatchingConfig()
    assert (cfg.candidate_top_k, cfg.maskiou_gate, cfg.maskiou_resolution, cfg.fp_cost, cfg.fn_cost) == (
        10,
        0.3,
        256,
        1.0,
        1.0,
    )
