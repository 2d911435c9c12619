"""`coordexp demo` end to end on a few images and steps: the main job's whole chain runs from the CLI.

synthesize → create the tiny model → probe this machine's step times against the 15-minute
budget → pretrain its vision tower → Stage-1 (demo config, with an in-training val eval) → infer
on val → COCO + F1 → report; the summary JSON names the metrics, timings, the budget plan and the report.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from coordexp.train.recipes import demo as demo_recipe
from coordexp.train.recipes.demo import DemoSettings, run_demo
from coordexp.train.recipes.infer import run_inference
from coordexp.train.recipes.demo_budget import (
    AFTER_STAGE1_COST_IN_PACKS,
    FIXED_COST_IN_PACKS,
    MARGIN,
    MIN_STAGE1_FRACTION,
    STAGE1_DRIFT,
    StepTimes,
    stage1_decider,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_whole_chain(tmp_path):
    out = tmp_path / "demo"
    command = [
        sys.executable, "-m", "coordexp.train.cli.main", "demo", "--out", str(out), "--train", "40", "--val", "4",
        "--no-progress", "--seed", "3", "--vision-steps", "2", "--budget", "600",
        "training.max_steps=4", "training.eval_steps=2", "training.save_steps=4",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["steps"] == 4 and summary["coord_pick"] == "expectation"
    assert set(summary["metrics"]) == {"rollout/mAP", "rollout/AP50", "rollout/f1@0.50"}
    assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values())
    phases = {"startup_s", "setup_s", "probe_s", "vision_s", "train_s", "eval_s", "total_s"}
    assert set(summary["timings_s"]) == phases
    # A real probe against a 10-hour budget: these few steps fit however loaded the machine is
    budget = summary["budget"]
    assert budget["budget_s"] == 36000.0 and budget["vision_fraction"] == budget["stage1_fraction"] == 1.0
    assert (budget["vision_steps"], budget["stage1_steps"]) == (2, 4)
    assert budget["vision_step_s"] > 0 and budget["stage1_step_s"] > 0
    assert budget["reproduce"] == ["--budget", "0", "--vision-steps", "2", "training.max_steps=4"]
    assert "the full counts fit" in done.stderr
    assert not (out / "probe").exists()  # the probe's throwaway runs are removed
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
    assert sorted(p.suffix for p in (out / "data" / "images").rglob("*.*")) == [".bmp"] * 44  # fast to decode
    assert len((out / "eval" / "gt_vs_pred.jsonl").read_text().splitlines()) == 4
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "rollout/AP50" in json.dumps(metrics)
    log = [json.loads(line) for line in (out / "stage1" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any(entry.get("kind") == "eval" for entry in log)
    assert (out / "stage1" / "run_manifest.json").is_file()


# A slow machine as the probe reports it: 0.5 s per pack, so the fixed costs take 140 s.
SLOW = StepTimes(1.0, 2.0, 0.0, stage1_packs=4)


def _demo_probed_as(times, tmp_path, monkeypatch, *, vision_steps, overrides, left_at_warmup_end_s=None):
    """A 300-s-budget demo whose probe reports `times` (the probe itself is real in the test above).

    `left_at_warmup_end_s`: the time Stage-1's decider sees left before its deadline (default: the
    real clock's); the decisions it made land in the returned summary as `decisions`."""
    monkeypatch.setattr(demo_recipe, "probe_step_times", lambda *a, **k: times)
    decisions = []

    def recording_decider(deadline, **kwargs):
        if left_at_warmup_end_s is not None:
            kwargs["clock"] = lambda: deadline - left_at_warmup_end_s
        decide = stage1_decider(deadline, **kwargs)

        def recorded(done, step_s):
            decisions.append((done, step_s, decide(done, step_s)))
            return decisions[-1][2]

        return recorded

    monkeypatch.setattr(demo_recipe, "stage1_decider", recording_decider)
    settings = DemoSettings(
        n_train=40, n_val=4, seed=3, vision_steps=vision_steps, budget_s=300.0, overrides=overrides
    )
    return {**run_demo(tmp_path / "demo", settings, progress=False), "decisions": decisions}


def test_a_slow_probe_cuts_stage1_first_and_the_run_fixes_its_count_from_its_own_steps(tmp_path, monkeypatch):
    overrides = ("training.max_steps=60", "training.eval_steps=100", "training.save_steps=100")
    summary = _demo_probed_as(
        SLOW, tmp_path, monkeypatch, vision_steps=40, overrides=overrides, left_at_warmup_end_s=1000.0
    )
    budget = summary["budget"]
    # (1 − margin)·300 − elapsed − 280·0.5 ≈ 115 s: the 40 vision steps (40 s) stay whole and
    # Stage-1 takes the cut
    assert budget["vision_steps"] == 40 and budget["vision_fraction"] == 1.0
    probed = budget["stage1_probed_steps"] / 60
    assert MIN_STAGE1_FRACTION < probed < ((1 - MARGIN) * 300 - FIXED_COST_IN_PACKS * 0.5 - 40) / (60 * 2)
    assert summary["vision_pretrain"]["steps"] == budget["vision_steps"]
    assert budget["projected_total_s"] <= (1 - MARGIN) * 300
    # From the end of warm-up on the run times its own steps (far below the probe's 2 s) and, with
    # 1000 s left, finds time for all 60 (the budget never adds steps beyond the configured count);
    # the demo's warmup_stable_decay needs the count when its decay begins, at step 60 − 12 = 48.
    decisions = summary["decisions"]
    assert [done for done, _, _ in decisions] == list(range(20, 49))
    for done, step_s, decided in decisions:
        after_s = AFTER_STAGE1_COST_IN_PACKS * step_s / SLOW.stage1_packs
        assert decided == done + math.floor((1000.0 - after_s) / (step_s * (1 + STAGE1_DRIFT))) > 60
    assert summary["steps"] == budget["stage1_steps"] == 60 and budget["stage1_fraction"] == 1.0
    assert budget["reproduce"][-1] == "training.max_steps=60"
    manifest = json.loads((tmp_path / "demo" / "stage1" / "run_manifest.json").read_text())
    assert manifest["horizon"] == {"total_steps": 60, "fixed_at": 48}


def test_a_run_past_its_deadline_at_the_end_of_warmup_stops_one_step_later(tmp_path, monkeypatch):
    fast = StepTimes(0.01, 0.02, 0.0, stage1_packs=2)
    monkeypatch.setattr(demo_recipe, "STAGE1_MARGIN", 0.9999)  # Stage-1's deadline: 0.03 s after the start
    overrides = ("training.max_steps=60",)
    summary = _demo_probed_as(fast, tmp_path, monkeypatch, vision_steps=2, overrides=overrides)
    budget = summary["budget"]
    assert budget["stage1_probed_steps"] == 60  # the probe saw time for every step
    assert summary["steps"] == budget["stage1_steps"] == 21  # warm-up (20) + the one step always granted
    assert budget["reproduce"] == ["--budget", "0", "--vision-steps", "2", "training.max_steps=21"]


def test_without_warmup_steps_to_time_the_probes_count_is_final(tmp_path, monkeypatch):
    overrides = ("training.max_steps=60", "training.warmup_steps=1", "training.eval_steps=100")
    summary = _demo_probed_as(SLOW, tmp_path, monkeypatch, vision_steps=4, overrides=overrides)
    budget = summary["budget"]
    assert budget["stage1_probed_steps"] is None  # nothing fixed in the run
    assert 1 < summary["steps"] == budget["stage1_steps"] < 60
    assert "horizon" not in json.loads((tmp_path / "demo" / "stage1" / "run_manifest.json").read_text())


def test_no_budget_runs_the_counts_as_given(tmp_path, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("no budget, no probe")

    inferred = []

    def recorded_inference(*args, **kwargs):
        inferred.append(kwargs)
        return run_inference(*args, **kwargs)

    monkeypatch.setattr(demo_recipe, "probe_step_times", no_probe)
    monkeypatch.setattr(demo_recipe, "run_inference", recorded_inference)
    settings = DemoSettings(
        n_train=40, n_val=4, seed=3, vision_steps=1, budget_s=None, overrides=("training.max_steps=2",),
        decode_batch_size=3, coord_pick="token",
    )
    summary = run_demo(tmp_path / "demo", settings, progress=False)
    assert summary["budget"] is None and summary["steps"] == 2 and "probe_s" not in summary["timings_s"]
    assert [(k["decode_batch_size"], k["coord_pick"]) for k in inferred] == [(3, "token")]


@pytest.mark.parametrize("minutes", ["-1", "nan"])
def test_a_budget_that_is_not_a_positive_time_fails_before_any_work(tmp_path, minutes):
    out = tmp_path / "d"
    command = [
        sys.executable, "-m", "coordexp.train.cli.main", "demo", "--out", str(out), "--budget", minutes
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "demo.budget" in done.stderr
    assert not out.exists()


def test_a_budget_that_cuts_nothing_runs_the_same_demo_as_no_budget(tmp_path):
    def demo(name, budget_s):
        settings = DemoSettings(
            n_train=40, n_val=4, seed=5, vision_steps=3, budget_s=budget_s, overrides=("training.max_steps=3",)
        )
        return run_demo(tmp_path / name, settings, progress=False)

    budgeted, plain = demo("budgeted", 36000.0), demo("plain", None)  # 10 h: fits on any load
    assert budgeted["budget"]["stage1_fraction"] == 1.0 and plain["budget"] is None
    assert budgeted["final_loss"] == plain["final_loss"]  # the probe draws no seed the runs use
    assert budgeted["metrics"] == plain["metrics"]
    assert budgeted["vision_pretrain"] == plain["vision_pretrain"]
