"""Initialization of coord-token embedding rows from the digits of their bin.

Row ``<|coord_k|>`` := mean of the rows of the tokens of the decimal string ``str(k)`` (e.g. "437"
→ the tokens of "4", "3", "7" with a Qwen-style tokenizer). Applied to the input embeddings and,
when the output projection is not tied to them, to the ``lm_head`` rows as well. A new coord token
then starts where the model already represents its number, instead of at a random point.
"""

from __future__ import annotations

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


@torch.no_grad()
def init_coord_rows(model: Any, tokenizer: Any, coord_ids: Sequence[int]) -> None:
    """Set the embedding (and untied ``lm_head``) rows of ``coord_ids`` (bin order) to digit means."""
    if len(coord_ids) != NUM_BINS:
        raise ValueError(f"expected {NUM_BINS} coord ids in bin order, got {len(coord_ids)}")
    index, valid = digit_token_index(tokenizer)
    rows = torch.as_tensor(list(coord_ids), dtype=torch.long)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    for weight in matrices:
        means = digit_mean_rows(weight, index, valid)
        weight[rows.to(weight.device)] = means.to(weight.dtype)
