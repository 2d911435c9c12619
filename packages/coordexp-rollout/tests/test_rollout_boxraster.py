"""The closed-form box raster equals pycocotools' polygon raster (spec 03 §3.4 step 2; E8); the
pair-by-pair rectangle functions and the box-only maskIoU path equal their matrix forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from coordexp.rollout.boxraster import (
    box_pixel_rects,
    rect_areas,
    rect_iou_matrix,
    rect_ious,
    rect_overlap_matrix,
    rect_overlaps,
)
from coordexp.rollout import maskiou as maskiou_mod
from coordexp.rollout.maskiou import Geometry, GeometryBatch, canvas_rings, maskiou_matrix

RESOLUTIONS = (16, 17, 64, 100, 255, 256, 300, 999, 1000, 2000)
# pycocotools' decode trips a NumPy 2 deprecation warning inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def coco_masks(boxes: np.ndarray, resolution: int) -> list[np.ndarray]:
    """pycocotools' masks of the boxes' quads, [R, R] each (row = y, column = x)."""
    geoms = [Geometry("bbox_2d", tuple(b)) for b in boxes.tolist()]
    rles = coco_mask.frPyObjects(canvas_rings(geoms, resolution), resolution, resolution)
    return [coco_mask.decode(rle) for rle in rles]


def rect_mask(rect: np.ndarray, resolution: int) -> np.ndarray:
    c0, r0, c1, r1 = (int(v) for v in rect)
    mask = np.zeros((resolution, resolution), dtype=np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_every_edge_value_matches_pycocotools(resolution: int) -> None:
    # Edges are independent, so sweeping each edge over every bin (the others fixed) covers all
    # 4 x 1000 edge positions; the spans keep the box non-empty where possible.
    v = np.arange(1000, dtype=np.float64)
    boxes = np.concatenate(
        [
            np.stack([v, np.zeros(1000), np.full(1000, 999.0), np.full(1000, 999.0)], axis=1),  # x_min
            np.stack([np.zeros(1000), v, np.full(1000, 999.0), np.full(1000, 999.0)], axis=1),  # y_min
            np.stack([np.zeros(1000), np.zeros(1000), v, np.full(1000, 999.0)], axis=1),  # x_max
            np.stack([np.zeros(1000), np.zeros(1000), np.full(1000, 999.0), v], axis=1),  # y_max
        ]
    )
    rects = box_pixel_rects(boxes, resolution)
    geoms = [Geometry("bbox_2d", tuple(b)) for b in boxes.tolist()]
    rles = coco_mask.frPyObjects(canvas_rings(geoms, resolution), resolution, resolution)
    areas = np.array([coco_mask.area(rle) for rle in rles])
    sides = np.maximum(rects[:, 2:] - rects[:, :2], 0)
    np.testing.assert_array_equal(areas, sides[:, 0] * sides[:, 1])
    # Areas agree everywhere; the masks themselves agree on a spread of the sweeps.
    for k in range(0, len(boxes), 211):
        np.testing.assert_array_equal(coco_mask.decode(rles[k]), rect_mask(rects[k], resolution))


whole_boxes = st.tuples(*(st.integers(0, 999),) * 4).map(
    lambda v: (min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3]))
)


@settings(max_examples=120, deadline=None)
@given(
    a=st.lists(whole_boxes, min_size=1, max_size=4),
    b=st.lists(whole_boxes, min_size=1, max_size=4),
    resolution=st.sampled_from(RESOLUTIONS[:-1]),
)
def test_masks_and_iou_equal_pycocotools(a, b, resolution: int) -> None:
    boxes_a = np.array(a, dtype=np.float64)
    boxes_b = np.array(b, dtype=np.float64)
    rects_a = box_pixel_rects(boxes_a, resolution)
    rects_b = box_pixel_rects(boxes_b, resolution)
    for rect, mask in zip(rects_a, coco_masks(boxes_a, resolution), strict=True):
        np.testing.assert_array_equal(mask, rect_mask(rect, resolution))
    geoms_a = [Geometry("bbox_2d", box) for box in a]
    geoms_b = [Geometry("bbox_2d", box) for box in b]
    rles_a = coco_mask.frPyObjects(canvas_rings(geoms_a, resolution), resolution, resolution)
    rles_b = coco_mask.frPyObjects(canvas_rings(geoms_b, resolution), resolution, resolution)
    expected = np.asarray(coco_mask.iou(rles_a, rles_b, [0] * len(b)), dtype=np.float64).reshape(
        len(a), len(b)
    )
    # Bit-identical, not approximately equal: both divide the same pixel counts.
    np.testing.assert_array_equal(rect_iou_matrix(rects_a, rects_b), expected)


def test_empty_rasters_have_zero_iou() -> None:
    tiny = np.array([[0.0, 0.0, 1.0, 1.0]])  # smaller than a pixel at R = 256
    rect = box_pixel_rects(tiny, 256)
    assert (rect[0, 2] - rect[0, 0]) * (rect[0, 3] - rect[0, 1]) <= 0
    assert rect_iou_matrix(rect, rect)[0, 0] == 0.0
    big = box_pixel_rects(np.array([[0.0, 0.0, 500.0, 500.0]]), 256)
    assert rect_iou_matrix(rect, big)[0, 0] == 0.0


def test_only_whole_bin_boxes_are_exact() -> None:
    batch = GeometryBatch.of(
        [
            Geometry("bbox_2d", (1, 2, 30, 40)),
            Geometry("bbox_2d", (1.5, 2, 30, 40)),
            Geometry("poly", (0, 0, 10, 0, 10, 10)),
        ]
    )
    np.testing.assert_array_equal(batch.exact_box, [True, False, False])


def _reference_ious(preds: list[Geometry], gts: list[Geometry], resolution: int) -> np.ndarray:
    """Every pair through pycocotools: rasterize all, one ``iou`` call."""
    rles_p = coco_mask.frPyObjects(canvas_rings(preds, resolution), resolution, resolution)
    rles_g = coco_mask.frPyObjects(canvas_rings(gts, resolution), resolution, resolution)
    ious = coco_mask.iou(rles_p, rles_g, [0] * len(gts))
    return np.asarray(ious, dtype=np.float64).reshape(len(preds), len(gts))


bins = st.integers(-20, 1020)  # values outside 0..999 exercise the clamp
shapes = st.one_of(
    whole_boxes.map(lambda b: Geometry("bbox_2d", b)),
    st.lists(st.tuples(bins, bins), min_size=3, max_size=9).map(
        lambda pts: Geometry("poly", tuple(v for p in pts for v in p))
    ),
    st.tuples(*(st.floats(0, 999, allow_nan=False),) * 4).map(
        lambda v: Geometry("bbox_2d", (min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])))
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    preds=st.lists(shapes, min_size=1, max_size=6),
    gts=st.lists(shapes, min_size=1, max_size=6),
    resolution=st.sampled_from((16, 64, 256, 300)),
)
def test_maskiou_matrix_equals_pycocotools_on_every_pair(preds, gts, resolution: int) -> None:
    # Closed-form boxes, the disjoint-rectangle shortcut and pycocotools together give exactly the
    # values pycocotools gives for every pair.
    np.testing.assert_array_equal(
        maskiou_matrix(preds, gts, None, resolution).values, _reference_ious(preds, gts, resolution)
    )


def test_disjoint_pixel_rectangles_skip_rasterization(monkeypatch: pytest.MonkeyPatch) -> None:
    rasterized: list[int] = []
    real = maskiou_mod.coco_mask.frPyObjects

    def counting(rings, h, w):
        rasterized.append(len(rings))
        return real(rings, h, w)

    monkeypatch.setattr(maskiou_mod.coco_mask, "frPyObjects", counting)
    left = Geometry("poly", (0, 0, 100, 0, 50, 100))
    right = Geometry("poly", (600, 600, 900, 600, 750, 900))
    result = maskiou_matrix([left], [right])
    assert result.values.tolist() == [[0.0]] and result.raster_errors == 0
    assert rasterized == []


@settings(max_examples=100, deadline=None)
@given(
    pairs=st.lists(st.tuples(whole_boxes, whole_boxes), min_size=1, max_size=12),
    resolution=st.sampled_from(RESOLUTIONS[:-1]),
)
def test_pairwise_rect_functions_equal_the_matrix_diagonal(pairs, resolution: int) -> None:
    a = box_pixel_rects(np.array([p for p, _ in pairs], dtype=np.float64), resolution)
    b = box_pixel_rects(np.array([q for _, q in pairs], dtype=np.float64), resolution)
    overlap = rect_overlaps(a, b)
    assert overlap.tobytes() == np.diagonal(rect_overlap_matrix(a, b)).copy().tobytes()
    ious = rect_ious(overlap, rect_areas(a), rect_areas(b))
    assert ious.tobytes() == np.diagonal(rect_iou_matrix(a, b)).copy().tobytes()


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(whole_boxes, min_size=1, max_size=5),
    b=st.lists(whole_boxes, min_size=1, max_size=5),
    data=st.data(),
)
def test_box_only_batches_equal_the_general_path(a, b, data) -> None:
    # A poly among the GT objects sends every pair through the general (pair-list) path; the
    # box-box entries must equal the box-only closed form to the bit.
    size = len(a) * len(b)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=size, max_size=size))).reshape(len(a), len(b))
    pred = GeometryBatch.of([Geometry("bbox_2d", box) for box in a])
    gt_boxes = [Geometry("bbox_2d", box) for box in b]
    only_boxes = maskiou_mod.maskiou_between(pred, GeometryBatch.of(gt_boxes), mask, 256)
    mixed_gt = GeometryBatch.of([*gt_boxes, Geometry("poly", (0, 0, 500, 0, 0, 500))])
    mixed_mask = np.concatenate([mask, np.ones((len(a), 1), dtype=bool)], axis=1)
    mixed = maskiou_mod.maskiou_between(pred, mixed_gt, mixed_mask, 256)
    assert only_boxes.values.tobytes() == mixed.values[:, : len(b)].copy().tobytes()
    assert only_boxes.raster_errors == 0
