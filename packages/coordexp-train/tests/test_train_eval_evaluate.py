"""evaluate_records: fixed key set, stats, the failure → 0.0 rule (spec 06 §6.6; invariants I1, I2)."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import pytest

from coordexp.core.errors import ConfigError, DataContractError
from coordexp.train.cli import cmd_eval
from coordexp.train.eval import evaluate as evaluate_module
from coordexp.train.eval.evaluate import evaluate_dir, evaluate_outcome, evaluate_records, metric_keys
from coordexp.train.eval.fixtures import random_records, simple_record
from coordexp.train.eval.keys import COCO_KEYS, F1_KEYS, STATS_KEYS
from coordexp.train.eval.records import GTItem, PredItem, write_records
from coordexp.train.eval.table import format_metrics_table

BOX = (10, 10, 210, 210)


def _records() -> list:
    return [
        simple_record(0, [GTItem("bbox_2d", BOX, "cat")], [PredItem("bbox_2d", BOX, "cat", 0.9, 0)]),
        simple_record(1, [GTItem("bbox_2d", BOX, "dog")], [], invalid_rollout=True, errors=["no_container"]),
        simple_record(
            2,
            [],
            [PredItem("bbox_2d", BOX, "bird", 0.3, 0), PredItem("bbox_2d", BOX, "dog", 0.2, 1)],
            truncated=True,
        ),
    ]


@pytest.mark.parametrize("metrics", [("coco",), ("f1",), ("coco", "f1")])
def test_key_set_follows_the_enabled_families(metrics: tuple[str, ...]) -> None:
    values = evaluate_records(random_records(20, seed=4), metrics=metrics)
    assert set(values) == set(metric_keys(metrics))
    assert all(type(v) is float for v in values.values())
    assert ("rollout/mAP" in values) == ("coco" in metrics)
    assert ("rollout/f1@0.50" in values) == ("f1" in metrics)


def test_stats_keys() -> None:
    values = evaluate_records(_records(), metrics=("coco", "f1"))
    assert values["rollout/eval_samples_count"] == 3.0
    assert values["rollout/eval_invalid_rollout_rate"] == pytest.approx(1 / 3)
    assert values["rollout/eval_truncated_rate"] == pytest.approx(1 / 3)
    assert values["rollout/eval_pred_per_image_mean"] == 1.0
    assert values["rollout/unmapped_pred_count"] == 1.0  # "bird" is no GT category
    assert values["rollout/score_fallback_count"] == 0.0
    assert values["rollout/eval_failed_count"] == 0.0


def test_no_predictions_gives_zero_for_coco_and_f1_conventions() -> None:
    records = [simple_record(i, [GTItem("bbox_2d", BOX, "cat")], []) for i in range(3)]
    values = evaluate_records(records, metrics=("coco", "f1"))
    assert all(values[k] == 0.0 for k in COCO_KEYS)
    assert values["rollout/precision@0.50"] == 1.0 and values["rollout/recall@0.50"] == 0.0
    assert values["rollout/f1@0.50"] == 0.0


def test_forced_exception_gives_zero_keys_and_a_failure_count(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("COCOeval exploded (forced)")

    monkeypatch.setattr(evaluate_module, "coco_metrics", explode)
    monkeypatch.setattr(evaluate_module, "_warned", set())
    records = random_records(10, seed=2)
    with caplog.at_level(logging.WARNING, logger=evaluate_module.__name__):
        first = evaluate_outcome(records, metrics=("coco", "f1"))
        second = evaluate_records(records, metrics=("coco", "f1"))
    for values in (first.metrics, second):
        assert set(values) == set(metric_keys(("coco", "f1")))
        assert all(values[k] == 0.0 for k in COCO_KEYS + F1_KEYS)
        assert values["rollout/mAP"] == 0.0 and type(values["rollout/mAP"]) is float
        assert values["rollout/eval_failed_count"] == 1.0
        assert values["rollout/eval_samples_count"] == 10.0
    assert first.error == "RuntimeError: COCOeval exploded (forced)"
    warnings = [r for r in caplog.records if "detection eval failed" in r.getMessage()]
    assert len(warnings) == 1  # once per distinct error
    assert warnings[0].exc_info is not None and "exploded" in str(warnings[0].exc_info[1])


def test_distinct_errors_each_warn_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    messages = iter(["first failure", "second failure", "first failure"])

    def explode(*args: object, **kwargs: object) -> None:
        raise ValueError(next(messages))

    monkeypatch.setattr(evaluate_module, "f1_counts", explode)
    monkeypatch.setattr(evaluate_module, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=evaluate_module.__name__):
        for _ in range(3):
            assert evaluate_records(_records(), metrics=("f1",))["rollout/eval_failed_count"] == 1.0
    assert len([r for r in caplog.records if "detection eval failed" in r.getMessage()]) == 2


def test_non_record_input_falls_under_the_failure_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, "_warned", set())
    values = evaluate_records([{"image_id": 0}], metrics=("coco",))  # type: ignore[list-item]
    assert values["rollout/mAP"] == 0.0 and values["rollout/eval_failed_count"] == 1.0
    assert set(values) == set(metric_keys(("coco",)))


def test_bad_arguments_raise_instead_of_reporting_zero() -> None:
    with pytest.raises(ConfigError, match="metrics"):
        evaluate_records([], metrics=("map",))
    with pytest.raises(ConfigError, match="metrics"):
        evaluate_records([], metrics=("coco", "coco"))
    with pytest.raises(ValueError, match="backend"):
        evaluate_records([], backend="detectron")
    with pytest.raises(ValueError, match="score_source"):
        evaluate_records([], score_source="logits")


def test_constant_score_override_ranks_in_appearance_order() -> None:
    hit, miss = BOX, (400, 10, 600, 210)
    records = [
        simple_record(
            0,
            [GTItem("bbox_2d", hit, "cat")],
            [PredItem("bbox_2d", miss, "cat", 0.2, 0), PredItem("bbox_2d", hit, "cat", 0.9, 1)],
        )
    ]
    assert evaluate_records(records)["rollout/AP50"] == pytest.approx(1.0)
    assert evaluate_records(records, score_source="constant")["rollout/AP50"] == pytest.approx(0.5)


def test_coord_logprob_request_rejects_constant_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, "_warned", set())
    records = [simple_record(0, [], [PredItem("bbox_2d", BOX, "cat", 1.0, 0)], score_source="constant")]
    outcome = evaluate_outcome(records, score_source="coord_logprob")
    assert outcome.metrics["rollout/eval_failed_count"] == 1.0
    assert "constant scores" in (outcome.error or "")


def test_evaluate_dir_writes_metrics_json_and_prints_a_table(tmp_path: Path) -> None:
    write_records(tmp_path / "gt_vs_pred.jsonl", random_records(15, seed=8, poly_fraction=0.2))
    out = io.StringIO()
    outcome = evaluate_dir(tmp_path, metrics=("coco", "f1"), backend="pycocotools", out=out)
    written = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert written == outcome.metrics
    text = out.getvalue()
    assert "rollout/mAP" in text and "[COCO]" in text and "[F1]" in text and "[stats]" in text
    assert "Average Precision" in text
    assert "rollout/eval_samples_count" in text and " 15\n" in text


def test_evaluate_dir_requires_the_artifact(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gt_vs_pred.jsonl"):
        evaluate_dir(tmp_path)
    (tmp_path / "gt_vs_pred.jsonl").write_text('{"image_id": 0}\n', encoding="utf-8")
    with pytest.raises(DataContractError, match="missing keys"):
        evaluate_dir(tmp_path)


def test_table_orders_groups_and_formats_counts() -> None:
    table = format_metrics_table({"rollout/eval_failed_count": 0.0, "rollout/mAP": 0.5, "custom/x": 2.0})
    lines = table.splitlines()
    assert lines.index("[COCO]") < lines.index("[stats]") < lines.index("[other]")
    assert any(line.split() == ["rollout/mAP", "0.5000"] for line in lines)
    assert any(line.split() == ["rollout/eval_failed_count", "0"] for line in lines)


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="coordexp")
    cmd_eval.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_eval_runs_without_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_records(tmp_path / "gt_vs_pred.jsonl", random_records(8, seed=1))
    args = _cli(["eval", str(tmp_path), "--metrics", "coco,f1", "--backend", "faster"])
    assert args.handler(args) == 0
    assert set(json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))) == set(
        metric_keys(("coco", "f1"))
    )
    assert "rollout/f1@0.50" in capsys.readouterr().out


def test_cli_eval_rejects_unknown_metric_families(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli(["eval", "somewhere", "--metrics", "coco,ap"])
    assert "--metrics" in capsys.readouterr().err


def test_stats_keys_are_always_present() -> None:
    values = evaluate_records([], metrics=("f1",))
    assert set(STATS_KEYS) <= set(values)
