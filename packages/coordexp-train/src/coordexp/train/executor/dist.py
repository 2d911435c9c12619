"""Rank facts and the all-reduce used by the step reducer, denominators and status flags.

Every collective goes through `DistContext.all_reduce`, which every rank calls the same number of
times in the same order (rank symmetry by construction): the executor issues a fixed sequence per
step — status flag, pack count, denominators, metric sums, metric maxima.
"""

from __future__ import annotations

import attrs
import torch
import torch.distributed as dist

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


@attrs.frozen
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def all_reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        """In-place all-reduce (`op` "sum" or "max"); identity on one process."""
        if self.distributed:
            work = tensor.to(self.device)
            dist.all_reduce(work, op=_OPS[op])
            if work is not tensor:
                tensor.copy_(work.to(tensor.device))
        return tensor

    def max_flag(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64)
        self.all_reduce(t, "max")
        return float(t.item())

    def broadcast_object(self, obj: object) -> object:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
