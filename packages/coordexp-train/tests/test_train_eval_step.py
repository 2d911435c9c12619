"""The detection eval step inside Stage-1 training (spec 04 §4.9, 06 §6.6; invariant I1)."""

from __future__ import annotations

import json

import pytest

from coordexp.core.errors import ConfigError
from coordexp.train.config import load_config
from coordexp.train.eval import step as eval_step
from coordexp.train.eval.keys import COCO_KEYS

DETECTION = (
    "training.max_steps=2",
    "training.eval_strategy=steps",
    "training.eval_steps=1",
    "stage1.eval_detection.enabled=true",
    "stage1.eval_detection.max_new_tokens=16",
    "stage1.eval_detection.max_samples=2",
    "stage1.eval_detection.decode_batch_size=2",
)


def _eval_records(log_dir):
    lines = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "eval"]


def test_map_is_logged_as_a_float_at_every_eval_step(train_stage1, tmp_path):
    out = tmp_path / "run"
    train_stage1(out, *DETECTION)
    evals = _eval_records(out / "logs")
    assert [r["step"] for r in evals] == [1, 2]
    for record in evals:
        assert isinstance(record["rollout/mAP"], float)
        assert record["rollout/eval_failed_count"] == 0
        assert record["rollout/eval_samples_count"] == 2
        assert "val/loss/total" in record
    assert (out / "eval" / "step_2" / "gt_vs_pred.jsonl").is_file()
    assert (out / "eval" / "step_2" / "metrics.json").is_file()


def test_the_eval_step_decodes_coords_as_configured(train_stage1, tmp_path, coord_pick_calls):
    train_stage1(tmp_path / "run", *DETECTION, "stage1.eval_detection.coord_pick=expectation")
    assert coord_pick_calls  # both eval steps decoded through the expectation processor


def test_an_evaluator_failure_logs_zero_and_training_continues(train_stage1, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("forced evaluator failure")

    monkeypatch.setattr(eval_step, "evaluate_outcome", broken)
    out = tmp_path / "run"
    result = train_stage1(out, *DETECTION)
    assert len(result.history) == 2  # training went on after the failed eval at step 1
    for record in _eval_records(out / "logs"):
        assert record["rollout/eval_failed_count"] == 1.0
        assert record["rollout/mAP"] == 0.0
        for key in COCO_KEYS:
            assert record[key] == 0.0


def test_enabling_detection_eval_requires_a_val_split(stage1_assets, tmp_path):
    overrides = [*stage1_assets.overrides(tmp_path), "custom.val_jsonl=null", "stage1.eval_detection.enabled=true"]
    with pytest.raises(ConfigError, match="custom.val_jsonl"):
        load_config("configs/demo/stage1.yaml", overrides)
