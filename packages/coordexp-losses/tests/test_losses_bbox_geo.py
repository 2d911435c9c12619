"""bbox_geo (spec 02 §2.8): values and gradients vs an independent SmoothL1 / CIoU, L5, the
group set per context, the non-finite guard and packing invariance."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.context import BBoxGroups, ContextSet
from coordexp.core.tokens import Subset
from coordexp.losses import bbox_geo
from coordexp.losses.bbox_geo import NONFINITE_KEY, BBoxGeo, BBoxGeoConfig, box_terms, finite_weighted_sum
from coordexp.testing.factory import make_context_set, make_samples, pack_samples, random_packing, repack

MODULE = BBoxGeo()
COORD = st.floats(0.0, 1.0, allow_nan=False)


def ref_canonical(box: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = box.unbind(-1)
    return torch.stack(
        [torch.min(x1, x2), torch.min(y1, y2), torch.max(x1, x2), torch.max(y1, y2)], -1
    ).clamp(0, 1)


def ref_smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    d = (pred - target).abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta).sum(-1) / 4


def ref_ciou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 − CIoU from the spec text, written independently (no torchvision)."""
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    iw = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0)
    ih = (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    inter = iw * ih
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
    iou = inter / torch.clamp(union, min=eps)
    rho2 = ((px1 + px2) / 2 - (tx1 + tx2) / 2) ** 2 + ((py1 + py2) / 2 - (ty1 + ty2) / 2) ** 2
    c2 = torch.clamp(
        (torch.max(px2, tx2) - torch.min(px1, tx1)) ** 2 + (torch.max(py2, ty2) - torch.min(py1, ty1)) ** 2,
        min=eps,
    )
    wp, hp = torch.clamp(px2 - px1, min=eps), torch.clamp(py2 - py1, min=eps)
    wt, ht = torch.clamp(tx2 - tx1, min=eps), torch.clamp(ty2 - ty1, min=eps)
    v = 4 / math.pi**2 * (torch.atan(wt / ht) - torch.atan(wp / hp)) ** 2
    alpha = (v / (1 - iou + v + eps)).detach()
    return 1 - (iou - rho2 / c2 - alpha * v)


def weighted_groups(samples, seed):
    rng = np.random.default_rng(seed)
    return [
        attrs.evolve(s, rows=attrs.evolve(s.rows, group_weight=rng.uniform(0.1, 2.0, s.rows.n_groups)))
        for s in samples
    ]


@pytest.mark.parametrize("mode", ["exp", "st"])
@pytest.mark.parametrize(("context", "seed"), [("gt", 0), ("gt", 1), ("rollout", 2), ("rollout", 3)])
def test_values_and_gradients_match_independent_smoothl1_and_ciou(mode, context, seed):
    cfg = BBoxGeoConfig(smoothl1_weight=0.7, ciou_weight=1.3, smoothl1_beta=0.05)
    samples = weighted_groups(make_samples(seed, context=context, n_samples=3, max_objects=4), seed)
    ctx = pack_samples(samples, trainer_variant="stage2_two_channel", coord_decode_mode=mode)
    ctxset = ContextSet.for_channel(ctx.channel, {context: ctx})
    output = MODULE.compute(ctxset, cfg)
    den = output.atoms["bbox_ciou"][0].den
    loss = sum(MODULE.atom_weights(cfg)[a] * t[0].num for a, t in output.atoms.items()) / den

    # Reference: decode each group's 4 rows by hand from the logits.
    logits = ctx.logits
    coord = logits[:, ctx.coord_ids].double().clamp(-1e4, 1e4)
    probs = torch.softmax(coord, -1)
    expected = probs @ (torch.arange(1000, dtype=torch.float64) / 999)
    # st: hard value plus a zero-valued expectation path; parenthesized so that ties between a
    # predicted and a target coordinate stay exact (their gradient is split by min/max).
    decoded = expected if mode == "exp" else coord.argmax(-1).double() / 999 + (expected - expected.detach())
    pred = ref_canonical(decoded[ctx.bbox_groups.rows])
    target = ref_canonical(ctx.bbox_groups.target.double() / 999)
    g = ctx.bbox_groups.weight.double()
    ref_sl1 = (g * ref_smooth_l1(pred, target, 0.05)).sum()
    ref_ci = (g * ref_ciou(pred, target)).sum()
    assert den == pytest.approx(float(g.sum()), rel=1e-6)
    torch.testing.assert_close(output.atoms["bbox_smoothl1"][0].num.double(), ref_sl1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(output.atoms["bbox_ciou"][0].num.double(), ref_ci, rtol=1e-4, atol=1e-6)
    ref_loss = (0.7 * ref_sl1 + 1.3 * ref_ci) / g.sum()
    leaves = [s.seq_logits for s in samples]
    grads = torch.autograd.grad(loss, leaves, retain_graph=True)
    ref_grads = torch.autograd.grad(ref_loss, leaves)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-3, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(box=st.lists(COORD, min_size=4, max_size=4), target=st.lists(COORD, min_size=4, max_size=4))
def test_l5_swap_invariance_zero_at_identity_and_finite_on_degenerate_boxes(box, target):
    pred = torch.tensor([box], dtype=torch.float64)
    tgt = torch.tensor([target], dtype=torch.float64)
    sl1, ciou = box_terms(pred, tgt, 0.02)
    for swap in ([2, 1, 0, 3], [0, 3, 2, 1], [2, 3, 0, 1]):
        s_sl1, s_ciou = box_terms(pred[:, swap], tgt[:, swap], 0.02)
        torch.testing.assert_close(s_sl1, sl1)
        torch.testing.assert_close(s_ciou, ciou)
        p_sl1, p_ciou = box_terms(pred[:, swap], tgt, 0.02)
        torch.testing.assert_close(p_sl1, sl1)
        torch.testing.assert_close(p_ciou, ciou)
    assert torch.isfinite(sl1).all() and torch.isfinite(ciou).all()
    same_sl1, same_ciou = box_terms(tgt, tgt, 0.02)
    assert float(same_sl1) == 0.0
    canonical = ref_canonical(tgt)
    if float((canonical[0, 2] - canonical[0, 0]) * (canonical[0, 3] - canonical[0, 1])) > 1e-6:
        assert float(same_ciou) == pytest.approx(0.0, abs=1e-6)
    else:  # a degenerate box has IoU 0 with itself (union clamped at eps): finite, no NaN
        assert math.isfinite(float(same_ciou))
    leaf = pred.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(box_terms(leaf, tgt, 0.02)[1].sum(), leaf)
    assert torch.isfinite(grad).all()


@settings(max_examples=60, deadline=None)
@given(
    box=st.lists(st.floats(0.05, 0.95), min_size=4, max_size=4),
    target=st.lists(st.floats(0.05, 0.95), min_size=4, max_size=4),
)
def test_alpha_carries_no_gradient(box, target):
    """The CIoU gradient equals the gradient with α held constant (D17)."""
    leaf = torch.tensor([box], dtype=torch.float64, requires_grad=True)
    tgt = torch.tensor([target], dtype=torch.float64)
    (grad,) = torch.autograd.grad(box_terms(leaf, tgt, 0.02)[1].sum(), leaf)
    ref_leaf = leaf.detach().clone().requires_grad_(True)
    (ref_grad,) = torch.autograd.grad(ref_ciou(ref_canonical(ref_leaf), ref_canonical(tgt)).sum(), ref_leaf)
    torch.testing.assert_close(grad, ref_grad)


def test_rollout_groups_are_matched_and_fn_and_an_fp_group_weighs_nothing():
    for seed in range(8):
        ctxset = make_context_set(seed, channel="B", max_objects=4, max_fp=2)
        subsets = set(ctxset.coord_context.bbox_groups.subset.tolist())
        assert subsets <= {int(Subset.MATCHED), int(Subset.FN)}
    ctxset = make_context_set(3, channel="B", max_objects=4)
    ctx = ctxset.coord_context
    groups = ctx.bbox_groups
    assert groups.n_groups >= 2
    fp_subset = groups.subset.clone()
    fp_subset[0] = int(Subset.FP)
    tainted = attrs.evolve(ctx, bbox_groups=BBoxGroups(groups.rows, groups.target, groups.weight, fp_subset))
    tainted_set = ContextSet.for_channel("B", {"rollout": tainted})
    cfg = BBoxGeoConfig()
    den = MODULE.denominators(tainted_set, cfg)["bbox_geo/rollout/box_weight"]
    assert den == pytest.approx(float(groups.weight[1:].sum()))
    (grad,) = torch.autograd.grad(MODULE.compute(tainted_set, cfg).atoms["bbox_ciou"][0].num, tainted.logits)
    assert torch.count_nonzero(grad[groups.rows[0]]) == 0


def test_self_context_is_the_coord_context_with_two_iterations():
    ctxset = make_context_set(4, channel="A", n_softctx_iter=2, trainer_variant="stage2_two_channel")
    assert set(MODULE.denominators(ctxset, BBoxGeoConfig())) == {"bbox_geo/self_context/box_weight"}
    contexts = {t.context for terms in MODULE.compute(ctxset, BBoxGeoConfig()).atoms.values() for t in terms}
    assert contexts == {"self_context"}


def test_non_finite_box_terms_are_dropped_and_counted(monkeypatch):
    values = torch.tensor([0.5, float("nan"), 2.0, float("inf")], requires_grad=True)
    num, dropped = finite_weighted_sum(values, torch.tensor([1.0, 1.0, 2.0, 3.0]))
    assert float(num.detach()) == 4.5 and int(dropped) == 2
    (grad,) = torch.autograd.grad(num, values)
    assert grad.tolist() == [1.0, 0.0, 2.0, 0.0]

    original = bbox_geo.box_terms

    def poisoned(pred, target, beta):
        sl1, ciou = original(pred, target, beta)
        return sl1, torch.where(torch.arange(ciou.shape[0]) == 0, torch.full_like(ciou, float("nan")), ciou)

    monkeypatch.setattr(bbox_geo, "box_terms", poisoned)
    ctxset = make_context_set(5, channel="A", max_objects=4)
    output = MODULE.compute(ctxset, BBoxGeoConfig())
    metrics = {m.key: m for m in output.metrics}
    assert metrics[NONFINITE_KEY].value == 1.0
    assert torch.isfinite(output.atoms["bbox_ciou"][0].num)
    monkeypatch.setattr(bbox_geo, "box_terms", original)
    clean = MODULE.compute(ctxset, BBoxGeoConfig())
    assert {m.key: m.value for m in clean.metrics}[NONFINITE_KEY] == 0.0


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), split=st.integers(0, 10_000), context=st.sampled_from(["gt", "rollout"]))
def test_loss_and_gradients_do_not_depend_on_packing(seed, split, context):
    samples = weighted_groups(make_samples(seed, context=context, n_samples=5), seed)
    leaves = [s.seq_logits for s in samples]
    cfg = BBoxGeoConfig(smoothl1_weight=2.0)
    channel = "B" if context == "rollout" else "A"

    def step(packs):
        sets = [ContextSet.for_channel(channel, {context: c}) for c in repack(samples, packs)]
        den = sum(MODULE.denominators(s, cfg)[f"bbox_geo/{context}/box_weight"] for s in sets)
        if den == 0:
            return None
        weights = MODULE.atom_weights(cfg)
        return sum(weights[a] * t[0].num for s in sets for a, t in MODULE.compute(s, cfg).atoms.items()) / den

    whole, parts = step([list(range(5))]), step(random_packing(5, split))
    if whole is None:
        assert parts is None
        return
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(whole, leaves), torch.autograd.grad(parts, leaves), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_config_bounds():
    with pytest.raises(ValueError, match="smoothl1_beta"):
        BBoxGeoConfig(smoothl1_beta=0.0)
    with pytest.raises(ValueError, match="ciou_weight"):
        BBoxGeoConfig(ciou_weight=-1.0)
    assert MODULE.atom_weights(BBoxGeoConfig(ciou_weight=0)) == {"bbox_smoothl1": 1.0, "bbox_ciou": 0.0}
    assert set(MODULE.compute(make_context_set(0, channel="A"), BBoxGeoConfig(ciou_weight=0)).atoms) == {
        "bbox_smoothl1"
    }
