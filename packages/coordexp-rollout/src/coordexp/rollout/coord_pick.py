"""Expectation decoding of coordinate tokens (``decoding.coord_pick: expectation``; a coordexp
extension of spec 03 §3.1, whose decoding picks every token, coord tokens included, by the
configured strategy — ``coord_pick: token``, the default).

Stage-1's ``bbox_geo`` and ``coord_reg`` train the *distribution* over the 1000 bins (its
expectation and its Wasserstein distance to the target), not its mode. A model trained so spreads
its mass around the target, and the bin the argmax lands on is a noisier estimate of the box than
the distribution's mean: on the demo's tiny models, decoding the mean raised val AP50 by 0.01–0.08
(README, "Demo results").

At a **coord step** — a step where the coord tokens hold more than half of the probability mass of
``softmax(scores)`` — :class:`ExpectedCoordProcessor` forces ``<|coord_b|>`` with
``b = round(Σ_k p_k·k / Σ_k p_k)`` over the coord tokens (round half to even); every other step is
left to the configured decoding. The choice is deterministic: under sampling a coord step draws no
different token whatever the seed. ``scores`` are what ``generate`` hands its logits processors
before temperature/top-k/top-p (the raw logits, after a repetition penalty when one is set).
Eval scores (06 §6.3) still read the emitted token's probability under the raw τ = 1 distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from coordexp.core.errors import ConfigError


class ExpectedCoordProcessor(LogitsProcessor):
    """Forces the expected coord bin at coord steps (module doc).

    ``coord_ids``: the coord token ids in bin order (``coord_ids[k]`` is ``<|coord_k|>``).
    Called with ``scores [B, V]``; returns ``[B, V]``: unchanged rows at other steps, and at coord
    steps 0 for the picked token and −inf elsewhere (a one-hot for greedy, sampling and beams).
    """

    def __init__(self, coord_ids: Sequence[int] | torch.Tensor) -> None:
        ids = torch.as_tensor(coord_ids, dtype=torch.long).reshape(-1)
        if ids.numel() < 2 or ids.unique().numel() != ids.numel():
            raise ConfigError(
                "rollout_matching.decoding.coord_pick",
                f"expectation decoding needs >= 2 distinct coord token ids in bin order, got {ids.numel()}",
            )
        self.coord_ids = ids
        self.bins = torch.arange(ids.numel(), dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = self.coord_ids.to(scores.device)
        coord_logp = torch.log_softmax(scores.float(), dim=-1)[:, ids]  # [B, K]
        at_coord = coord_logp.logsumexp(dim=-1) > math.log(0.5)  # coord mass > 1/2
        if not bool(at_coord.any()):
            return scores
        expected = (torch.softmax(coord_logp, dim=-1) * self.bins.to(scores.device)).sum(dim=-1)
        picked = ids[expected.round().long().clamp(0, ids.numel() - 1)]  # [B]
        forced = torch.full_like(scores, float("-inf")).scatter_(1, picked[:, None], 0.0)
        return torch.where(at_coord[:, None], forced, scores)


__all__ = ["ExpectedCoordProcessor"]
