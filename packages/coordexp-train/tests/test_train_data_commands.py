"""CLI-facing data commands: exit codes and printed summaries."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from coordexp.core.errors import ConfigError
from coordexp.train.data import cmd_convert, cmd_synth, cmd_validate


def test_synth_then_validate(tmp_path: Path) -> None:
    out = io.StringIO()
    assert cmd_synth(tmp_path / "ds", n_train=5, n_val=2, seed=0, out=out) == 0
    assert "train_records: 5" in out.getvalue()
    out = io.StringIO()
    assert cmd_validate(tmp_path / "ds" / "train.jsonl", max_pixels=256 * 256, out=out) == 0
    assert "valid records: 5" in out.getvalue() and "errors: 0" in out.getvalue()


def test_validate_reports_errors_and_exit_code(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = {"images": ["a.png"], "width": 8, "height": 8, "objects": []}
    bad = {**good, "objects": [{"desc": "x", "bbox_2d": [5, 5, 1, 1]}]}
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [good, bad, bad, bad]) + "\n")
    out = io.StringIO()
    assert cmd_validate(path, max_errors_shown=2, out=out) == 1
    text = out.getvalue()
    assert text.count("error: ") == 2 and "... and 1 more errors" in text
    assert f"{path}:2 objects[0] bbox_2d: [bbox_inverted]" in text
    assert "errors: 3 (bbox_inverted 3)" in text


def test_convert_commands(tmp_path: Path) -> None:
    Image.new("RGB", (640, 480)).save(tmp_path / "a.png")
    src = tmp_path / "px.jsonl"
    src.write_text(
        json.dumps(
            {
                "images": ["a.png"],
                "width": 640,
                "height": 480,
                "objects": [{"desc": "cat", "bbox_2d": [32, 48, 320, 240]}],
            }
        )
        + "\n"
    )
    out = io.StringIO()
    assert cmd_convert(src, tmp_path / "out.jsonl", out=out) == 0
    assert "records: 1" in out.getvalue()
    coco = tmp_path / "coco.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 640, "height": 480}],
                "annotations": [],
                "categories": [],
            }
        )
    )
    assert cmd_convert(coco, tmp_path / "coco.jsonl", source_format="coco", out=io.StringIO()) == 0
    with pytest.raises(ConfigError, match="source_format"):
        cmd_convert(coco, tmp_path / "x.jsonl", source_format="voc")
    with pytest.raises(ConfigError, match="COCO input only"):
        cmd_convert(src, tmp_path / "x.jsonl", include_crowd=True)
