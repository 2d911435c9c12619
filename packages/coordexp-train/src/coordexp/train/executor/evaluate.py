"""Teacher-forced validation loss with the training pipeline (no gradient).

The validation packs are split contiguously over ranks; denominators are summed over every pack
and rank first, exactly as in a training step, so `loss/*` keys mean the same thing in train and
eval records. Every rank runs the same collectives even when it holds fewer packs (it contributes
zeros).
"""

from __future__ import annotations

from typing import Any

import torch

from coordexp.core.metrics import StepAggregator
from coordexp.core.pipeline.runner import PipelineRunner, reduce_denominators
from coordexp.train.executor.dist import DistContext


def teacher_forced_eval(stage: Any, model: torch.nn.Module, runner: PipelineRunner, dist: DistContext, accelerator: Any) -> dict[str, float]:
    micro_batches = stage.eval_micro_batches(dist.rank, dist.world_size)
    channel = stage.channel_for_step(0)
    local = runner.denominators([mb.meta for mb in micro_batches]) if micro_batches else {}
    groups = runner.denominators([]) if not micro_batches else local
    denominators = reduce_denominators({g: local.get(g, 0.0) for g in groups}, dist.all_reduce)
    aggregator = StepAggregator(runner.step_keys(channel, stage.contexts_for(channel)))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for mb in micro_batches:
            with accelerator.autocast():
                ctxset = stage.forward(model, mb)
                _, metrics = runner.run(ctxset, denominators)
            aggregator.add(metrics)
    model.train(was_training)
    reduced = aggregator.reduce(dist.all_reduce)
    return {f"val/{k}": v for k, v in reduced.items()}
