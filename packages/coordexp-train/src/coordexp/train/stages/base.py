"""What a stage hands the executor: micro-batches with model inputs and metadata contexts.

A stage (Stage-1, Stage-2 variants) implements:
* `channel_for_step(step)` — the step's channel (a pure function of the step);
* `contexts_for(channel)` — the context names its context sets hold (for the static key list);
* `prepare_step(step, rank)` — this rank's micro-batches of one optimizer step;
* `forward(model, micro_batch)` — run the model and return the full `ContextSet`;
* `step_metrics(batch)` / `step_metric_keys(channel)` — its own counters with declared reductions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import torch

from coordexp.core.context import ContextSet
from coordexp.core.metrics import Metric


@attrs.frozen(eq=False)
class MicroBatch:
    """One padding-free pack.

    `model_inputs`: kwargs of the base model (`input_ids [1,T]`, `position_ids [4,1,T]`,
    `attention_mask`, `pixel_values`, `image_grid_thw`, `use_cache=False`); `predict_positions`
    long [N]: hidden-state rows whose logits the context needs; `meta`: metadata-only context set
    (denominators are computed from it before any forward); `n_tokens`: T; `n_segments`.
    """

    model_inputs: Mapping[str, Any]
    predict_positions: torch.Tensor
    meta: ContextSet
    n_tokens: int
    n_segments: int


@attrs.frozen(eq=False)
class StepBatch:
    channel: str
    micro_batches: tuple[MicroBatch, ...]
    metrics: tuple[Metric, ...] = ()


class Stage(Protocol):
    variant: str

    def channel_for_step(self, step: int) -> str: ...

    def contexts_for(self, channel: str) -> tuple[str, ...]: ...

    def prepare_step(self, step: int, rank: int) -> StepBatch: ...

    def forward(self, model: torch.nn.Module, micro_batch: MicroBatch) -> ContextSet: ...

    def step_metric_keys(self, channel: str) -> Sequence[tuple[str, str]]: ...


def move_inputs(inputs: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
