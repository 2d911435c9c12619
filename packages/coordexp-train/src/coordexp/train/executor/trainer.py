"""One Accelerate loop for every stage.

Per optimizer step, identically on every rank (spec 04 §4.1, 02 §2.9):

1. `stage.prepare_step(step, rank)` builds this rank's micro-batches (no forward), up to
   `prefetch_steps` steps ahead on a background thread (executor/prefetch.py);
2. all-reduce MAX of an error flag: a failure anywhere aborts the step on every rank;
3. all-reduce MAX of the micro-batch count: unequal counts abort (stages pad beforehand);
4. denominators of every atom group are summed over the step's micro-batches and all-reduced once;
5. one forward/backward per micro-batch, all but the last under `no_sync`;
6. gradient clipping, one optimizer and scheduler step;
7. the step's metrics are reduced once (two fixed all-reduces) and logged on rank 0.

With a `decide_total` callback the run's step count is fixed once, from the step times measured
so far, as late as the schedule allows: after every step from the end of warm-up through the
horizon's `fixable_through()` the callback proposes a total (rank 0's answer, one broadcast), and
the total is fixed at the first step where waiting longer would change a learning rate: at once
for `cosine`/`linear` (the end of warm-up), when the proposal's decay must begin for
`warmup_stable_decay`, when the proposal is reached for `constant`. The schedule's
:class:`~coordexp.train.run.schedule.Horizon` takes it, and the learning rates are those of a run
configured with that count from the start.

The loss of each micro-batch is `world_size · Σ W_m·w_atom·num / D_g` (PipelineRunner), so
gradients and logged losses do not depend on packing, accumulation or world size.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import attrs
import torch

from coordexp.core.errors import StepAborted
from coordexp.core.metrics import Metric, StepAggregator
from coordexp.core.pipeline.runner import PipelineRunner, reduce_denominators
from coordexp.train.executor.dist import DistContext
from coordexp.train.executor.prefetch import StepPrefetcher
from coordexp.train.run.logsink import MetricsLog
from coordexp.train.run.schedule import Horizon

log = logging.getLogger("coordexp.train")

#: ``decide_total(steps_done, median_step_s) -> total``: the run's step count, called on every rank
#: after each step while the total may still be fixed (rank 0's answer is used); clamped to
#: ``[steps_done + 1, max_steps]``. ``median_step_s`` covers the last ``TIMING_WINDOW`` steps.
DecideTotal = Callable[[int, float], int]
#: steps whose median time `decide_total` sees (recent ones: the machine's speed drifts)
TIMING_WINDOW = 100

EXECUTOR_KEYS: tuple[tuple[str, str], ...] = (
    ("train/grad_norm_max", "max"),
    ("train/lr_max", "max"),
    ("time/step_prepare_s_sum", "sum"),
    ("time/forward_backward_s_sum", "sum"),
)


@attrs.frozen
class LoopSettings:
    max_steps: int
    max_grad_norm: float | None
    logging_steps: int
    eval_steps: int | None
    save_steps: int | None
    keep_checkpoints: int | None = 3
    prefetch_steps: int = 0


@attrs.frozen
class StepResult:
    step: int
    metrics: dict[str, float]


class Trainer:
    """Runs `stage` with `runner` from `start_step` to the horizon's total (`settings.max_steps`
    without a horizon; it is also the most a `decide_total` may choose).

    `save(step)` and `evaluate(step)` are callables supplied by the run builder (they know the
    output layout and the eval data); the trainer only decides *when*.
    """

    def __init__(
        self,
        *,
        accelerator: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        stage: Any,
        runner: PipelineRunner,
        dist: DistContext,
        settings: LoopSettings,
        log: MetricsLog,
        hooks: Any = None,
        save: Callable[[int], None] | None = None,
        evaluate: Callable[[int], dict[str, float]] | None = None,
        progress: bool = True,
        horizon: Horizon | None = None,
        decide_total: DecideTotal | None = None,
    ) -> None:
        if decide_total is not None and (horizon is None or horizon.warmup_steps < 2):
            raise ValueError("decide_total needs a horizon with at least 2 warm-up steps to time")
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.stage = stage
        self.runner = runner
        self.dist = dist
        self.settings = settings
        self.log = log
        self.hooks = hooks
        self.save = save
        self.evaluate = evaluate
        self.progress = progress
        self.horizon = horizon
        self.decide_total = decide_total
        self.history: list[StepResult] = []

    @property
    def max_steps(self) -> int:
        return self.horizon.total_steps if self.horizon is not None else self.settings.max_steps

    # ------------------------------------------------------------------------------------------
    def train(self, start_step: int = 0) -> list[StepResult]:
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_steps, initial=start_step, desc="train", dynamic_ncols=True)
        prefetch = StepPrefetcher(
            lambda step: self.stage.prepare_step(step, self.dist.rank),
            start=start_step,
            stop=self.max_steps,
            depth=self.settings.prefetch_steps,
        )
        try:
            step = start_step
            while step < self.max_steps:
                result = self.train_step(step, prefetch.take)
                self.history.append(result)
                step = done = step + 1
                if self._deciding_at(done):
                    self._consider_total(done, bar)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(self._postfix(result.metrics), refresh=False)
                first = done == start_step + 1
                if done % self.settings.logging_steps == 0 or done == self.max_steps or first:
                    self.log.write(done, result.metrics)
                if self.evaluate is not None and self.settings.eval_steps and (
                    done % self.settings.eval_steps == 0 or done == self.max_steps
                ):
                    prefetch.quiesce()  # evaluation encodes with the same tokenizer/processor
                    eval_metrics = self.evaluate(done)
                    if self.dist.is_main and eval_metrics:
                        self.log.write(done, eval_metrics, kind="eval")
                if self.save is not None and (
                    (self.settings.save_steps and done % self.settings.save_steps == 0) or done == self.max_steps
                ):
                    prefetch.quiesce()
                    self.save(done)
        finally:
            prefetch.close()
            if bar is not None:
                bar.close()
        return self.history

    def _deciding_at(self, done: int) -> bool:
        horizon = self.horizon
        return (
            self.decide_total is not None
            and horizon.fixed_at is None
            and horizon.warmup_steps <= done <= horizon.fixable_through()
        )

    def _consider_total(self, done: int, bar: Any) -> None:
        """Ask `decide_total` for the run's step count (rank 0's answer, broadcast); fix it once
        waiting longer would change a learning rate (module doc)."""
        assert self.decide_total is not None and self.horizon is not None
        timed = self.history[1:] or self.history  # the first step warms up (unless it is all a resume ran)
        step_s = statistics.median(r.metrics["time/step_s"] for r in timed[-TIMING_WINDOW:])
        decided = self.dist.broadcast_object(int(self.decide_total(done, step_s)))
        total = max(done + 1, min(int(decided), self.settings.max_steps))
        if self.horizon.schedule.free_until(total) > done:
            return  # no learning rate used so far depends on the total: decide again next step
        total = self.horizon.smallest_fixable_total(total, at_step=done)
        self.horizon.fix(total, at_step=done)
        log.info(
            "step count fixed at step %d: %d steps (%.3f s per step, the median of the last %d; at most %d)",
            done, total, step_s, min(len(timed), TIMING_WINDOW), self.settings.max_steps,
        )
        if bar is not None:
            bar.total = total
            bar.refresh()

    # ------------------------------------------------------------------------------------------
    def train_step(self, step: int, prepared: Callable[[int], Any] | None = None) -> StepResult:
        """One optimizer step. `prepared(step)` returns the step's batch (default: prepare it now);
        `time/step_prepare_s_sum` is how long the step waited for it."""
        self._hook("coordexp_step_start", step=step, kind=self.stage.channel_for_step(step))
        t0 = time.perf_counter()
        batch, error = None, None
        try:
            batch = prepared(step) if prepared is not None else self.stage.prepare_step(step, self.dist.rank)
        except Exception as exc:  # re-raised on every rank below (rank symmetry, spec 04 §4.1)
            error = f"rank {self.dist.rank}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        if self.dist.max_flag(1.0 if error else 0.0) > 0:
            raise StepAborted(f"step {step} preparation failed: {error or 'on another rank'}")
        assert batch is not None
        n_local = len(batch.micro_batches)
        if self.dist.max_flag(n_local) != n_local or n_local == 0:
            raise StepAborted(f"step {step}: rank {self.dist.rank} has {n_local} micro-batches, others differ")
        t_prepare = time.perf_counter() - t0

        channel = batch.channel
        contexts = self.stage.contexts_for(channel)
        local = self.runner.denominators([mb.meta for mb in batch.micro_batches])
        denominators = reduce_denominators(local, self.dist.all_reduce)
        declared = list(self.runner.step_keys(channel, contexts)) + list(EXECUTOR_KEYS) + list(
            self.stage.step_metric_keys(channel)
        )
        aggregator = StepAggregator(declared)
        aggregator.add(batch.metrics)

        self.model.train()
        t1 = time.perf_counter()
        last = n_local - 1
        for i, mb in enumerate(batch.micro_batches):
            sync = contextlib.nullcontext() if i == last else self.accelerator.no_sync(self.model)
            with sync:
                with self.accelerator.autocast():
                    ctxset = self.stage.forward(self.model, mb)
                    loss, metrics = self.runner.run(ctxset, denominators)
                self.accelerator.backward(loss)
            aggregator.add(metrics)
        t_fb = time.perf_counter() - t1

        grad_norm = self._clip_gradients()
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        aggregator.add(
            [
                Metric.max("train/grad_norm_max", grad_norm),
                Metric.max("train/lr_max", lr),
                Metric.sum("time/step_prepare_s_sum", t_prepare),
                Metric.sum("time/forward_backward_s_sum", t_fb),
            ]
        )
        reduced = aggregator.reduce(self.dist.all_reduce)
        self.runner.apply_step_health(reduced)
        seconds = time.perf_counter() - t0
        reduced["time/step_s"] = seconds
        if "train/tokens_total" in reduced and seconds > 0:
            reduced["train/tokens_per_s"] = reduced["train/tokens_total"] / seconds
        self._hook("coordexp_step_end", step=step, metrics=dict(reduced))
        return StepResult(step, reduced)

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.settings.max_grad_norm
        if max_norm is None:
            grads = [p.grad.detach().norm(2) for p in params if p.grad is not None]
            return float(torch.linalg.vector_norm(torch.stack(grads), 2)) if grads else 0.0
        norm = self.accelerator.clip_grad_norm_(params, max_norm)
        value = float(norm)
        return value if math.isfinite(value) else float("nan")

    def _hook(self, name: str, **kwargs: Any) -> None:
        if self.hooks is not None:
            getattr(self.hooks.hook, name)(**kwargs)

    @staticmethod
    def _postfix(metrics: dict[str, float]) -> dict[str, str]:
        out = {}
        if "loss/total" in metrics:
            out["loss"] = f"{metrics['loss/total']:.4f}"
        if "train/tokens_per_s" in metrics:
            out["tok/s"] = f"{metrics['train/tokens_per_s']:.0f}"
        return out
