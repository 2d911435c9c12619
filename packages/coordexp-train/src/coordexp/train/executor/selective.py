"""Logits only at supervised rows (spec 02 §2.3, D19).

`SelectiveLogitsLM` wraps a `Qwen3VLForConditionalGeneration`: it runs the base model to the last
hidden state, gathers the hidden states at the prediction positions (target position − 1, the
causal shift applied once by `pack_rows`) and applies `lm_head` to those rows only, returning
`logits [N, V]`. Image tokens dominate Qwen3-VL sequences, so the full `[T, V]` logits this avoids
are most of a step's activation memory at the real vocabulary.

The wrapper is the module handed to Accelerate (DDP wraps *it*), so gradients of every
parameter the forward touches are synchronized as usual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SelectiveLogitsLM(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, predict_positions: torch.Tensor, **model_inputs: Any) -> torch.Tensor:
        """`predict_positions` long [N] into the packed sequence of batch row 0 → `logits [N, V]`."""
        out = self.model.model(**model_inputs, return_dict=True)
        if getattr(out, "past_key_values", None) is not None:
            raise RuntimeError("a teacher-forced forward must not build a KV cache (pass use_cache=False)")
        hidden = out.last_hidden_state[0]
        return self.model.lm_head(hidden.index_select(0, predict_positions))


def full_sequence_logits(model: nn.Module, **model_inputs: Any) -> torch.Tensor:
    """Reference path for benchmarks and tests: logits for every position `[T, V]`."""
    out = model(**model_inputs, return_dict=True)
    return out.logits[0]
