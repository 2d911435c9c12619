"""gt_vs_pred.jsonl schema, bin → pixel mapping and the inference-side builder (spec 06 §6.2, 01 §1.2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordexp.core.coordjson.parse import parse
from coordexp.core.coordjson.serialize import CoordObject
from coordexp.core.errors import DataContractError
from coordexp.train.data.records import Record
from coordexp.train.eval.fixtures import random_records, simple_record
from coordexp.train.eval.records import (
    GTItem,
    ImageRecord,
    ParseSummary,
    PredItem,
    image_record,
    pixel_points,
    read_records,
    record_from_json,
    write_records,
)
from coordexp.train.eval.scores import ImageScores, score_predictions


def _record(objects: tuple[CoordObject, ...], width: int = 640, height: int = 480) -> Record:
    return Record(
        id="sample-0",
        image=Path("/data/images/a.png"),
        image_ref="images/a.png",
        width=width,
        height=height,
        objects=objects,
        metadata={"source": "unit"},
        source_file="val.jsonl",
        source_line=1,
    )


def test_pixel_mapping_matches_the_spec_worked_example() -> None:
    box = CoordObject("cat", "bbox_2d", (50, 100, 500, 501))
    assert pixel_points(box, 640, 480) == (32, 48, 320, 240)
    check = CoordObject("cat", "bbox_2d", (10, 20, 200, 220))
    assert pixel_points(check, 1000, 800) == (10, 16, 200, 176)


def test_pixel_mapping_of_polys_uses_width_for_x_and_height_for_y() -> None:
    poly = CoordObject("roof", "poly", (0, 0, 999, 0, 999, 999))
    assert pixel_points(poly, 640, 480) == (0, 0, 639, 0, 639, 479)


def test_image_record_builds_pixels_scores_and_parse_summary() -> None:
    record = _record((CoordObject("cat", "bbox_2d", (50, 100, 500, 501)),))
    text = '{"objects": [{"desc": "cat", "bbox_2d": [<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>]}, 7]}'
    result = parse(text, mode="rollout")
    preds = result.objects()
    scores = score_predictions([-0.1, -0.2, -0.3, -0.4], [[0, 1, 2, 3]])
    line = image_record(
        3,
        record,
        preds,
        scores,
        [0],
        parse=result,
        raw_output=text,
        ends_with_eos=True,
        truncated=False,
        invalid_rollout=False,
    )
    assert line.image_id == 3
    assert line.image == "images/a.png"
    assert line.metadata == {"source": "unit"}
    assert line.gt == (GTItem("bbox_2d", (32, 48, 320, 240), "cat"),)
    assert line.pred[0].points == (32, 48, 320, 240)
    assert line.pred[0].score == pytest.approx(0.7788007830714049)  # exp(-0.25)
    assert line.pred_score_source == "coord_logprob"
    assert line.parse == ParseSummary(1, {"not_object": 1}, 0)
    assert line.errors == ()


def test_score_fallback_is_recorded_as_an_error_code() -> None:
    record = _record(())
    preds = [CoordObject("cat", "bbox_2d", (0, 0, 10, 10))]
    line = image_record(
        0,
        record,
        preds,
        score_predictions(None, [[0, 1, 2, 3]]),
        [0],
        parse=ParseSummary(1),
        raw_output="",
        ends_with_eos=True,
        truncated=False,
        invalid_rollout=False,
        errors=["custom"],
    )
    assert line.pred_score_source == "constant_fallback"
    assert line.pred[0].score == 1.0
    assert line.errors == ("custom", "score_trace_missing")


def test_malformed_generation_still_writes_a_line_with_empty_pred(tmp_path: Path) -> None:
    record = _record((CoordObject("cat", "bbox_2d", (50, 100, 500, 501)),))
    text = "I cannot see any objects"
    line = image_record(
        0,
        record,
        (),
        score_predictions(None, []),
        (),
        parse=parse(text, mode="rollout"),
        raw_output=text,
        ends_with_eos=True,
        truncated=False,
        invalid_rollout=True,
        errors=["no_container"],
    )
    path = write_records(tmp_path / "gt_vs_pred.jsonl", [line])
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["pred"] == [] and raw["errors"] == ["no_container"] and raw["invalid_rollout"] is True
    assert list(raw) == [
        "image_id", "image", "width", "height", "metadata", "coord_mode", "gt", "pred",
        "pred_score_source", "pred_score_version", "raw_output", "ends_with_eos", "truncated",
        "invalid_rollout", "parse", "errors",
    ]  # fmt: skip
    assert raw["coord_mode"] == "pixel" and raw["pred_score_version"] == 1


def test_builder_rejects_misaligned_inputs() -> None:
    record = _record(())
    with pytest.raises(ValueError, match="same length"):
        image_record(
            0,
            record,
            [CoordObject("cat", "bbox_2d", (0, 0, 1, 1))],
            ImageScores((), "constant"),
            [0],
            parse=ParseSummary(1),
            raw_output="",
            ends_with_eos=True,
            truncated=False,
            invalid_rollout=False,
        )


def test_write_read_round_trip_keeps_order_and_values(tmp_path: Path) -> None:
    records = random_records(12, seed=3, poly_fraction=0.3)
    path = write_records(tmp_path / "gt_vs_pred.jsonl", records)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 12
    assert read_records(path) == records


def test_non_ascii_desc_survives_the_round_trip(tmp_path: Path) -> None:
    record = simple_record(0, [GTItem("bbox_2d", (0, 0, 5, 5), "Ampel ü 信号")], [])
    path = write_records(tmp_path / "x.jsonl", [record])
    assert "信号" in path.read_text(encoding="utf-8")
    assert read_records(path)[0].gt[0].desc == "Ampel ü 信号"


def _line(**changes: object) -> str:
    base = simple_record(
        0, [GTItem("bbox_2d", (0, 0, 5, 5), "cat")], [PredItem("bbox_2d", (0, 0, 5, 5), "cat", 0.5, 0)]
    )
    obj = base.to_json()
    obj.update(changes)
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"coord_mode": "norm1000"}, "coord_mode"),
        ({"pred_score_source": "magic"}, "pred_score_source"),
        ({"gt": [{"type": "bbox_2d", "points": [5, 0, 0, 5], "desc": "cat"}]}, "x1 <= x2"),
        ({"gt": [{"type": "bbox_2d", "points": [0, 0, 700, 5], "desc": "cat"}]}, "leave the 640x480 image"),
        (
            {
                "pred": [
                    {"type": "bbox_2d", "points": [0, 0, 5, 5], "desc": "cat", "score": 0.0, "pred_index": 0}
                ]
            },
            r"\(0, 1\]",
        ),
        (
            {
                "pred": [
                    {"type": "poly", "points": [0, 0, 5, 5], "desc": "cat", "score": 0.5, "pred_index": 0}
                ]
            },
            "poly",
        ),
        (
            {"parse": {"valid": 1, "dropped": {"nonsense": 1}, "field_order_mismatch": 0}},
            "unknown drop buckets",
        ),
        ({"truncated": "no"}, "truncated"),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_read_rejects_malformed_lines_with_file_and_line(tmp_path: Path, changes: dict, message: str) -> None:
    path = tmp_path / "gt_vs_pred.jsonl"
    path.write_text(_line() + "\n" + _line(image_id=1, **changes) + "\n", encoding="utf-8")
    with pytest.raises(DataContractError, match=message) as info:
        read_records(path)
    assert info.value.line == 2 and info.value.file == str(path)


def test_read_rejects_invalid_json_and_out_of_order_ids(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(DataContractError, match="invalid JSON"):
        read_records(path)
    path.write_text(_line(image_id=1) + "\n" + _line(image_id=0) + "\n", encoding="utf-8")
    with pytest.raises(DataContractError, match="strictly increasing"):
        read_records(path)


def test_pred_indices_must_follow_appearance_order() -> None:
    preds = [
        PredItem("bbox_2d", (0, 0, 5, 5), "cat", 0.5, 2),
        PredItem("bbox_2d", (0, 0, 5, 5), "cat", 0.5, 1),
    ]
    with pytest.raises(DataContractError, match="strictly increasing"):
        simple_record(0, [], preds)


def test_constant_sources_require_unit_scores() -> None:
    with pytest.raises(DataContractError, match="must all be 1.0"):
        simple_record(0, [], [PredItem("bbox_2d", (0, 0, 5, 5), "cat", 0.5, 0)], score_source="constant")


def test_record_from_json_is_the_inverse_of_to_json() -> None:
    record = random_records(1, seed=11, poly_fraction=0.5)[0]
    assert record_from_json(json.loads(json.dumps(record.to_json()))) == record
    assert isinstance(record, ImageRecord)
