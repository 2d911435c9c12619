"""Stage-1: GT teacher forcing with the declared pipeline (context `gt`, channel A).

Data plan (spec 06 §6.7): every training sample's token length is computed once (cached); with
`training.packing: true` samples are packed first-fit-decreasing up to `template.max_length`, one
pack per micro-batch; with `packing: false` each micro-batch holds `per_device_train_batch_size`
consecutive samples (still concatenated padding-free), each at most `template.max_length` long.
The plan is identical on every rank; a `StepSchedule` hands each rank E/W micro-batches per
optimizer step, so all ranks run the same number of forwards, backwards and collectives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from coordexp.core.context import ContextSet
from coordexp.core.metrics import Metric
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.packing.plan import (
    StepSchedule,
    check_lengths,
    first_fit_decreasing,
    fit_to_world,
    plan_sha256,
    sequential_groups,
)
from coordexp.train.stages.base import MicroBatch, StepBatch
from coordexp.train.stages.gt_packs import GTEncoder, build_pack, forward_single_context

CONTEXT = "gt"
CHANNEL = "A"


class Stage1:
    variant = "stage1"

    def __init__(
        self,
        encoder: GTEncoder,
        *,
        info: TokenizerInfo,
        rope_model: Any,
        max_length: int,
        max_pixels: int,
        packing: bool,
        per_device_batch: int,
        packs_per_step: int,
        world_size: int,
        drop_last: bool,
        seed: int,
        cache_dir: Path | None,
        device: torch.device,
        val_encoder: GTEncoder | None = None,
    ) -> None:
        self.encoder = encoder
        self.val_encoder = val_encoder
        self._val_length_cache: list[int] = []
        self.info = info
        self.rope_model = rope_model
        self.max_length = max_length
        self.device = device
        lengths = encoder.lengths(cache_dir=cache_dir, max_pixels=max_pixels)
        sample_ids = [r.id for r in encoder.dataset]
        if packing:
            packs = first_fit_decreasing(lengths, max_length, sample_ids=sample_ids)
            self.train_cap = max_length
        else:
            check_lengths(lengths, max_length, sample_ids=sample_ids)
            packs = sequential_groups(len(lengths), per_device_batch)
            self.train_cap = max_length * per_device_batch  # d samples of at most max_length each
        self.packs = fit_to_world(packs, world_size, drop_last=drop_last)
        self.plan_sha256 = plan_sha256(self.packs)
        self.lengths = lengths
        self.schedule = StepSchedule(len(self.packs), packs_per_step=packs_per_step, world_size=world_size, seed=seed)

    # -- stage protocol -------------------------------------------------------------------
    def channel_for_step(self, step: int) -> str:
        return CHANNEL

    def contexts_for(self, channel: str) -> tuple[str, ...]:
        return (CONTEXT,)

    def step_metric_keys(self, channel: str) -> Sequence[tuple[str, str]]:
        return (("train/segments_total", "sum"), ("train/tokens_total", "sum"), ("train/pack_fill_mean", "mean"))

    def prepare_step(self, step: int, rank: int) -> StepBatch:
        epoch = self.schedule.epoch_of(step)
        mbs = tuple(
            self._micro_batch(self.encoder, self.packs[p], epoch, cap=self.train_cap)
            for p in self.schedule.packs_for(step, rank)
        )
        return StepBatch(CHANNEL, mbs, self._pack_metrics(mbs))

    def forward(self, model: torch.nn.Module, micro_batch: MicroBatch) -> ContextSet:
        return forward_single_context(model, micro_batch, CONTEXT, self.device)

    # -- evaluation (teacher-forced validation loss) --------------------------------------
    def eval_micro_batches(self, rank: int, world_size: int, max_samples: int | None = None) -> list[MicroBatch]:
        """This rank's contiguous share of the validation packs (FFD over the val set).

        Every rank gets exactly ceil(P/W) micro-batches, so all ranks run the same forwards and
        collectives (spec 04 §4.1): a short share is topped up with padding packs, the shortest
        validation sample with `row_mult = 0`, which add nothing to any numerator, denominator or
        metric.
        """
        if self.val_encoder is None:
            return []
        n = len(self.val_encoder.dataset) if max_samples is None else min(max_samples, len(self.val_encoder.dataset))
        lengths = self._val_lengths(n)
        packs = first_fit_decreasing(lengths, self.max_length)
        share = -(-len(packs) // world_size)
        mine = [
            self._micro_batch(self.val_encoder, pack, 0, cap=self.max_length)
            for pack in packs[rank * share : (rank + 1) * share]
        ]
        if len(mine) < share:
            shortest = min(range(n), key=lambda i: (lengths[i], i))
            padding = self._micro_batch(self.val_encoder, [shortest], 0, cap=self.max_length, row_mult=[0.0])
            mine.extend([padding] * (share - len(mine)))
        return mine

    # -- helpers ----------------------------------------------------------------------------
    def _val_lengths(self, n: int) -> list[int]:
        """Token lengths of the first `n` val samples; computed once (the val set and its epoch-0
        order never change), not re-encoded at every eval step."""
        known = self._val_length_cache
        if len(known) < n:
            known.extend(self.val_encoder.encode(i, 0).length for i in range(len(known), n))
        return known[:n]

    def _micro_batch(
        self,
        encoder: GTEncoder,
        indices: Sequence[int],
        epoch: int,
        *,
        cap: int,
        row_mult: Sequence[float] | None = None,
    ) -> MicroBatch:
        samples = [encoder.encode(i, epoch) for i in indices]
        return build_pack(
            samples,
            rope_model=self.rope_model,
            info=self.info,
            cap=cap,
            context=CONTEXT,
            channel=CHANNEL,
            trainer_variant=self.variant,
            coord_decode_mode="exp",
            row_mult=row_mult,
            device=self.device,
        )

    def _pack_metrics(self, mbs: Sequence[MicroBatch]) -> tuple[Metric, ...]:
        return (
            Metric.sum("train/segments_total", float(sum(m.n_segments for m in mbs))),
            Metric.sum("train/tokens_total", float(sum(m.n_tokens for m in mbs))),
            Metric.mean(
                "train/pack_fill_mean", float(sum(m.n_tokens for m in mbs)), float(self.train_cap * len(mbs))
            ),
        )
