"""COCO mAP with hand-built sets of known AP (spec 06 §6.4; invariant I2)."""

from __future__ import annotations

import pytest

from coordexp.train.eval.categories import build_categories, normalize_desc
from coordexp.train.eval.coco import coco_inputs, coco_metrics, gt_area, shoelace_area, xywh
from coordexp.train.eval.evaluate import evaluate_records
from coordexp.train.eval.fixtures import simple_record
from coordexp.train.eval.keys import COCO_KEYS
from coordexp.train.eval.records import GTItem, ImageRecord, PredItem

BACKENDS = ("faster", "pycocotools")
LARGE_A = (10, 10, 210, 210)  # 200x200 px: "large" (> 96²)
LARGE_B = (300, 200, 500, 400)


def _gt(points: tuple[int, ...], desc: str = "cat", kind: str = "bbox_2d") -> GTItem:
    return GTItem(kind, points, desc)


def _pred(points: tuple[int, ...], desc: str, score: float, index: int) -> PredItem:
    return PredItem("bbox_2d", points, desc, score, index)


def _coco(records: list[ImageRecord], backend: str) -> dict[str, float]:
    categories = build_categories(g.desc for r in records for g in r.gt)
    return coco_metrics(records, categories, backend).metric_values()


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_predictions_give_map_one(backend: str) -> None:
    records = [
        simple_record(
            0,
            [_gt(LARGE_A, "cat"), _gt(LARGE_B, "dog")],
            [_pred(LARGE_A, "cat", 0.9, 0), _pred(LARGE_B, "dog", 0.8, 1)],
        ),
        simple_record(
            1,
            [_gt(LARGE_B, "cat"), _gt(LARGE_A, "cat")],
            [_pred(LARGE_A, "Cat ", 0.7, 0), _pred(LARGE_B, "CAT", 0.6, 3)],
        ),
    ]
    values = _coco(records, backend)
    for key in ("rollout/mAP", "rollout/AP50", "rollout/AP75", "rollout/AP_large", "rollout/AR100"):
        assert values[key] == pytest.approx(1.0, abs=1e-12)
    # no small or medium GT: those stats are −1 and their keys drop out
    assert "rollout/AP_small" not in values and "rollout/AP_medium" not in values


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_of_two_objects_found_gives_51_of_101(backend: str) -> None:
    # recall reaches 0.5 with precision 1; the 101-point interpolation keeps 51 points at 1.0
    records = [simple_record(0, [_gt(LARGE_A), _gt(LARGE_B)], [_pred(LARGE_A, "cat", 0.95, 0)])]
    values = _coco(records, backend)
    for key in ("rollout/mAP", "rollout/AP50", "rollout/AP75", "rollout/AP_large"):
        assert values[key] == pytest.approx(51 / 101, rel=1e-12)
    for key in ("rollout/AR1", "rollout/AR10", "rollout/AR100"):
        assert values[key] == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_class_gives_zero(backend: str) -> None:
    records = [
        simple_record(0, [_gt(LARGE_A, "cat")], [_pred(LARGE_A, "dog", 0.9, 0)]),
        simple_record(1, [_gt(LARGE_B, "dog")], []),
    ]
    values = _coco(records, backend)
    assert values["rollout/mAP"] == 0.0
    assert values["rollout/AR100"] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_scores_keep_appearance_order(backend: str) -> None:
    hit, miss = LARGE_A, (400, 10, 600, 210)
    first_hit = [
        simple_record(
            0, [_gt(hit)], [_pred(hit, "cat", 1.0, 0), _pred(miss, "cat", 1.0, 1)], score_source="constant"
        )
    ]
    first_miss = [
        simple_record(
            0, [_gt(hit)], [_pred(miss, "cat", 1.0, 0), _pred(hit, "cat", 1.0, 1)], score_source="constant"
        )
    ]
    assert _coco(first_hit, backend)["rollout/AP50"] == pytest.approx(1.0, abs=1e-12)
    assert _coco(first_miss, backend)["rollout/AP50"] == pytest.approx(0.5, abs=1e-12)


def test_no_predictions_skips_cocoeval_and_reports_zero() -> None:
    records = [simple_record(0, [_gt(LARGE_A)], []), simple_record(1, [_gt(LARGE_B, "dog")], [])]
    categories = build_categories(g.desc for r in records for g in r.gt)
    result = coco_metrics(records, categories)
    assert not result.evaluated and result.summary_text == ""
    metrics = evaluate_records(records, metrics=("coco",))
    assert {k: metrics[k] for k in COCO_KEYS} == {k: 0.0 for k in COCO_KEYS}
    assert metrics["rollout/eval_failed_count"] == 0.0


def test_only_unmapped_predictions_are_dropped_counted_and_score_zero() -> None:
    records = [
        simple_record(
            0, [_gt(LARGE_A, "cat")], [_pred(LARGE_A, "tiger", 0.9, 0), _pred(LARGE_B, "lion", 0.5, 1)]
        )
    ]
    metrics = evaluate_records(records, metrics=("coco",))
    assert metrics["rollout/unmapped_pred_count"] == 2.0
    assert metrics["rollout/mAP"] == 0.0 and metrics["rollout/AP50"] == 0.0


def test_empty_evaluation_set_reports_zero() -> None:
    metrics = evaluate_records([], metrics=("coco",))
    assert metrics["rollout/mAP"] == 0.0 and metrics["rollout/eval_samples_count"] == 0.0


def test_gt_dict_follows_the_spec_conversion() -> None:
    poly = GTItem("poly", (0, 0, 40, 0, 40, 30), "Roof")  # right triangle: area 600, AABB 40x30
    degenerate = GTItem("bbox_2d", (5, 5, 5, 50), "pole")
    record = simple_record(4, [poly, degenerate], [_pred((0, 0, 40, 30), "roof", 0.5, 0)])
    inputs = coco_inputs([record], build_categories(["Roof", "pole"]))
    anns = inputs.gt["annotations"]
    assert anns[0]["bbox"] == [0.0, 0.0, 40.0, 30.0] and anns[0]["area"] == 600.0
    assert anns[1]["bbox"] == [5.0, 5.0, 0.0, 45.0] and anns[1]["area"] == 0.0  # degenerate kept
    assert all(a["iscrowd"] == 0 and a["image_id"] == 5 for a in anns)
    assert inputs.gt["categories"] == [{"id": 1, "name": "pole"}, {"id": 2, "name": "roof"}]
    assert inputs.detections == [
        {"image_id": 5, "category_id": 2, "bbox": [0.0, 0.0, 40.0, 30.0], "score": 0.5}
    ]


def test_shoelace_area_and_aabb() -> None:
    square = (0, 0, 10, 0, 10, 10, 0, 10)
    assert shoelace_area(square) == 100.0
    assert shoelace_area(square[::-1]) == 100.0  # orientation-free
    item = GTItem("poly", (3, 7, 9, 1, 12, 20), "x")
    assert xywh(item) == [3.0, 1.0, 9.0, 19.0]
    assert gt_area(GTItem("bbox_2d", (1, 2, 4, 6), "x")) == 12.0


def test_desc_normalization_and_category_ids() -> None:
    assert normalize_desc("  Traffic\t\nLIGHT ") == "traffic light"
    assert normalize_desc("ｃａｔ") == "cat"  # NFKC folds full-width letters
    categories = build_categories(["dog", "Cat", "cat ", "traffic  light"])
    assert categories.names == ("cat", "dog", "traffic light")
    assert categories.id_of("CAT") == 1 and categories.id_of("Traffic Light") == 3
    assert categories.id_of("cats") is None


def test_summary_text_is_captured_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    records = [simple_record(0, [_gt(LARGE_A)], [_pred(LARGE_A, "cat", 0.9, 0)])]
    for backend in BACKENDS:
        result = coco_metrics(records, build_categories(["cat"]), backend)
        assert result.evaluated
        assert result.summary_text.count("Average Precision") == 6
        assert result.summary_text.count("Average Recall") >= 6  # faster-coco-eval adds AR@0.50/0.75
    captured = capsys.readouterr()
    assert captured.out == ""
