"""`coordexp report`: overlays, curves, index.html (structure checked here; rendering in a browser
is test_train_report_chromium.py)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coordexp.core.errors import ConfigError
from coordexp.train.cli import cmd_report
from coordexp.train.eval.fixtures import random_records, simple_record
from coordexp.train.eval.records import GTItem, PredItem
from coordexp.train.report.build import build_report, select_sample
from coordexp.train.report.charts import Chart, Series, axis_range, nice_step, render_chart
from coordexp.train.report.curves import find_metrics_file, load_training_charts
from coordexp.train.report.fixtures import write_demo_eval_dir, write_demo_metrics
from coordexp.train.report.overlays import pred_statuses, render_overlay
from coordexp.train.report.style import GT_COLOR, STATUS_COLORS


def test_pred_statuses_distinguish_matched_wrong_class_and_fp() -> None:
    box = (10, 10, 200, 200)
    record = simple_record(
        0,
        [GTItem("bbox_2d", box, "cat")],
        [
            PredItem("bbox_2d", box, "cat", 0.9, 0),  # matched
            PredItem("bbox_2d", box, "dog", 0.8, 1),  # overlaps a cat: wrong class
            PredItem("bbox_2d", (300, 300, 400, 400), "cat", 0.7, 2),  # nowhere: fp
            PredItem("bbox_2d", (12, 12, 200, 200), "cat", 0.6, 3),  # duplicate of a matched GT: fp
        ],
    )
    assert pred_statuses(record) == ["matched", "wrong_class", "fp", "fp"]
    assert pred_statuses(simple_record(1, [], [PredItem("bbox_2d", box, "cat", 0.5, 0)])) == ["fp"]


def test_overlay_draws_gt_and_status_colours(tmp_path: Path) -> None:
    box = (100, 100, 300, 300)
    record = simple_record(
        0,
        [GTItem("bbox_2d", box, "cat")],
        [PredItem("bbox_2d", (400, 50, 600, 150), "cat", 0.5, 0)],
        width=640,
        height=480,
    )
    image_path = tmp_path / "black.png"
    Image.new("RGB", (640, 480), (0, 0, 0)).save(image_path)
    overlay = render_overlay(record, image_path, long_side=640)
    assert overlay.size[0] == 640 and overlay.size[1] > 480  # legend strip below the image
    pixels = np.asarray(overlay)[:480]

    def has(colour: tuple[int, int, int]) -> bool:
        return bool((pixels == np.array(colour, dtype=np.uint8)).all(axis=-1).any())

    assert has(GT_COLOR) and has(STATUS_COLORS["fp"])
    assert not has(STATUS_COLORS["matched"]) and not has(STATUS_COLORS["wrong_class"])


def test_overlay_of_a_missing_image_uses_a_grey_canvas() -> None:
    record = simple_record(0, [GTItem("poly", (0, 0, 60, 0, 30, 40), "roof")], [], width=64, height=48)
    overlay = render_overlay(record, None, long_side=320)
    assert overlay.size == (320, 240 + 48)


def test_sample_is_deterministic_and_ordered() -> None:
    records = random_records(30, seed=0)
    first = select_sample(records, 8, seed=3)
    assert first == select_sample(records, 8, seed=3)
    assert [r.image_id for r in first] == sorted(r.image_id for r in first)
    assert len(select_sample(records, 100, seed=0)) == 30
    with pytest.raises(ConfigError):
        select_sample(records, -1, seed=0)


def test_nice_ticks() -> None:
    assert nice_step(10.0) == 2.0
    assert nice_step(1.0) == 0.2
    assert nice_step(12.5) == 2.5
    lo, hi, ticks = axis_range(0.13, 0.97)
    assert lo <= 0.13 and hi >= 0.97 and ticks[0] == lo and ticks[-1] == hi
    lo, hi, _ = axis_range(5.0, 5.0)  # a flat series still gets a range
    assert lo < 5.0 < hi


def test_chart_skips_non_finite_points_and_refuses_empty_charts() -> None:
    series = Series.of("loss", [1, 2, 3], [1.0, float("nan"), 0.5])
    assert series.steps == (1.0, 3.0)
    image = render_chart(Chart("t", "y", (series,)))
    assert image.size == (760, 380)
    with pytest.raises(ValueError, match="no finite points"):
        render_chart(Chart("t", "y", (Series.of("x", [1], [float("inf")]),)))


def test_training_charts_read_the_executor_format(tmp_path: Path) -> None:
    path = write_demo_metrics(tmp_path / "logs")
    found, charts = load_training_charts(tmp_path)
    assert found == path
    stems = [c.stem for c in charts]
    assert stems == ["loss", "loss_atoms", "map", "lr"]  # no f1 keys logged → no f1 chart
    loss = charts[0].chart
    assert [s.name for s in loss.series] == ["train", "val"]
    assert len(loss.series[0].steps) == 60 and loss.series[1].steps == (20.0, 40.0, 60.0)
    map_chart = charts[2].chart
    assert [s.name for s in map_chart.series if s.steps] == ["mAP", "AP50"]


def test_metrics_file_lookup_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither"):
        find_metrics_file(tmp_path / "absent")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_demo_metrics(tmp_path / "a")
    write_demo_metrics(tmp_path / "b")
    with pytest.raises(ConfigError, match="exactly one"):
        find_metrics_file(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"loss/total": 1.0}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="metric records"):
        load_training_charts(bad)


def test_build_report_writes_relative_self_contained_html(tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval" / "step_100"
    write_demo_eval_dir(eval_dir)
    write_demo_metrics(tmp_path / "logs")
    files = build_report(eval_dir, samples=4, run=tmp_path / "logs")
    assert files.index == (eval_dir / "report" / "index.html").resolve()
    assert len(files.overlays) == 4 and len(files.charts) == 4
    html = files.index.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 8
    for src in sources:
        assert not src.startswith(("/", "http:", "https:", "file:", "//"))
        with Image.open(files.index.parent / src) as image:
            assert image.size[0] > 0
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert "rollout/mAP" in html and "computed now" in html  # no metrics.json yet
    for record_caption in re.findall(r"<figcaption>(image_id [^<]+)</figcaption>", html):
        assert "GT " in record_caption and "pred " in record_caption


def test_build_report_prefers_metrics_json_and_works_without_a_run(tmp_path: Path) -> None:
    write_demo_eval_dir(tmp_path, n_images=3, with_images=False)
    (tmp_path / "metrics.json").write_text(json.dumps({"rollout/mAP": 0.25}), encoding="utf-8")
    files = build_report(tmp_path, samples=2, out_dir=tmp_path / "out")
    html = files.index.read_text(encoding="utf-8")
    assert "from metrics.json" in html and "0.2500" in html
    assert "no run given" in html and files.charts == ()


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_demo_eval_dir(tmp_path, n_images=3)
    parser = argparse.ArgumentParser(prog="coordexp")
    cmd_report.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(tmp_path), "--samples", "2", "--seed", "1"])
    assert args.handler(args) == 0
    assert "2 overlays" in capsys.readouterr().out
    assert (tmp_path / "report" / "index.html").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["report", str(tmp_path), "--samples", "-3"])
