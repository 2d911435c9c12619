"""``sdpa_varlen``: SDPA that runs a packed row's block-diagonal causal mask one segment at a time.

A Stage-1 pack is one row of several samples with the explicit block-diagonal causal mask of spec
06 §6.7 (the ``sdpa`` path). SDPA on CPU (and its math kernel anywhere) then computes all ``T²``
scores and masks most of them away: with ~7 samples in a 1,024-token pack, about 85 % of the work
is thrown out, and it was ~30 % of a tiny model's step on CPU. This implementation computes the
same attention as ``sdpa`` with that mask, but runs SDPA once per segment with ``is_causal`` (the
varlen semantics flash-attention has on GPU), so the work is ``Σ lᵢ²``.

It is registered with transformers' ``AttentionInterface`` (and ``sdpa``'s mask function with
``AttentionMaskInterface``, so masks are built exactly as for ``sdpa``). :func:`sdpa_varlen_attention`
takes the per-segment path only when the mask *is* a block-diagonal causal mask of one row
(checked exactly, every call); anything else — padded batches, generation with a KV cache, no
mask, the vision tower's per-image calls — goes to transformers' ``sdpa_attention_forward``
unchanged. Select it with ``model.attn_implementation: sdpa_varlen``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

SDPA_VARLEN = "sdpa_varlen"


def block_diagonal_segments(attention_mask: torch.Tensor | None, q_len: int, kv_len: int) -> list[int] | None:
    """Segment boundaries ``[0, …, T]`` when ``attention_mask`` is exactly the bool block-diagonal
    causal mask ``[1, 1, T, T]`` of one packed row; None otherwise (any other mask or shape).

    A segment starts at every row that may not attend to the row before it.
    """
    if (
        attention_mask is None
        or attention_mask.dtype != torch.bool
        or attention_mask.shape != (1, 1, q_len, kv_len)
        or q_len != kv_len
        or q_len < 2
    ):
        return None
    allowed = attention_mask[0, 0]
    starts = (~allowed.diagonal(offset=-1)).nonzero().flatten() + 1
    bounds = [0, *starts.tolist(), q_len]
    segment = torch.repeat_interleave(
        torch.arange(len(bounds) - 1, device=allowed.device),
        torch.tensor(bounds, device=allowed.device).diff(),
    )
    expected = (segment[:, None] == segment[None, :]).tril_()
    return bounds if torch.equal(allowed, expected) else None


def sdpa_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Same contract and result as transformers' ``sdpa_attention_forward``: ``query [B, Hq, T, D]``,
    ``key``/``value [B, Hkv, S, D]`` → ``([B, T, Hq, D], None)``; per segment when the mask is a
    packed row's block-diagonal causal mask (see :func:`block_diagonal_segments`)."""
    bounds = block_diagonal_segments(attention_mask, query.shape[2], key.shape[2])
    if bounds is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask,
            dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs,
        )
    parts = [
        sdpa_attention_forward(
            module,
            query[:, :, a:b],
            key[:, :, a:b],
            value[:, :, a:b],
            None,
            dropout=dropout,
            scaling=scaling,
            is_causal=True,
            **kwargs,
        )[0]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(parts, dim=1), None


def register() -> None:
    """Make ``sdpa_varlen`` a transformers attention implementation (idempotent)."""
    AttentionInterface.register(SDPA_VARLEN, sdpa_varlen_attention)
    AttentionMaskInterface.register(SDPA_VARLEN, sdpa_mask)
