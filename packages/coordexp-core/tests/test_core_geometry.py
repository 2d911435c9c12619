"""Box geometry and coordinate decoding (spec 02 §2.7–2.8; invariants L4, L5)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import PipelineError
from coordexp.core.geometry import (
    CIOU_EPS,
    SMOOTH_L1_BETA,
    box_iou,
    canonicalize_boxes,
    ciou_loss,
    decode_coords,
    decode_expectation,
    decode_st,
    smooth_l1,
)

wide = st.floats(-0.5, 1.5, allow_nan=False)
raw_box = st.tuples(wide, wide, wide, wide)


def _canonical(box):
    x1, y1, x2, y2 = box
    return tuple(min(max(v, 0.0), 1.0) for v in (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))


def _ciou_reference(p, g, eps=CIOU_EPS):
    """Spec 02 §2.8 written out with Python floats, one box at a time."""
    iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    inter = iw * ih
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    iou = inter / max(union, eps)
    rho2 = ((p[0] + p[2]) / 2 - (g[0] + g[2]) / 2) ** 2 + ((p[1] + p[3]) / 2 - (g[1] + g[3]) / 2) ** 2
    cw = max(p[2], g[2]) - min(p[0], g[0])
    ch = max(p[3], g[3]) - min(p[1], g[1])
    c2 = max(cw**2 + ch**2, eps)
    wp, hp = max(p[2] - p[0], eps), max(p[3] - p[1], eps)
    wg, hg = max(g[2] - g[0], eps), max(g[3] - g[1], eps)
    v = 4 / math.pi**2 * (math.atan(wg / hg) - math.atan(wp / hp)) ** 2
    alpha = v / (1 - iou + v + eps)
    return 1 - (iou - rho2 / c2 - alpha * v), iou


@given(st.lists(raw_box, min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_canonicalize_orders_and_clamps(boxes):
    out = canonicalize_boxes(torch.tensor(boxes, dtype=torch.float64))
    expected = torch.tensor([_canonical(b) for b in boxes], dtype=torch.float64)
    assert torch.equal(out, expected)
    swapped = torch.tensor([(b[2], b[3], b[0], b[1]) for b in boxes], dtype=torch.float64)
    assert torch.equal(canonicalize_boxes(swapped), out)


@given(st.lists(st.tuples(raw_box, raw_box), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_ciou_and_iou_match_an_independent_computation(pairs):
    preds = [_canonical(p) for p, _ in pairs]
    gts = [_canonical(g) for _, g in pairs]
    pred_t, gt_t = torch.tensor(preds, dtype=torch.float64), torch.tensor(gts, dtype=torch.float64)
    loss, iou = ciou_loss(pred_t, gt_t), box_iou(pred_t, gt_t)
    for i, (p, g) in enumerate(zip(preds, gts)):
        ref_loss, ref_iou = _ciou_reference(p, g)
        assert loss[i].item() == pytest.approx(ref_loss, rel=1e-9, abs=1e-9)
        assert iou[i].item() == pytest.approx(ref_iou, rel=1e-9, abs=1e-12)
        assert 0.0 <= iou[i].item() <= 1.0 + 1e-12


def _bbox_terms(pred, target):
    pred_c, target_c = canonicalize_boxes(pred), canonicalize_boxes(target)
    return ciou_loss(pred_c, target_c), smooth_l1(pred_c, target_c)


@given(raw_box, raw_box, st.booleans(), st.booleans())
@settings(max_examples=150, deadline=None)
def test_l5_bbox_terms_are_invariant_to_coordinate_swaps(pred, target, swap_x, swap_y):
    def swap(box):
        x1, y1, x2, y2 = box
        if swap_x:
            x1, x2 = x2, x1
        if swap_y:
            y1, y2 = y2, y1
        return (x1, y1, x2, y2)

    base = _bbox_terms(torch.tensor([pred], dtype=torch.float64), torch.tensor([target], dtype=torch.float64))
    moved = _bbox_terms(
        torch.tensor([swap(pred)], dtype=torch.float64), torch.tensor([swap(target)], dtype=torch.float64)
    )
    for a, b in zip(base, moved):
        assert torch.equal(a, b)


@given(st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.floats(0.002, 0.1), st.floats(0.002, 0.1))
@settings(max_examples=100, deadline=None)
def test_l5_identical_boxes_give_zero(x, y, w, h):
    box = torch.tensor([[x, y, min(1.0, x + w), min(1.0, y + h)]], dtype=torch.float64)
    ciou, sl1 = _bbox_terms(box, box.clone())
    assert ciou.item() == pytest.approx(0.0, abs=1e-12)
    assert sl1.item() == 0.0


@given(
    st.lists(st.tuples(raw_box, raw_box), min_size=1, max_size=6),
    st.sampled_from(["point", "hline", "vline"]),
)
@settings(max_examples=100, deadline=None)
def test_l5_degenerate_boxes_give_finite_values_and_gradients(pairs, shape):
    def degenerate(box):
        x1, y1, x2, y2 = box
        if shape in ("point", "vline"):
            x2 = x1
        if shape in ("point", "hline"):
            y2 = y1
        return (x1, y1, x2, y2)

    pred = torch.tensor([degenerate(p) for p, _ in pairs], dtype=torch.float32, requires_grad=True)
    target = torch.tensor(
        [degenerate(g) if i % 2 else g for i, (_, g) in enumerate(pairs)], dtype=torch.float32
    )
    ciou, sl1 = _bbox_terms(pred, target)
    assert torch.isfinite(ciou).all() and torch.isfinite(sl1).all()
    (ciou.sum() + sl1.sum()).backward()
    assert torch.isfinite(pred.grad).all()
    same = torch.tensor([[0.3, 0.3, 0.3, 0.3]])
    assert torch.isfinite(ciou_loss(same, same)).all()


def test_l5_alpha_carries_no_gradient():
    pred = torch.tensor([[0.1, 0.2, 0.5, 0.9]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0.2, 0.1, 0.8, 0.4]], dtype=torch.float64)
    ciou_loss(pred, target).sum().backward()

    def manual(p, detach_alpha):
        inter = (torch.minimum(p[:, 2], target[:, 2]) - torch.maximum(p[:, 0], target[:, 0])).clamp(min=0) * (
            torch.minimum(p[:, 3], target[:, 3]) - torch.maximum(p[:, 1], target[:, 1])
        ).clamp(min=0)
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        iou = inter / (area(p) + area(target) - inter)
        rho2 = ((p[:, 0] + p[:, 2] - target[:, 0] - target[:, 2]) / 2) ** 2 + (
            (p[:, 1] + p[:, 3] - target[:, 1] - target[:, 3]) / 2
        ) ** 2
        c2 = (torch.maximum(p[:, 2], target[:, 2]) - torch.minimum(p[:, 0], target[:, 0])) ** 2 + (
            torch.maximum(p[:, 3], target[:, 3]) - torch.minimum(p[:, 1], target[:, 1])
        ) ** 2
        v = (
            4
            / math.pi**2
            * (
                torch.atan((target[:, 2] - target[:, 0]) / (target[:, 3] - target[:, 1]))
                - torch.atan((p[:, 2] - p[:, 0]) / (p[:, 3] - p[:, 1]))
            )
            ** 2
        )
        alpha = v / (1 - iou + v + CIOU_EPS)
        if detach_alpha:
            alpha = alpha.detach()
        return (1 - (iou - rho2 / c2 - alpha * v)).sum()

    (grad_detached,) = torch.autograd.grad(manual(pred, True), pred)
    (grad_attached,) = torch.autograd.grad(manual(pred, False), pred)
    assert torch.allclose(pred.grad, grad_detached, atol=1e-12)
    assert not torch.allclose(pred.grad, grad_attached, atol=1e-6)


@given(st.lists(st.tuples(raw_box, raw_box), min_size=1, max_size=6), st.floats(0.001, 1.0))
@settings(max_examples=100, deadline=None)
def test_smooth_l1_is_the_mean_over_four_coordinates(pairs, beta):
    pred = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    target = torch.tensor([g for _, g in pairs], dtype=torch.float64)
    out = smooth_l1(pred, target, beta)
    for i, (p, g) in enumerate(pairs):
        terms = [
            0.5 * (a - b) ** 2 / beta if abs(a - b) < beta else abs(a - b) - 0.5 * beta for a, b in zip(p, g)
        ]
        assert out[i].item() == pytest.approx(sum(terms) / 4, rel=1e-12, abs=1e-15)


def test_smooth_l1_default_beta_and_validation():
    assert SMOOTH_L1_BETA == 0.02
    pred, target = torch.tensor([[0.0, 0.0, 0.01, 0.5]]), torch.zeros(1, 4)
    expected = (0.5 * 0.01**2 / 0.02 + (0.5 - 0.01)) / 4
    assert smooth_l1(pred, target).item() == pytest.approx(expected, rel=1e-6)
    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(PipelineError, match="beta"):
            smooth_l1(pred, target, beta)
    with pytest.raises(PipelineError, match=r"\[\.\.\., 4\]"):
        ciou_loss(torch.zeros(3, 3), torch.zeros(3, 3))


@given(st.integers(0, 2**31 - 1), st.floats(0.01, 1e4), st.sampled_from(["exp", "st"]))
@settings(max_examples=100, deadline=None)
def test_l4_decoded_coordinates_lie_in_unit_interval(seed, scale, mode):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((4, 1000), generator=generator) * scale
    out = decode_coords(logits, mode)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert ((out >= 0) & (out <= 1)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_l4_half_mass_at_both_ends_decodes_to_one_half(dtype):
    logits = torch.full((1, 1000), -1e4, dtype=dtype)
    logits[0, 0] = logits[0, 999] = 5.0
    assert decode_expectation(logits).item() == pytest.approx(0.5, abs=1e-6)


@given(st.integers(0, 2**31 - 1), st.integers(0, 999), st.integers(0, 999))
@settings(max_examples=50, deadline=None)
def test_l4_st_forward_is_argmax_and_its_gradient_is_the_expectations(seed, tie_a, tie_b):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((3, 1000), generator=generator, dtype=torch.float64)
    logits[1, tie_a] = logits[1, tie_b] = 10.0  # a tie: the lowest index wins
    logits.requires_grad_(True)
    hard = decode_st(logits)
    expected_bins = logits.detach().argmax(dim=-1)
    expected_bins[1] = min(tie_a, tie_b)
    assert torch.equal(hard.detach(), expected_bins.to(torch.float64) / 999)
    weights = torch.randn(3, generator=generator, dtype=torch.float64)
    (grad_st,) = torch.autograd.grad((hard * weights).sum(), logits)
    (grad_exp,) = torch.autograd.grad((decode_expectation(logits) * weights).sum(), logits)
    assert torch.allclose(grad_st, grad_exp, rtol=0, atol=0)


def test_l4_expectation_gradient_formula():
    logits = torch.randn(2, 1000, dtype=torch.float64, requires_grad=True)
    c_hat = decode_expectation(logits)
    (grad,) = torch.autograd.grad(c_hat[0], logits)
    probs = torch.softmax(logits.detach()[0], dim=-1)
    values = torch.arange(1000, dtype=torch.float64) / 999
    assert torch.allclose(grad[0], probs * (values - c_hat[0].detach()), atol=1e-14)
    assert torch.count_nonzero(grad[1]) == 0


def test_decode_rejects_bad_input():
    with pytest.raises(PipelineError, match="1000 coord bins"):
        decode_expectation(torch.zeros(2, 999))
    with pytest.raises(PipelineError, match="coord_decode_mode"):
        decode_coords(torch.zeros(2, 1000), "argmax")
    with pytest.raises(PipelineError, match="floating"):
        decode_st(torch.zeros(2, 1000, dtype=torch.long))
