"""Resume exactness and resume compatibility (spec 04 §4.1, 05 §5.12, 06 §6.7).

The session baseline trains 4 steps with checkpoints at steps 2 and 4 (4 packs, 2 per step: the
resume point is an epoch boundary). Resuming from step 2 must replay steps 2..3 exactly and end
on the same parameters; a changed pipeline or strategy must refuse to resume unless forced.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coordexp.core.errors import ConfigError
from coordexp.train.cli.main import main
from coordexp.train.run import checkpoint as ckpt
from coordexp.train.run.logsink import read_metrics

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "demo" / "stage1.yaml"
CHANGED_PIPELINE = "stage1.pipeline.objective[1].config.soft_ce_weight=2.0"
CHANGED_STRATEGY = "template.max_length=1536"


def _loss_keys(metrics: dict[str, float]) -> list[str]:
    return sorted(k for k in metrics if k.startswith("loss/"))


def _assert_same_step_metrics(a: dict[str, float], b: dict[str, float], *, rel: float) -> None:
    assert _loss_keys(a) == _loss_keys(b) and _loss_keys(a), (a, b)
    for key in _loss_keys(a) + ["train/grad_norm_max", "train/lr_max", "train/tokens_total"]:
        assert math.isclose(a[key], b[key], rel_tol=rel, abs_tol=1e-12), (key, a[key], b[key])


def _final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out_dir / "final" / "model.safetensors"))


def test_resume_from_checkpoint_replays_the_uninterrupted_run(stage1_baseline, train_stage1, tmp_path):
    base = stage1_baseline
    assert [r.step for r in base.result.history] == [0, 1, 2, 3]
    assert [p.name for p in ckpt.list_checkpoints(base.out_dir)] == ["step_2", "step_4"]

    # A fresh output directory (no run manifest there): only the checkpoint's meta is checked.
    step2 = base.out_dir / "checkpoints" / "step_2"
    resumed = train_stage1(tmp_path / "resumed", *base.overrides, f"training.resume_from={step2}")

    assert [r.step for r in resumed.history] == [2, 3]
    for mine, theirs in zip(resumed.history, base.result.history[2:], strict=True):
        _assert_same_step_metrics(mine.metrics, theirs.metrics, rel=1e-6)
    want, got = _final_weights(base.out_dir), _final_weights(tmp_path / "resumed")
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7, msg=name)
    # The step-4 checkpoints agree on the data position and the run identity (the config differs:
    # output_dir and resume_from are part of it).
    meta_a = json.loads((base.out_dir / "checkpoints" / "step_4" / "meta.json").read_text())
    meta_b = json.loads((tmp_path / "resumed" / "checkpoints" / "step_4" / "meta.json").read_text())
    for key in ("step", "data_position", "pipeline_checksum", "strategy_sha256"):
        assert meta_a[key] == meta_b[key], key
    # The resumed run logs from its first step on; nothing before the resume point.
    records = read_metrics(tmp_path / "resumed" / "logs" / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [3, 4]


def test_resume_latest_refuses_a_changed_pipeline_or_strategy(stage1_baseline, train_stage1, tmp_path):
    base = stage1_baseline
    out = tmp_path / "run"
    shutil.copytree(base.out_dir, out)
    saved = json.loads((out / "run_manifest.json").read_text())

    with pytest.raises(ConfigError) as err:
        train_stage1(out, *base.overrides, "training.resume_from=latest", CHANGED_PIPELINE, CHANGED_STRATEGY)
    message = str(err.value)
    assert err.value.path == "training.resume_from"
    assert re.search(
        rf"cannot resume: pipeline_checksum: checkpoint has {saved['pipeline_checksum']}, "
        rf"config gives [0-9a-f]{{64}}; "
        rf"strategy_sha256: checkpoint has {saved['strategy_sha256']}, config gives [0-9a-f]{{64}} "
        r"\(pass --force-resume to resume anyway\)",
        message,
    ), message
    # Refused before anything was written: the manifest and checkpoints are untouched.
    assert json.loads((out / "run_manifest.json").read_text()) == saved
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_2", "step_4"]


def test_cli_refuses_then_force_resume_continues_with_the_new_pipeline(
    stage1_assets, stage1_baseline, tmp_path, capsys, caplog
):
    base = stage1_baseline
    out = tmp_path / "run"
    shutil.copytree(base.out_dir, out)
    old = json.loads((out / "run_manifest.json").read_text())["pipeline_checksum"]
    argv = [
        "train", str(DEMO_CONFIG),
        *stage1_assets.overrides(
            out, *base.overrides, "training.max_steps=5", "training.resume_from=latest", CHANGED_PIPELINE,
            CHANGED_STRATEGY,
        ),
        "--no-progress",
    ]

    assert main(argv) == 2
    err = capsys.readouterr().err
    refusal = (
        r"coordexp: error: training\.resume_from: cannot resume: pipeline_checksum: checkpoint has "
        rf"{old}, config gives [0-9a-f]{{64}}; strategy_sha256: checkpoint has [0-9a-f]{{64}}, config gives "
        r"[0-9a-f]{64} \(pass --force-resume to resume anyway\)"
    )
    assert re.search(refusal, err), err

    with caplog.at_level(logging.WARNING, logger="coordexp.train"):
        assert main([*argv, "--force-resume"]) == 0
    # max_length changed the packing plan: the resume says that the epoch order is not continued.
    assert any("with another packing plan" in r.getMessage() for r in caplog.records)
    assert "finished step 5" in capsys.readouterr().out
    new = json.loads((out / "run_manifest.json").read_text())["pipeline_checksum"]
    assert new != old
    assert json.loads((out / "checkpoints" / "step_5" / "meta.json").read_text())["pipeline_checksum"] == new
    steps = [r["step"] for r in read_metrics(out / "logs" / "metrics.jsonl") if r["kind"] == "train"]
    assert steps[-1] == 5 and steps.count(5) == 1  # one step after the step-4 checkpoint


def test_resume_latest_without_a_checkpoint_is_a_config_error(train_stage1, tmp_path):
    with pytest.raises(ConfigError, match=r"no checkpoint under .*checkpoints"):
        train_stage1(tmp_path / "empty", "training.resume_from=latest")


def test_checkpoint_rng_states_cover_every_rank(stage1_baseline):
    _, state, meta = ckpt.load_checkpoint(stage1_baseline.out_dir / "checkpoints" / "step_2")
    assert len(state["rng"]) == 1  # one process
    assert set(state) == {"optimizer", "scheduler", "rng"}
    assert state["scheduler"]["last_epoch"] == 2
    assert meta["step"] == 2 and meta["data_position"]["epoch"] == 1
    assert meta["pipeline_checksum"] == stage1_baseline.result.manifest["pipeline_checksum"]
