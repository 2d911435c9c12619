"""Box geometry and coordinate decoding in normalized [0, 1] units (spec 02 §2.7–2.8).

Everything is torch, batched over leading dimensions and differentiable. Boxes are ``[..., 4]``
``(x1, y1, x2, y2)``; coordinate logits are ``[..., 1000]`` (one column per bin, bin k ↔ k/999).
"""

from __future__ import annotations

import math

import torch

from coordexp.core.errors import PipelineError

__all__ = [
    "CIOU_EPS",
    "DECODE_MODES",
    "NUM_BINS",
    "SMOOTH_L1_BETA",
    "bin_values",
    "box_iou",
    "canonicalize_boxes",
    "ciou_loss",
    "decode_coords",
    "decode_expectation",
    "decode_st",
    "smooth_l1",
]

NUM_BINS = 1000
CIOU_EPS = 1e-7
SMOOTH_L1_BETA = 0.02
DECODE_MODES = ("exp", "st")
_BIN_SCALE = float(NUM_BINS - 1)


def _check_boxes(boxes: torch.Tensor, what: str) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.ndim < 1 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise PipelineError(f"{what}: expected a tensor of boxes [..., 4] (x1, y1, x2, y2), got {shape}")
    if not boxes.is_floating_point():
        raise PipelineError(f"{what}: expected a floating tensor, got {boxes.dtype}")


def _check_coord_logits(coord_logits: torch.Tensor) -> None:
    if not isinstance(coord_logits, torch.Tensor) or coord_logits.ndim < 1:
        raise PipelineError("coord_logits: expected a tensor [..., 1000]")
    if coord_logits.shape[-1] != NUM_BINS:
        raise PipelineError(
            f"coord_logits: the last dimension must be the {NUM_BINS} coord bins, "
            f"got {tuple(coord_logits.shape)}"
        )
    if not coord_logits.is_floating_point():
        raise PipelineError(f"coord_logits: expected a floating tensor, got {coord_logits.dtype}")


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def bin_values(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[1000]`` bin centres ``v_k = k / 999``."""
    return torch.arange(NUM_BINS, device=device, dtype=dtype) / _BIN_SCALE


def canonicalize_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """``(min x, min y, max x, max y)`` of each box, clamped to [0, 1]; shape ``[..., 4]`` preserved."""
    _check_boxes(boxes, "boxes")
    x_lo = torch.minimum(boxes[..., 0], boxes[..., 2])
    x_hi = torch.maximum(boxes[..., 0], boxes[..., 2])
    y_lo = torch.minimum(boxes[..., 1], boxes[..., 3])
    y_hi = torch.maximum(boxes[..., 1], boxes[..., 3])
    return torch.stack((x_lo, y_lo, x_hi, y_hi), dim=-1).clamp(0.0, 1.0)


def _intersection_and_union(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inter_w = (
        torch.minimum(pred[..., 2], target[..., 2]) - torch.maximum(pred[..., 0], target[..., 0])
    ).clamp(min=0.0)
    inter_h = (
        torch.minimum(pred[..., 3], target[..., 3]) - torch.maximum(pred[..., 1], target[..., 1])
    ).clamp(min=0.0)
    inter = inter_w * inter_h
    area_pred = (pred[..., 2] - pred[..., 0]).clamp(min=0.0) * (pred[..., 3] - pred[..., 1]).clamp(min=0.0)
    area_target = (target[..., 2] - target[..., 0]).clamp(min=0.0) * (target[..., 3] - target[..., 1]).clamp(
        min=0.0
    )
    return inter, area_pred + area_target - inter


def box_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = CIOU_EPS) -> torch.Tensor:
    """Paired IoU ``[...]`` of canonical boxes ``[..., 4]``: ``inter / max(union, eps)``."""
    _check_boxes(pred, "pred")
    _check_boxes(target, "target")
    inter, union = _intersection_and_union(pred, target)
    return inter / union.clamp(min=eps)


def ciou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = CIOU_EPS) -> torch.Tensor:
    """Paired ``1 − CIoU`` ``[...]`` of canonical boxes ``[..., 4]`` (spec 02 §2.8, D17).

    ``CIoU = IoU − ρ²/c² − α·v`` with ``IoU = inter / max(union, eps)``, ``ρ²`` the squared centre
    distance, ``c² = max(cw² + ch², eps)`` the enclosing-box diagonal, ``v = (4/π²)(atan(w_g/h_g) −
    atan(w_p/h_p))²`` (widths and heights clamped ≥ eps) and ``α = sg(v / (1 − IoU + v + eps))``,
    which carries no gradient. Boxes must already be canonical (``canonicalize_boxes``).
    """
    _check_boxes(pred, "pred")
    _check_boxes(target, "target")
    inter, union = _intersection_and_union(pred, target)
    iou = inter / union.clamp(min=eps)

    centre_dx = (pred[..., 0] + pred[..., 2] - target[..., 0] - target[..., 2]) * 0.5
    centre_dy = (pred[..., 1] + pred[..., 3] - target[..., 1] - target[..., 3]) * 0.5
    rho2 = centre_dx.square() + centre_dy.square()
    enclose_w = torch.maximum(pred[..., 2], target[..., 2]) - torch.minimum(pred[..., 0], target[..., 0])
    enclose_h = torch.maximum(pred[..., 3], target[..., 3]) - torch.minimum(pred[..., 1], target[..., 1])
    c2 = (enclose_w.square() + enclose_h.square()).clamp(min=eps)

    w_pred = (pred[..., 2] - pred[..., 0]).clamp(min=eps)
    h_pred = (pred[..., 3] - pred[..., 1]).clamp(min=eps)
    w_target = (target[..., 2] - target[..., 0]).clamp(min=eps)
    h_target = (target[..., 3] - target[..., 1]).clamp(min=eps)
    v = (4.0 / math.pi**2) * (torch.atan(w_target / h_target) - torch.atan(w_pred / h_pred)).square()
    with torch.no_grad():
        alpha = v / (1.0 - iou + v + eps)
    ciou = iou - rho2 / c2 - alpha * v
    return 1.0 - ciou


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = SMOOTH_L1_BETA) -> torch.Tensor:
    """Per-box SmoothL1 ``[...]`` = ``¼ Σ_j sl1(pred_j − target_j)`` over the 4 coordinates.

    ``sl1(x) = 0.5 x² / β`` if ``|x| < β`` else ``|x| − 0.5 β``; ``β > 0`` (default 0.02, D17).
    """
    _check_boxes(pred, "pred")
    _check_boxes(target, "target")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise PipelineError(f"smooth_l1: beta must be a finite number > 0, got {beta!r}")
    abs_diff = (pred - target).abs()
    per_coord = torch.where(abs_diff < beta, 0.5 * abs_diff.square() / beta, abs_diff - 0.5 * beta)
    return per_coord.mean(dim=-1)


def decode_expectation(coord_logits: torch.Tensor) -> torch.Tensor:
    """Expected coordinate ``ĉ = Σ_k softmax(s)_k · k/999`` in [0, 1], shape ``[...]`` (spec 02 §2.7).

    Accumulates in at least float32; ``∂ĉ/∂s_k = p_k (v_k − ĉ)``.
    """
    _check_coord_logits(coord_logits)
    dtype = _accumulation_dtype(coord_logits.dtype)
    probs = torch.softmax(coord_logits.to(dtype), dim=-1)
    expected = probs @ bin_values(coord_logits.device, dtype)
    # Σp may exceed 1 by a rounding error; the clamp keeps ĉ in [0, 1] and passes gradients at the bounds.
    return expected.clamp(0.0, 1.0)


def decode_st(coord_logits: torch.Tensor) -> torch.Tensor:
    """Straight-through coordinate ``argmax(s)/999 + ĉ − sg(ĉ)`` (spec 02 §2.7).

    The forward value is exactly ``argmax/999`` (ties → lowest index); the gradient is the
    expectation's.
    """
    expected = decode_expectation(coord_logits)
    hard = torch.argmax(coord_logits, dim=-1).to(expected.dtype) / _BIN_SCALE
    return hard + (expected - expected.detach())


def decode_coords(coord_logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Decode ``[..., 1000]`` coord logits to ``[...]`` coordinates with mode ``"exp"`` or ``"st"``."""
    if mode == "exp":
        return decode_expectation(coord_logits)
    if mode == "st":
        return decode_st(coord_logits)
    raise PipelineError(f"coord_decode_mode must be one of {DECODE_MODES}, got {mode!r}")
