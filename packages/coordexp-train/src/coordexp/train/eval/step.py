"""The detection eval step inside training (spec 04 §4.9, 06 §6.6).

Every rank decodes a contiguous `ceil(n/W)` chunk of the first `max_samples` validation records
greedily (the live model, unwrapped; no gradient); rank 0 gathers the `gt_vs_pred` lines in dataset
order, evaluates them and broadcasts one fixed-key dict of Python floats. Anything failing after
the rollouts exist (records, scoring, COCO, F1) follows the failure rule: every COCO/F1 key 0.0,
`rollout/eval_failed_count` 1, a warning, training continues. Generation failures are fatal.
The collectives (one gather, one broadcast) run on every rank unconditionally.
"""

from __future__ import annotations

import logging
import math
import traceback
from pathlib import Path
from typing import Any

from coordexp.train.eval.evaluate import evaluate_outcome, metric_keys
from coordexp.train.eval.records import GT_VS_PRED_FILE, write_records
from coordexp.train.executor.dist import DistContext

log = logging.getLogger(__name__)


class DetectionEvalStep:
    def __init__(
        self,
        *,
        predictor: Any,
        dataset: Any,
        max_samples: int | None,
        metrics: tuple[str, ...],
        score_source: str,
        dist: DistContext,
        output_dir: Path | None,
    ) -> None:
        self.predictor = predictor
        self.dataset = dataset
        self.n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
        self.metrics = tuple(metrics)
        self.score_source = score_source
        self.dist = dist
        self.output_dir = output_dir
        self._warned: set[str] = set()

    def my_indices(self) -> list[int]:
        share = math.ceil(self.n / self.dist.world_size) if self.n else 0
        start = self.dist.rank * share
        return list(range(start, min(self.n, start + share)))

    def __call__(self, step: int) -> dict[str, float]:
        indices = self.my_indices()
        mine = self.predictor.predict([self.dataset[i] for i in indices], indices) if indices else []
        gathered = self._gather(mine)
        result = None
        if self.dist.is_main:
            records = sorted((r for part in gathered for r in part), key=lambda r: r.image_id)
            result = self._evaluate(step, records)
        return dict(self.dist.broadcast_object(result))

    def _gather(self, mine: list[Any]) -> list[list[Any]]:
        if not self.dist.distributed:
            return [mine]
        import torch.distributed as tdist

        out: list[Any] = [None] * self.dist.world_size
        tdist.all_gather_object(out, mine)
        return out

    def _evaluate(self, step: int, records: list[Any]) -> dict[str, float]:
        try:
            if self.output_dir is not None:
                out = self.output_dir / f"step_{step}"
                out.mkdir(parents=True, exist_ok=True)
                write_records(out / GT_VS_PRED_FILE, records)
            outcome = evaluate_outcome(records, metrics=self.metrics, score_source=self.score_source)
            metrics = dict(outcome.metrics)
            if self.output_dir is not None:
                import json

                (self.output_dir / f"step_{step}" / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
            return metrics
        except Exception as exc:  # the failure rule of 06 §6.6: log once per distinct error, keep training
            key = f"{type(exc).__name__}: {exc}"
            if key not in self._warned:
                self._warned.add(key)
                log.warning("detection eval failed at step %d; logging 0.0\n%s", step, traceback.format_exc())
            zeros = {k: 0.0 for k in metric_keys(self.metrics)}
            zeros["rollout/eval_failed_count"] = 1.0
            return zeros
