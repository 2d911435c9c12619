"""First-fit-decreasing packing plans and their distribution over steps and ranks.

Static (Stage-1) plan, spec 06 §6.7:
* order samples by `(−len, index)`, put each into the first pack with room (`Σ len ≤ cap`);
* indices ascend inside a pack; packs are sorted by their smallest index; a sample is never split;
* the plan depends only on the lengths and the cap, so it is identical on every rank and epoch.

Hand-written rather than taken from a bin-packing library: the spec fixes the exact tie-breaking
and ordering, and first-fit over a few thousand packs is a simple loop with a capacity array.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from coordexp.core.errors import ConfigError, DataContractError


def check_lengths(
    lengths: Sequence[int], cap: int, *, sample_ids: Sequence[object] | None = None
) -> np.ndarray:
    """`lengths` as int64 after checking that every sample fits `cap` = `template.max_length`.

    A longer sample is the data error `too_long` (samples are never truncated), named by its id.
    """
    lens = np.asarray(lengths, dtype=np.int64)
    if cap < 1:
        raise ConfigError("template.max_length", f"packing cap must be >= 1, got {cap}")
    too_long = np.flatnonzero(lens > cap)
    if too_long.size:
        i = int(too_long[0])
        who = sample_ids[i] if sample_ids is not None else i
        raise DataContractError(
            "too_long",
            f"sample {who!r} encodes to {int(lens[i])} tokens > template.max_length={cap} "
            f"({too_long.size} samples in all); raise template.max_length or drop them",
        )
    return lens


def first_fit_decreasing(lengths: Sequence[int], cap: int, *, sample_ids: Sequence[object] | None = None) -> list[list[int]]:
    """Pack sample indices into bins of capacity `cap` (see the module docstring).

    A sample longer than `cap` is the data error `too_long` (never truncated).
    """
    lens = check_lengths(lengths, cap, sample_ids=sample_ids)
    order = sorted(range(len(lens)), key=lambda i: (-int(lens[i]), i))
    smallest = int(lens.min()) if len(lens) else 0
    free: list[int] = []
    members: list[list[int]] = []
    # Bins that can still take the smallest sample, in bin order: a bin with less room can take no
    # later sample, so leaving it out of the scan keeps first-fit's choice and the scan short.
    open_bins: list[int] = []
    for i in order:
        need = int(lens[i])
        for k, b in enumerate(open_bins):
            if free[b] >= need:
                free[b] -= need
                members[b].append(i)
                if free[b] < smallest:
                    del open_bins[k]
                break
        else:
            free.append(cap - need)
            members.append([i])
            if cap - need >= smallest:
                open_bins.append(len(free) - 1)
    packs = [sorted(m) for m in members]
    packs.sort(key=lambda p: p[0])
    return packs


def sequential_groups(n: int, group_size: int) -> list[list[int]]:
    """`training.packing: false`: consecutive groups of `group_size` samples (last may be short)."""
    return [list(range(i, min(n, i + group_size))) for i in range(0, n, group_size)]


def plan_sha256(packs: Sequence[Sequence[int]]) -> str:
    return hashlib.sha256(json.dumps([list(map(int, p)) for p in packs]).encode()).hexdigest()


def fit_to_world(packs: list[list[int]], world_size: int, *, drop_last: bool) -> list[list[int]]:
    """Make the pack count a multiple of `world_size` (spec 06 §6.7).

    `drop_last` keeps `floor(P/W)·W` packs; otherwise the plan is padded with `plan[:(−P) mod W]`,
    cycling through the plan when it is shorter than that (P < W − 1), so the result always has
    `ceil(P/W)·W` packs. P = 0 is an error.
    """
    p = len(packs)
    if p == 0:
        raise ConfigError("custom.train_jsonl", "the packing plan is empty: no training samples")
    if drop_last:
        kept = (p // world_size) * world_size
        if kept == 0:
            raise ConfigError(
                "training.dataloader_drop_last",
                f"{p} packs cannot feed {world_size} ranks with drop_last; disable it or add data",
            )
        return packs[:kept]
    return packs + [packs[i % p] for i in range((-p) % world_size)]


def epoch_visit_order(n_packs: int, *, seed: int, epoch: int) -> np.ndarray:
    """Permutation of pack indices for one epoch (contents fixed, order per (seed, epoch))."""
    digest = hashlib.sha256(f"packs:{seed}:{epoch}".encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "big")))
    return rng.permutation(n_packs)


class StepSchedule:
    """Which packs every rank runs at each optimizer step.

    Packs per step `E` = `training.effective_batch_size` (counting packs), split over `world_size`
    ranks in contiguous global slots: rank r gets slots `r, r+W, …` of the step's E packs, so each
    rank runs exactly E/W micro-batches (gradient accumulation steps). Steps per epoch =
    floor(P / E); the position is a pure function of the global step, so resume is exact.
    """

    def __init__(self, n_packs: int, *, packs_per_step: int, world_size: int, seed: int) -> None:
        if packs_per_step % world_size:
            raise ConfigError(
                "training.effective_batch_size",
                f"{packs_per_step} is not divisible by world size {world_size}",
            )
        if n_packs < packs_per_step:
            raise ConfigError(
                "training.effective_batch_size",
                f"effective batch of {packs_per_step} packs exceeds the {n_packs} packs of the data",
            )
        self.n_packs = n_packs
        self.packs_per_step = packs_per_step
        self.world_size = world_size
        self.seed = seed
        self.steps_per_epoch = n_packs // packs_per_step
        self._orders: dict[int, np.ndarray] = {}

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def packs_for(self, step: int, rank: int) -> list[int]:
        """Pack indices rank `rank` runs at optimizer step `step` (in micro-batch order)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self._orders.get(epoch)
        if order is None:
            order = epoch_visit_order(self.n_packs, seed=self.seed, epoch=epoch)
            self._orders = {epoch: order}
        start = within * self.packs_per_step
        slots = order[start : start + self.packs_per_step]
        return [int(p) for p in slots[rank :: self.world_size]]
