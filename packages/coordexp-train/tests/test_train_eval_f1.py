"""F1@IoU (spec 06 §6.5; invariant I4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.rollout.maskiou import mask_iou
from coordexp.train.eval.f1 import IOU_THRESHOLDS, F1Counts, f1_counts, greedy_match, match_image, prf
from coordexp.train.eval.fixtures import simple_record
from coordexp.train.eval.iou import box_iou_matrix, iou_matrix
from coordexp.train.eval.records import GTItem, ImageRecord, PredItem

W, H = 640, 480


def _gt(points: tuple[int, ...], desc: str = "cat", kind: str = "bbox_2d") -> GTItem:
    return GTItem(kind, points, desc)


def _pred(points: tuple[int, ...], desc: str = "cat", index: int = 0, kind: str = "bbox_2d") -> PredItem:
    return PredItem(kind, points, desc, 0.5, index)


def test_thresholds_are_050_to_095_in_005_steps() -> None:
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_box_iou_is_exact_in_pixels() -> None:
    ious = box_iou_matrix(
        np.array([[0, 0, 10, 10], [0, 0, 0, 10]], float), np.array([[5, 0, 15, 10], [0, 0, 0, 10]], float)
    )
    assert ious[0, 0] == pytest.approx(50 / 150)
    assert ious[1, 1] == 0.0  # two identical degenerate boxes: union 0 → IoU 0


def test_poly_pairs_use_maskiou_in_the_bin_frame() -> None:
    square_poly = _gt((0, 0, 639, 0, 639, 479, 0, 479), kind="poly")
    half_box = _pred((0, 0, 319, 479))
    ious = iou_matrix([half_box], [square_poly], W, H)
    expected = mask_iou(("bbox_2d", (0, 0, 319 * 999 / 639, 999)), ("poly", (0, 0, 999, 0, 999, 999, 0, 999)))
    assert ious[0, 0] == pytest.approx(expected)
    assert 0.45 < ious[0, 0] < 0.55


def test_greedy_prefers_higher_iou_then_pred_index_then_gt_index() -> None:
    ious = np.array([[0.9, 0.6], [0.9, 0.8]])
    allowed = np.ones_like(ious, dtype=bool)
    match = greedy_match(ious, allowed, np.array([0, 1]))
    # (0.9, pred 0, gt 0) wins the tie with (0.9, pred 1, gt 0); pred 1 then takes gt 1
    assert match.gt_of_pred.tolist() == [0, 1]
    swapped = greedy_match(ious, allowed, np.array([5, 2]))  # appearance order reversed
    assert swapped.gt_of_pred.tolist() == [1, 0]
    tie_gt = greedy_match(np.array([[0.7, 0.7]]), np.ones((1, 2), dtype=bool), np.array([0]))
    assert tie_gt.gt_of_pred.tolist() == [0]


def test_greedy_is_not_optimal_assignment_on_purpose() -> None:
    # optimal would be 2 matches; greedy takes the 0.9 pair first and leaves one pair unmatched
    ious = np.array([[0.9, 0.6], [0.7, 0.0]])
    match = greedy_match(ious, np.ones_like(ious, dtype=bool), np.array([0, 1]))
    assert match.gt_of_pred.tolist() == [0, -1]


def test_same_desc_is_required_except_for_f1_loc() -> None:
    record = simple_record(0, [_gt((10, 10, 100, 100), "Cat")], [_pred((10, 10, 100, 100), "dog")])
    counts = f1_counts([record])
    assert counts.tp[0] == 0 and counts.tp_loc == 1
    values = counts.metric_values()
    assert values["rollout/f1@0.50"] == 0.0 and values["rollout/f1_loc@0.50"] == 1.0
    normalized = simple_record(0, [_gt((10, 10, 100, 100), "Cat")], [_pred((10, 10, 100, 100), " CAT ")])
    assert f1_counts([normalized]).tp[0] == 1


def test_known_counts_over_thresholds_and_micro_sum() -> None:
    # IoU of (0,0,100,100) with (0,0,100,70) is 0.7: a TP at 0.50..0.70, a miss from 0.75 on
    first = simple_record(0, [_gt((0, 0, 100, 100))], [_pred((0, 0, 100, 70))])
    second = simple_record(1, [_gt((0, 0, 50, 50)), _gt((200, 200, 300, 300))], [_pred((0, 0, 50, 50))])
    counts = f1_counts([first, second])
    assert counts == F1Counts((2, 2, 2, 2, 2, 1, 1, 1, 1, 1), 2, 2, 3)
    values = counts.metric_values()
    assert values["rollout/precision@0.50"] == 1.0
    assert values["rollout/recall@0.50"] == pytest.approx(2 / 3)
    assert values["rollout/f1@0.50"] == pytest.approx(0.8)
    assert values["rollout/f1@0.75"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert values["rollout/f1@[.50:.95]"] == pytest.approx(
        (5 * 0.8 + 5 * 0.4) / 10
    )  # F1 at tp=1: 2·½·⅓/(½+⅓) = 0.4


def test_empty_conventions() -> None:
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)
    assert prf(0, 0, 4) == (1.0, 0.0, 0.0)
    assert prf(0, 3, 0) == (0.0, 1.0, 0.0)
    assert prf(0, 3, 4) == (0.0, 0.0, 0.0)
    assert f1_counts([]).metric_values()["rollout/f1@0.50"] == 1.0


@st.composite
def _box(draw: st.DrawFn) -> tuple[int, int, int, int]:
    x1 = draw(st.integers(0, 60))
    y1 = draw(st.integers(0, 60))
    return (x1, y1, draw(st.integers(x1, 63)), draw(st.integers(y1, 63)))


@st.composite
def _records(draw: st.DrawFn, with_polys: bool = False) -> list[ImageRecord]:
    descs = st.sampled_from(["cat", "Cat", "dog"])
    records = []
    for image_id in range(draw(st.integers(0, 3))):
        gt = [_gt(draw(_box()), draw(descs)) for _ in range(draw(st.integers(0, 4)))]
        pred = [_pred(draw(_box()), draw(descs), i) for i in range(draw(st.integers(0, 4)))]
        if with_polys and gt:
            x1, y1, x2, y2 = draw(_box())
            gt.append(_gt((x1, y1, x2, y1, x2, y2), "cat", kind="poly"))
        records.append(simple_record(image_id, gt, pred, width=64, height=64))
    return records


@settings(max_examples=150, deadline=None)
@given(_records())
def test_tp_is_bounded_monotone_and_conventions_hold(records: list[ImageRecord]) -> None:
    counts = f1_counts(records)
    n_pred = sum(len(r.pred) for r in records)
    n_gt = sum(len(r.gt) for r in records)
    assert (counts.n_pred, counts.n_gt) == (n_pred, n_gt)
    assert all(0 <= tp <= min(n_pred, n_gt) for tp in counts.tp)
    assert 0 <= counts.tp_loc <= min(n_pred, n_gt)
    assert list(counts.tp) == sorted(counts.tp, reverse=True)  # stricter thresholds never add matches
    values = counts.metric_values()
    assert all(0.0 <= v <= 1.0 for v in values.values())
    if n_pred == 0:
        assert values["rollout/precision@0.50"] == 1.0
    if n_gt == 0:
        assert values["rollout/recall@0.50"] == 1.0
    if n_pred == 0 and n_gt == 0:
        assert values["rollout/f1@0.50"] == 1.0
    elif n_pred == 0 or n_gt == 0:
        assert values["rollout/f1@0.50"] == 0.0


@settings(max_examples=150, deadline=None)
@given(_records())
def test_one_pass_equals_a_separate_greedy_run_per_threshold(records: list[ImageRecord]) -> None:
    counts = f1_counts(records)
    for index, thr in enumerate(IOU_THRESHOLDS):
        tp = 0
        for record in records:
            if record.pred and record.gt:
                matches = match_image(record)
                same = np.array([[p.desc.lower() == g.desc.lower() for g in record.gt] for p in record.pred])
                pred_index = np.array([p.pred_index for p in record.pred])
                tp += int((greedy_match(matches.ious, same, pred_index, min_iou=thr).gt_of_pred >= 0).sum())
        assert counts.tp[index] == tp


@settings(max_examples=40, deadline=None)
@given(_records(with_polys=True))
def test_matching_is_one_to_one_with_polys(records: list[ImageRecord]) -> None:
    for record in records:
        if not record.pred:
            continue
        matches = match_image(record)
        for match in (matches.by_desc, matches.loc):
            taken = match.gt_of_pred[match.gt_of_pred >= 0]
            assert len(set(taken.tolist())) == taken.size
            assert np.all(match.matched_ious() >= 0.5)
    counts = f1_counts(records)
    assert all(tp <= min(counts.n_pred, counts.n_gt) for tp in counts.tp)
