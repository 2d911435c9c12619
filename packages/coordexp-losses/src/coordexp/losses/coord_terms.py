"""Per-row coordinate terms of coord_reg (spec 02 §2.6), on ``[R, 1000]`` distributions.

All functions are batched over rows, differentiable in the probabilities / log-probabilities, and
return float ``[R]`` (same dtype as their input). Bins are ``0..999``; ``v_k = k/999``.
"""

from __future__ import annotations

import torch

from coordexp.core.geometry import NUM_BINS

__all__ = [
    "ENTROPY_FLOOR",
    "TEXT_GATE_FLOOR",
    "expected_huber",
    "expected_l1",
    "gaussian_targets",
    "soft_cross_entropy",
    "truncated_entropy",
    "wasserstein1",
]

ENTROPY_FLOOR = 1e-12
TEXT_GATE_FLOOR = 1e-6
_SCALE = float(NUM_BINS - 1)


def _bin_offsets(targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[R, 1000]`` ``i − t`` in bins."""
    bins = torch.arange(NUM_BINS, device=targets.device, dtype=dtype)
    return bins[None, :] - targets.to(dtype)[:, None]


def gaussian_targets(
    targets: torch.Tensor, sigma: float, truncate: int | None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[R, 1000]`` Gaussian soft targets ``q_i ∝ exp(−½((i − t)/σ)²)`` on ``|i − t| ≤ R``, ``Σq = 1``.

    ``targets``: long ``[R]`` bins; ``sigma`` in bins (> 0); ``truncate`` ``None`` = untruncated.
    The peak bin ``t`` always has mass, so the normalizer is ≥ 1 and never 0.
    """
    offsets = _bin_offsets(targets, torch.float64)
    logits = -0.5 * (offsets / sigma).square()
    if truncate is not None:
        logits = logits.masked_fill(offsets.abs() > truncate, float("-inf"))
    return torch.softmax(logits, dim=-1).to(dtype)


def soft_cross_entropy(log_probs: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """``−Σ_i q_i log p_i`` per row. Bins with ``q_i = 0`` contribute exactly 0."""
    return -(soft_targets * log_probs).where(soft_targets > 0, log_probs.new_zeros(())).sum(dim=-1)


def wasserstein1(probs: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """``(1/999) Σ_{i=0}^{998} |P_i − Q_i|`` with ``P``, ``Q`` the CDFs (normalized W1 on [0, 1])."""
    gap = torch.cumsum(probs, dim=-1) - torch.cumsum(soft_targets, dim=-1)
    return gap[:, : NUM_BINS - 1].abs().sum(dim=-1) / _SCALE


def truncated_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``−Σ p_i log max(p_i, 1e−12)`` per row, in ``[0, log 1000]``."""
    return -(probs * torch.log(probs.clamp_min(ENTROPY_FLOOR))).sum(dim=-1)


def expected_l1(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``Σ_k p_k |v_k − g|`` with ``g = t/999`` (normalized units)."""
    distance = _bin_offsets(targets, probs.dtype).abs() / _SCALE
    return (probs * distance).sum(dim=-1)


def expected_huber(probs: torch.Tensor, targets: torch.Tensor, delta: float) -> torch.Tensor:
    """``Σ_k p_k h(|v_k − g|)``, ``h(a) = a²/(2δ)`` if ``a < δ`` else ``a − δ/2`` (δ normalized)."""
    distance = _bin_offsets(targets, probs.dtype).abs() / _SCALE
    huber = torch.where(distance < delta, distance.square() / (2.0 * delta), distance - 0.5 * delta)
    return (probs * huber).sum(dim=-1)
