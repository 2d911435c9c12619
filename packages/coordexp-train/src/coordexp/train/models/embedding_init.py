"""Initialization of coord-token embedding rows.

Two rules, applied to the input embeddings and, when the output projection is not tied to them, to
the ``lm_head`` rows as well:

* ``digits`` (for pretrained checkpoints, :func:`expand_vocab`): row ``<|coord_k|>`` := mean of the
  rows of the tokens of the decimal string ``str(k)`` (e.g. "437" → "4", "3", "7"). A new coord token
  starts where the model already represents its number.
* ``sincos`` (for random-init models, :func:`create_model`): row k := sinusoidal features of the
  bin value (periods from 2× the bin range down to 8 bins), scaled to the mean norm of the other
  rows. Neighbouring bins get similar rows, so the coord slice of the output head starts smooth in
  the bin index and the soft-CE / W1 gradients move whole neighbourhoods of bins together; random
  digit means have no such structure (439 and 440 share one digit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from coordexp.core.codec import NUM_BINS


def digit_token_index(
    tokenizer: Any, bins: Sequence[int] = range(NUM_BINS)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``str(k)`` for each bin, right-padded: ``(index[n, m] long, valid[n, m] bool)``."""
    encoded = tokenizer([str(k) for k in bins], add_special_tokens=False)["input_ids"]
    lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
    index = pad_sequence([torch.tensor(ids, dtype=torch.long) for ids in encoded], batch_first=True)
    valid = torch.arange(index.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    return index, valid


def digit_mean_rows(weight: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[n, H]`` means of ``weight[index[i, j]]`` over the valid ``j`` (computed in float32)."""
    gathered = weight.detach().float()[index.to(weight.device)]  # [n, m, H]
    mask = valid.to(weight.device).unsqueeze(-1).float()
    return (gathered * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def sincos_rows(n_bins: int, dim: int) -> torch.Tensor:
    """``[n_bins, dim]`` unit-RMS sinusoidal features of the bin index (float32)."""
    n_freq = max(1, dim // 2)
    periods = torch.logspace(math.log10(2.0 * n_bins), math.log10(8.0), n_freq, dtype=torch.float64)
    angles = torch.arange(n_bins, dtype=torch.float64)[:, None] * (2.0 * math.pi / periods)[None, :]
    feats = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[:, :dim]
    if feats.shape[1] < dim:
        feats = torch.cat([feats, torch.zeros(n_bins, dim - feats.shape[1], dtype=torch.float64)], dim=1)
    return (feats / feats.pow(2).mean(dim=1, keepdim=True).sqrt()).float()


COORD_INIT_MODES = ("digits", "sincos")


@torch.no_grad()
def init_coord_rows(model: Any, tokenizer: Any, coord_ids: Sequence[int], *, mode: str = "digits") -> None:
    """Set the embedding (and untied ``lm_head``) rows of ``coord_ids`` (bin order) by ``mode``."""
    if len(coord_ids) != NUM_BINS:
        raise ValueError(f"expected {NUM_BINS} coord ids in bin order, got {len(coord_ids)}")
    if mode not in COORD_INIT_MODES:
        raise ValueError(f"coord init mode must be one of {COORD_INIT_MODES}, got {mode!r}")
    rows = torch.as_tensor(list(coord_ids), dtype=torch.long)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    for weight in matrices:
        if mode == "digits":
            index, valid = digit_token_index(tokenizer)
            new = digit_mean_rows(weight, index, valid)
        else:
            others = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
            others[rows.to(weight.device)] = False
            rms = weight.detach().float()[others].pow(2).mean(dim=1).sqrt().mean()
            new = sincos_rows(NUM_BINS, weight.shape[1]).to(weight.device) * rms
        weight[rows.to(weight.device)] = new.to(weight.dtype)


def sincos_grid(side: int, dim: int) -> torch.Tensor:
    """``[side*side, dim]`` unit-RMS 2-D sinusoidal features (row-major grid): half x, half y."""
    half = dim // 2
    x = sincos_rows(side, half) if half else torch.zeros(side, 0)
    y = sincos_rows(side, dim - half)
    rows = torch.arange(side).repeat_interleave(side)
    cols = torch.arange(side).repeat(side)
    feats = torch.cat([x[cols], y[rows]], dim=1)
    return feats / feats.pow(2).mean(dim=1, keepdim=True).sqrt()


@torch.no_grad()
def init_vision_positions(model: Any) -> None:
    """Give a random-init vision tower smooth 2-D position embeddings.

    Qwen3-VL adds ``visual.pos_embed`` (a ``side × side`` grid, bilinearly interpolated to each
    image's patch grid) to the patch features. Random rows at the default 0.02 scale carry almost no
    position signal next to patch features ~10× larger, so a random tiny model learns *what* is in
    an image long before *where*. Sinusoidal rows at the patch features' expected scale make the
    position of every visual token linearly readable from the start; with the ``sincos`` coord
    rows, localization starts as a near-linear map. Only for random-init models (``create_model``).
    """
    visual = model.model.visual
    table = visual.pos_embed.weight
    side = math.isqrt(table.shape[0])
    conv = visual.patch_embed.proj.weight
    fan_in = conv[0].numel()
    # Pixels are normalized to [-1, 1] (RMS ≈ 0.5): the expected RMS of a patch feature.
    scale = 0.5 * math.sqrt(fan_in) * conv.float().pow(2).mean().sqrt()
    table.copy_((sincos_grid(side, table.shape[1]) * scale).to(table.dtype))
