"""`coordexp demo` (`make demo`): the main job on the embedded default, end to end, on CPU.

1. synthesize the shapes data set (train + val)      5. greedy inference on val → gt_vs_pred.jsonl
2. create a tiny random-init Qwen3-VL checkpoint      6. COCO mAP + F1 → metrics.json + table
3. pretrain its vision tower on the train split       7. HTML report with overlays and curves
4. Stage-1 training with configs/demo/stage1.yaml

Step 3 stands in for the pretrained vision tower a real Qwen3-VL starts from: without it the
tiny model learns colour and position but barely shape within the budget (README, "Demo results").

With a time budget (the default: 15 minutes), steps 3 and 4 run at most `vision_steps` and the
config's `training.max_steps`, cut (Stage-1 first) when a probe of this machine's step times says
they would overrun it; Stage-1 fixes its own count again, from its own step times, as late as its
schedule allows: when its decay must begin (`warmup_stable_decay`, the demo's) or at the end of its
warm-up (`cosine`, `linear`) (recipes/demo_budget.py). The summary records the counts that ran.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import attrs

from coordexp.core.errors import ConfigError
from coordexp.rollout.decoding import COORD_PICKS
from coordexp.train.config import load_config
from coordexp.train.config.schema import TrainingSection
from coordexp.train.data.synth import synthesize
from coordexp.train.eval.evaluate import evaluate_dir
from coordexp.train.models import create_model
from coordexp.train.recipes.demo_budget import (
    STAGE1_MARGIN,
    BudgetPlan,
    check_budget_s,
    fit_steps,
    probe_step_times,
    stage1_decider,
)
from coordexp.train.recipes.infer import run_inference
from coordexp.train.recipes.pretrain_vision import VisionPretrainSettings, pretrain_vision
from coordexp.train.recipes.train import run_training
from coordexp.train.report import build_report

log = logging.getLogger("coordexp.train")


@attrs.frozen
class DemoSettings:
    config: str = "configs/demo/stage1.yaml"
    # 2,000 images are memorized within 1,500 steps (val error stalls while train error falls);
    # 12,000 keep val improving. 200 val images make AP50 less noisy than 64.
    n_train: int = 12000
    n_val: int = 200
    #: the synthetic images' file format: BMP decodes ~5x faster than PNG, and the vision
    #: pretraining alone decodes ~38,000 of them (data.synth.IMAGE_FORMATS)
    image_format: str = "bmp"
    seed: int = 0
    preset: str = "tiny3"
    max_new_tokens: int = 160
    #: images per generate call in the final val inference: on the 2-core EPYC 200 images took 33 s
    #: in batches of 4, 12 s of 16 and 7 s of 64, with the same metrics (left padding)
    decode_batch_size: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    #: how the final val inference picks coord tokens: `expectation` (the expected bin of the
    #: model's distribution; +0.01–0.08 AP50 on the demo's models, README "Demo results") or `token`
    coord_pick: str = attrs.field(
        default="expectation", validator=attrs.validators.in_(COORD_PICKS)
    )
    #: `coordexp model pretrain-vision` steps before Stage-1 (0 = start Stage-1 from the random tower)
    vision_steps: int = 1200
    #: wall-clock budget of the whole demo in seconds (None = run the step counts as given)
    budget_s: float | None = attrs.field(default=900.0)
    overrides: tuple[str, ...] = ()

    @budget_s.validator
    def _check_budget(self, attribute: attrs.Attribute, value: object) -> None:
        if value is not None:  # None: no budget
            check_budget_s(value)


def run_demo(
    out: str | Path,
    settings: DemoSettings = DemoSettings(),
    *,
    progress: bool = True,
    started_at: float | None = None,
) -> dict[str, object]:
    """Run the demo into `out`; `started_at` is the `time.time()` at which the user's command started
    (default: now), so that the budget also counts what ran before this call (imports)."""
    out = Path(out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if started_at is not None:
        timings["startup_s"] = max(0.0, time.time() - started_at)
    origin = t0 - timings.get("startup_s", 0.0)  # the budget and total_s count from the command's start

    data = out / "data"
    synthesize(
        data,
        n_train=settings.n_train,
        n_val=settings.n_val,
        seed=settings.seed,
        bbox_only=True,
        max_objects=3,
        image_format=settings.image_format,
        workers=os.cpu_count() or 1,  # the same files for any count; ~80 % of the setup time on one
    )
    model_dir = create_model(settings.preset, "bundled", settings.seed, out / "model", overwrite=True)
    timings["setup_s"] = time.perf_counter() - t0

    stage1_overrides = (
        f"custom.train_jsonl={data / 'train.jsonl'}",
        f"custom.val_jsonl={data / 'val.jsonl'}",
        f"training.seed={settings.seed}",  # one seed for data, model, pretraining and Stage-1
        *settings.overrides,
    )
    vision_steps, plan, decide_total = settings.vision_steps, None, None
    if settings.budget_s is not None:
        elapsed_s = time.perf_counter() - origin
        scratch = out / "probe"
        plan, training = _plan(settings, model_dir, data, stage1_overrides, scratch, elapsed_s=elapsed_s)
        vision_steps = plan.vision_steps
        timings["probe_s"] = plan.times.probe_s
        if 2 <= training.warmup_steps < training.max_steps:
            deadline = origin + (1.0 - STAGE1_MARGIN) * settings.budget_s
            decide_total = stage1_decider(deadline, packs=plan.times.stage1_packs)
            log.info(
                "Stage-1 fixes its count from its own step times, from the end of its warm-up (%d steps) on",
                training.warmup_steps,
            )
        else:  # no warm-up steps to time: the probe's count is final
            stage1_overrides = (*stage1_overrides, f"training.max_steps={plan.stage1_steps}")

    vision = None
    if vision_steps:
        tv = time.perf_counter()
        vision = pretrain_vision(
            model_dir,
            data / "train.jsonl",
            out / "model_vision",
            VisionPretrainSettings(steps=vision_steps, seed=settings.seed),
            val_jsonl=data / "val.jsonl",
            overwrite=True,
            progress=progress,
        )
        model_dir = vision.out_dir
        timings["vision_s"] = time.perf_counter() - tv

    run_dir = out / "stage1"
    resolved = load_config(
        settings.config,
        (
            f"model.model={model_dir}",
            f"training.output_dir={run_dir}",
            f"training.logging_dir={run_dir / 'logs'}",
            *stage1_overrides,
        ),
    )
    t1 = time.perf_counter()
    result = run_training(resolved, progress=progress, decide_total=decide_total)
    timings["train_s"] = time.perf_counter() - t1
    if decide_total is not None:
        plan = plan.with_stage1_run(len(result.history), of=int(resolved.config.training.max_steps))
        log.info("%s", plan.describe())

    t2 = time.perf_counter()
    eval_dir = out / "eval"
    run_inference(
        run_dir,
        data / "val.jsonl",
        eval_dir,
        max_new_tokens=settings.max_new_tokens,
        decode_batch_size=settings.decode_batch_size,
        coord_pick=settings.coord_pick,
        progress=progress,
    )
    metrics = evaluate_dir(eval_dir, metrics=("coco", "f1")).metrics
    report = build_report(eval_dir, run=run_dir)
    timings["eval_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - origin

    summary = {
        "metrics": {k: metrics[k] for k in ("rollout/mAP", "rollout/AP50", "rollout/f1@0.50") if k in metrics},
        "final_loss": result.history[-1].metrics.get("loss/total") if result.history else None,
        "steps": len(result.history),
        "coord_pick": settings.coord_pick,
        "vision_pretrain": None if vision is None else {"steps": vision_steps, "val": vision.val},
        "budget": None if plan is None else plan.as_dict(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "report": str(report.index),
        "run_dir": str(run_dir),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _plan(
    settings: DemoSettings,
    model_dir: Path,
    data: Path,
    stage1_overrides: tuple[str, ...],
    scratch: Path,
    *,
    elapsed_s: float,
) -> tuple[BudgetPlan, TrainingSection]:
    """Probe this machine's step times and fit the step counts to `settings.budget_s`; also returns
    the config's `training` section."""
    training = load_config(settings.config, (f"model.model={model_dir}", *stage1_overrides)).config.training
    if not training.max_steps:
        raise ConfigError(
            "training.max_steps",
            "the demo's time budget scales training.max_steps, which is unset; set it or run with --budget 0",
        )
    times = probe_step_times(
        model_dir,
        data / "train.jsonl",
        settings.config,
        stage1_overrides,
        scratch,
        seed=settings.seed,
        vision=settings.vision_steps > 0,
    )
    plan = fit_steps(
        settings.budget_s,
        elapsed_s + times.probe_s,
        times,
        vision_steps=settings.vision_steps,
        stage1_steps=int(training.max_steps),
    )
    log.info("%s", plan.describe())
    if plan.projected_total_s > settings.budget_s:
        log.warning(
            "this machine cannot run the demo within %.1f min even at one step per phase",
            settings.budget_s / 60,
        )
    return plan, training
