"""`coordexp demo` (`make demo`): the main job on the embedded default, end to end, on CPU.

1. synthesize the shapes data set (train + val)      5. greedy inference on val → gt_vs_pred.jsonl
2. create a tiny random-init Qwen3-VL checkpoint      6. COCO mAP + F1 → metrics.json + table
3. pretrain its vision tower on the train split       7. HTML report with overlays and curves
4. Stage-1 training with configs/demo/stage1.yaml

Step 3 stands in for the pretrained vision tower a real Qwen3-VL starts from: without it the
tiny model learns colour and position but barely shape within the budget (README, "Demo results").
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import attrs

from coordexp.train.config import load_config
from coordexp.train.data.synth import synthesize
from coordexp.train.eval.evaluate import evaluate_dir
from coordexp.train.models import create_model
from coordexp.train.recipes.infer import run_inference
from coordexp.train.recipes.pretrain_vision import VisionPretrainSettings, pretrain_vision
from coordexp.train.recipes.train import run_training
from coordexp.train.report import build_report


@attrs.frozen
class DemoSettings:
    config: str = "configs/demo/stage1.yaml"
    # 2,000 images are memorized within 1,500 steps (val error stalls while train error falls);
    # 12,000 keep val improving. 200 val images make AP50 less noisy than 64.
    n_train: int = 12000
    n_val: int = 200
    seed: int = 0
    preset: str = "tiny3"
    max_new_tokens: int = 160
    #: `coordexp model pretrain-vision` steps before Stage-1 (0 = start Stage-1 from the random tower)
    vision_steps: int = 1200
    overrides: tuple[str, ...] = ()


def run_demo(out: str | Path, settings: DemoSettings = DemoSettings(), *, progress: bool = True) -> dict[str, object]:
    out = Path(out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    data = out / "data"
    synthesize(
        data,
        n_train=settings.n_train,
        n_val=settings.n_val,
        seed=settings.seed,
        bbox_only=True,
        max_objects=3,
        workers=os.cpu_count() or 1,  # the same files for any count; ~80 % of the setup time on one
    )
    model_dir = create_model(settings.preset, "bundled", settings.seed, out / "model", overwrite=True)
    timings["setup_s"] = time.perf_counter() - t0

    vision = None
    if settings.vision_steps:
        tv = time.perf_counter()
        vision = pretrain_vision(
            model_dir,
            data / "train.jsonl",
            out / "model_vision",
            VisionPretrainSettings(steps=settings.vision_steps, seed=settings.seed),
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
            f"custom.train_jsonl={data / 'train.jsonl'}",
            f"custom.val_jsonl={data / 'val.jsonl'}",
            f"training.output_dir={run_dir}",
            f"training.logging_dir={run_dir / 'logs'}",
            f"training.seed={settings.seed}",  # one seed for data, model, pretraining and Stage-1
            *settings.overrides,
        ),
    )
    t1 = time.perf_counter()
    result = run_training(resolved, progress=progress)
    timings["train_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    eval_dir = out / "eval"
    run_inference(run_dir, data / "val.jsonl", eval_dir, max_new_tokens=settings.max_new_tokens, progress=progress)
    metrics = evaluate_dir(eval_dir, metrics=("coco", "f1")).metrics
    report = build_report(eval_dir, run=run_dir)
    timings["eval_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0

    summary = {
        "metrics": {k: metrics[k] for k in ("rollout/mAP", "rollout/AP50", "rollout/f1@0.50") if k in metrics},
        "final_loss": result.history[-1].metrics.get("loss/total") if result.history else None,
        "steps": len(result.history),
        "vision_pretrain": None if vision is None else {"steps": settings.vision_steps, "val": vision.val},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "report": str(report.index),
        "run_dir": str(run_dir),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
