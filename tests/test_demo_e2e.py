"""`coordexp demo` end to end on a few images and steps: the main job's whole chain runs from the CLI.

synthesize → create the tiny model → pretrain its vision tower → Stage-1 (demo config, with an in-training val eval) → infer on
val → COCO + F1 → report; the summary JSON names the metrics, timings and the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_whole_chain(tmp_path):
    out = tmp_path / "demo"
    command = [
        sys.executable, "-m", "coordexp.train.cli.main", "demo", "--out", str(out), "--train", "40", "--val", "4",
        "--no-progress", "--seed", "3", "--vision-steps", "2",
        "training.max_steps=4", "training.eval_steps=2", "training.save_steps=4",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["steps"] == 4
    assert set(summary["metrics"]) == {"rollout/mAP", "rollout/AP50", "rollout/f1@0.50"}
    assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values())
    assert set(summary["timings_s"]) == {"setup_s", "vision_s", "train_s", "eval_s", "total_s"}
    assert summary["vision_pretrain"]["steps"] == 2
    vision = json.loads((out / "model_vision" / "vision_pretrain.json").read_text())
    assert vision["final"]["step"] == 2 and vision["settings"]["seed"] == 3
    assert vision["settings"]["subcells"] == 8
    model_config = json.loads((out / "model" / "config.json").read_text())
    assert model_config["text_config"]["num_hidden_layers"] == 3  # the demo's `tiny3` preset
    config = json.loads(json.loads((out / "stage1" / "run_manifest.json").read_text())["config"])
    assert config["model"]["model"] == str(out / "model_vision")  # Stage-1 starts from the pretrained tower
    assert config["training"]["seed"] == 3  # --seed reaches every step
    assert Path(summary["report"]).is_file() and f"report: {summary['report']}" in done.stdout
    assert len((out / "data" / "train.jsonl").read_text().splitlines()) == 40
    assert len((out / "eval" / "gt_vs_pred.jsonl").read_text().splitlines()) == 4
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "rollout/AP50" in json.dumps(metrics)
    log = [json.loads(line) for line in (out / "stage1" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any(entry.get("kind") == "eval" for entry in log)
    assert (out / "stage1" / "run_manifest.json").is_file()
