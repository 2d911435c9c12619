"""Fit the demo's step counts to a wall-clock budget (`coordexp demo --budget MINUTES`).

The demo's step counts (vision pretraining, Stage-1) were tuned on a 2-core machine with AVX-512;
on a 2-core machine without it every step takes ~1.7x as long (README, "Demo results"), and the
same counts would overrun the 15 minutes. With a budget the demo first times a few steps of each
phase on this machine (:func:`probe_step_times`: throwaway runs in a scratch directory, before
any seed is drawn for the real ones), then :func:`fit_steps` cuts the counts until the projected
total fits: Stage-1 first, the vision pretraining only once Stage-1 is down to a quarter of its
steps. The vision count is final there. Stage-1's count is fixed again while it runs
(:func:`stage1_decider`, asked after every step until the schedule needs the count: when the decay
must begin for `warmup_stable_decay`, at the end of warm-up for `cosine`), from the run's own
recent step times and the time left, with a smaller margin: the probe ran minutes earlier and this
machine's speed drifts. A budget never adds steps:
the counts given are the most the demo runs. The counts that ran are logged and written to the
demo summary with the command that reruns them exactly (`--budget 0`): the losses then depend only
on the counts, the seed and the thread count, not on how fast the machine was.
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from coordexp.core.errors import ConfigError
from coordexp.train.config import load_config
from coordexp.train.executor.trainer import DecideTotal
from coordexp.train.recipes.pretrain_vision import VisionPretrainSettings, pretrain_vision
from coordexp.train.recipes.train import run_training

#: Stage-1 setup, its in-training evaluations and saves, pretraining setup and held-out check, and
#: the final inference + COCO/F1 + report, in units of one Stage-1 pack (one micro-batch of the
#: packed rows, so the unit does not change with the packs per step): measured 264 on a 2-core EPYC
#: without AVX-512 (64 s at 0.24 s per pack). They are the same kind of work as the steps, so they
#: scale with them (the final evaluation: 29 s at 0.24 s per pack there, 17 s at 0.14 s on the
#: AVX-512 machine, ~120 packs on both; since the demo infers in batches of 64, ~30 packs: the
#: estimate is kept, so the probe's projection errs long).
FIXED_COST_IN_PACKS = 280.0
#: Share of the budget kept free for the machine's speed drifting during the run. On the 2-core
#: EPYC the probed Stage-1 step came out 0.96 and 0.90 s, and the runs that followed took a median
#: 1.08 and 1.07 s per step (+13 %, +19 %): 15 min 4 s with a 5 % margin, 14 min 50 s with 10 %.
MARGIN = 0.15
#: Share of the budget kept free when Stage-1's count is fixed from the run's own step times; the
#: drift of the minutes after that point is covered by STAGE1_DRIFT.
STAGE1_MARGIN = 0.02
#: How much slower than measured the rest of Stage-1 may run. On the 2-core EPYC the demo's
#: warm-up ran at 0.481 s per step and the whole run at a median 0.516 s (+7 %, 8-step means of
#: 0.435-0.561 s); in another run (seed 1) at 0.445 s and then 0.53 s (+19 %), which with 10 %
#: here ended over the 15 minutes (910 s by the demo's clock, 15 min 20 s by `time`). Those counts
#: were fixed at the end of warm-up, with the whole run ahead; `warmup_stable_decay` (the demo's)
#: fixes it with a fifth of the steps left (~2 minutes), timed by the median of the last 100 steps,
#: so 10 % (with STAGE1_MARGIN behind it) covers a tail running up to ~25 % slower.
STAGE1_DRIFT = 0.10
#: What may run after Stage-1's count is fixed besides its steps (evaluations and saves, the final
#: export, inference, COCO/F1 and the report), in packs: 53 s at 0.28 s per pack on the 2-core EPYC
#: with the final inference in batches of 4 (33 s of it); in batches of 64 the final evaluation
#: took 6 s, and the whole after-cost ~10 s (~40 packs at 0.26 s).
AFTER_STAGE1_COST_IN_PACKS = 60.0
#: Stage-1 keeps at least this share of its steps before the vision pretraining is cut too. A
#: vision step costs a fifth of a Stage-1 step, and a tower pretrained for fewer steps is much
#: weaker: on the 2-core EPYC, 1,200 + 500 steps reached AP50 0.336 where 710 + 591 (the same
#: time, both cut by one factor) reached 0.226.
MIN_STAGE1_FRACTION = 0.25
#: Stage-1 probe steps; the first two (allocator and kernel warm-up) are not timed.
STAGE1_PROBE_STEPS = 12
#: Vision probe: two logging windows of this many steps; the second one is timed.
VISION_PROBE_WINDOW = 8


@attrs.frozen
class StepTimes:
    """Seconds per optimizer step measured on this machine (0.0 for a phase that does not run), and
    the packs (micro-batches) one Stage-1 step of the probed config runs."""

    vision_step_s: float
    stage1_step_s: float
    probe_s: float
    stage1_packs: int = attrs.field(kw_only=True)

    @stage1_packs.validator
    def _check_packs(self, attribute: attrs.Attribute, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"stage1_packs must be an int >= 1, got {value!r}")

    @property
    def pack_s(self) -> float:
        """Seconds per Stage-1 pack: the unit of the fixed costs."""
        return self.stage1_step_s / self.stage1_packs


@attrs.frozen
class BudgetPlan:
    """The step counts to run, how they were chosen, and the projection they were chosen by;
    ``vision_fraction`` and ``stage1_fraction`` are the shares of the given counts that run."""

    budget_s: float
    elapsed_s: float
    times: StepTimes
    vision_fraction: float
    stage1_fraction: float
    vision_steps: int
    stage1_steps: int
    projected_total_s: float
    #: the Stage-1 count the probe projected, once the run fixed its own (None before that)
    stage1_probed_steps: int | None = None

    def with_stage1_run(self, steps: int, *, of: int) -> BudgetPlan:
        """This plan with the Stage-1 count the run fixed (`steps` of the given `of`)."""
        probed = self.stage1_steps
        return attrs.evolve(self, stage1_steps=steps, stage1_fraction=steps / of, stage1_probed_steps=probed)

    @property
    def full(self) -> bool:
        return self.vision_fraction >= 1.0 and self.stage1_fraction >= 1.0

    def reproduce_args(self) -> list[str]:
        """`coordexp demo` arguments that rerun these counts without a budget."""
        stage1 = f"training.max_steps={self.stage1_steps}"
        return ["--budget", "0", "--vision-steps", str(self.vision_steps), stage1]

    def describe(self) -> str:
        fitted = (
            "the full counts fit"
            if self.full
            else f"cut to fit (vision x{self.vision_fraction:.2f}, Stage-1 x{self.stage1_fraction:.2f})"
        )
        if self.stage1_probed_steps is None:
            stage1 = f"{self.stage1_steps} Stage-1 steps by the probe"
            tail = f"projected total {self.projected_total_s / 60:.1f} min"
        else:
            probed = self.stage1_probed_steps
            stage1 = f"{self.stage1_steps} Stage-1 steps as fixed by the run (probe: {probed})"
            tail = f"rerun exactly: coordexp demo {' '.join(self.reproduce_args())}"
        return (
            f"budget {self.budget_s / 60:.1f} min: {fitted}: {self.vision_steps} vision-pretraining steps "
            f"({self.times.vision_step_s:.3f} s each), {stage1} "
            f"({self.times.stage1_step_s:.3f} s each by the probe); {tail}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "budget_s": self.budget_s,
            "vision_fraction": round(self.vision_fraction, 4),
            "stage1_fraction": round(self.stage1_fraction, 4),
            "vision_steps": self.vision_steps,
            "stage1_steps": self.stage1_steps,
            "vision_step_s": round(self.times.vision_step_s, 4),
            "stage1_step_s": round(self.times.stage1_step_s, 4),
            "stage1_packs": self.times.stage1_packs,
            "probe_s": round(self.times.probe_s, 1),
            "projected_total_s": round(self.projected_total_s, 1),
            "stage1_probed_steps": self.stage1_probed_steps,
            "reproduce": self.reproduce_args(),
        }


def check_budget_s(value: object) -> None:
    """Raise ConfigError (key `demo.budget`) unless `value` is a positive finite number of seconds."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (numeric and value > 0 and math.isfinite(value)):
        raise ConfigError("demo.budget", f"expected a positive number of seconds, got {value!r}")


def fit_steps(
    budget_s: float,
    elapsed_s: float,
    times: StepTimes,
    *,
    vision_steps: int,
    stage1_steps: int,
    fixed_cost_in_packs: float = FIXED_COST_IN_PACKS,
    margin: float = MARGIN,
    min_stage1_fraction: float = MIN_STAGE1_FRACTION,
) -> BudgetPlan:
    """The largest counts ``v <= V`` (vision) and ``s <= S`` (Stage-1) that satisfy

    ``elapsed_s + v·t_v + s·t_s + fixed·t_pack <= (1 - margin)·budget_s``,

    cutting Stage-1 first: the vision steps stay whole while Stage-1 keeps at least
    ``min_stage1_fraction`` of its steps; below that both keep the same share of that point
    (``v = k·V``, ``s = k·f·S``). Each phase that runs keeps at least one step (the projection then
    exceeds the budget, which :meth:`BudgetPlan.describe` shows); a phase with 0 steps stays at 0.
    """
    check_budget_s(budget_s)
    for name, steps in (("vision_steps", vision_steps), ("stage1_steps", stage1_steps)):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"demo.{name}", f"expected an int >= 0, got {steps!r}")
    fixed_s = fixed_cost_in_packs * times.pack_s
    available_s = (1.0 - margin) * budget_s - elapsed_s - fixed_s
    vision_s, stage1_s = vision_steps * times.vision_step_s, stage1_steps * times.stage1_step_s
    floor_s = vision_s + min_stage1_fraction * stage1_s  # vision whole, Stage-1 at its floor
    if vision_s + stage1_s <= available_s:
        vision_fraction = stage1_fraction = 1.0
    elif floor_s <= available_s:
        vision_fraction, stage1_fraction = 1.0, (available_s - vision_s) / stage1_s
    else:
        k = max(0.0, available_s / floor_s)
        vision_fraction, stage1_fraction = k, k * min_stage1_fraction

    def share(steps: int, fraction: float) -> int:
        return 0 if steps == 0 else max(1, math.floor(fraction * steps))

    vision, stage1 = share(vision_steps, vision_fraction), share(stage1_steps, stage1_fraction)
    projected = elapsed_s + fixed_s + vision * times.vision_step_s + stage1 * times.stage1_step_s
    return BudgetPlan(budget_s, elapsed_s, times, vision_fraction, stage1_fraction, vision, stage1, projected)


def probe_step_times(
    model_dir: Path,
    train_jsonl: Path,
    config: str | Path,
    overrides: Sequence[str],
    scratch: Path,
    *,
    seed: int,
    vision: bool,
) -> StepTimes:
    """Time a few vision-pretraining and Stage-1 steps of the demo's model on its data.

    Both are real runs of the two recipes (so what is timed is what will run), written under
    ``scratch``, which is removed afterwards; Stage-1 takes the demo's config and ``overrides``
    with evaluation, saving and most steps switched off.
    """
    t0 = time.perf_counter()
    scratch = Path(scratch)
    try:
        vision_step_s = 0.0
        if vision:
            probe = VisionPretrainSettings(
                steps=2 * VISION_PROBE_WINDOW, logging_steps=VISION_PROBE_WINDOW, val_samples=0, seed=seed
            )
            result = pretrain_vision(
                model_dir, train_jsonl, scratch / "vision", probe, overwrite=True, progress=False
            )
            vision_step_s = float(result.history[-1]["step_s"])
        resolved = load_config(
            config,
            (
                *overrides,
                f"model.model={model_dir}",
                f"training.output_dir={scratch / 'stage1'}",
                f"training.logging_dir={scratch / 'stage1' / 'logs'}",
                f"training.max_steps={STAGE1_PROBE_STEPS}",
                "training.eval_strategy=no",
                "training.save_strategy=no",
            ),
        )
        history = run_training(resolved, progress=False).history
        stage1_step_s = statistics.median(r.metrics["time/step_s"] for r in history[2:])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    packs = int(resolved.config.training.effective_batch_size)
    return StepTimes(vision_step_s, float(stage1_step_s), time.perf_counter() - t0, stage1_packs=packs)


def stage1_decider(
    deadline: float,
    *,
    packs: int,
    after_cost_in_packs: float = AFTER_STAGE1_COST_IN_PACKS,
    drift: float = STAGE1_DRIFT,
    clock: Callable[[], float] = time.perf_counter,
) -> DecideTotal:
    """Stage-1's `decide_total`: as many more steps as fit before `deadline` (a `clock()` time)
    together with what runs after them, at the step time the run measured (its recent median) made
    `drift` slower; at least one."""
    if isinstance(packs, bool) or not isinstance(packs, int) or packs < 1:
        raise ValueError(f"packs must be an int >= 1, got {packs!r}")

    def decide(done: int, step_s: float) -> int:
        left_s = deadline - clock() - after_cost_in_packs * step_s / packs
        return done + max(1, math.floor(left_s / (step_s * (1.0 + drift))))

    return decide
