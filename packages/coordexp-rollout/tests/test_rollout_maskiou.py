"""Mask IoU (spec 03 §3.4 step 2) and invariant E8."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from coordexp.core.errors import CoordexpError
from coordexp.rollout.maskiou import (
    Geometry,
    as_geometry,
    mask_iou,
    maskiou_matrix,
    rasterize,
)

bins = st.integers(0, 999)


@st.composite
def boxes(draw, min_side: int = 0) -> Geometry:
    x1 = draw(st.integers(0, 999 - min_side))
    y1 = draw(st.integers(0, 999 - min_side))
    x2 = draw(st.integers(x1 + min_side, 999))
    y2 = draw(st.integers(y1 + min_side, 999))
    return Geometry("bbox_2d", (x1, y1, x2, y2))


polys = st.lists(st.tuples(bins, bins), min_size=3, max_size=8).map(
    lambda pts: Geometry("poly", tuple(v for p in pts for v in p))
)
geometries = st.one_of(boxes(), polys)
resolutions = st.sampled_from([16, 64, 256, 300])


def quad(x1: int, y1: int, x2: int, y2: int) -> Geometry:
    """A box as a polygon: same mask, but rasterized by pycocotools (whole-bin boxes never are)."""
    return Geometry("poly", (x1, y1, x2, y1, x2, y2, x1, y2))


def raster_area(geometry: Geometry, resolution: int) -> int:
    return int(coco_mask.area(rasterize([geometry], resolution).rles[0]))


@settings(max_examples=150, deadline=None)
@given(a=geometries, b=geometries, resolution=resolutions)
def test_maskiou_symmetric_and_bounded(a: Geometry, b: Geometry, resolution: int) -> None:
    ab = mask_iou(a, b, resolution)
    ba = mask_iou(b, a, resolution)
    assert ab == ba
    assert 0.0 <= ab <= 1.0


@settings(max_examples=100, deadline=None)
@given(g=geometries, resolution=resolutions)
def test_identical_nonempty_shapes_give_one(g: Geometry, resolution: int) -> None:
    expected = 1.0 if raster_area(g, resolution) > 0 else 0.0
    assert mask_iou(g, g, resolution) == expected


def test_boxes_of_one_pixel_or_more_never_vanish_at_256() -> None:
    # 999/255 ≈ 3.92 bins per pixel: a 4-bin box covers a pixel wherever it sits.
    for x in range(996):
        g = Geometry("bbox_2d", (x, 995 - x, x + 4, 999 - x))
        assert mask_iou(g, g, 256) == 1.0, x


def test_tiny_shape_rasterizes_empty_and_gives_zero_at_256() -> None:
    tiny = Geometry("bbox_2d", (0, 0, 1, 1))
    assert raster_area(tiny, 256) == 0
    assert mask_iou(tiny, tiny, 256) == 0.0
    # At a finer canvas the same box is visible.
    assert mask_iou(tiny, tiny, 2000) == 1.0


def test_exact_box_iou_is_not_the_rasterized_one() -> None:
    # Why boxes are rasterized too: the raster snaps edges to pixels, the exact IoU does not.
    a = Geometry("bbox_2d", (100, 100, 300, 300))
    b = Geometry("bbox_2d", (150, 100, 350, 300))
    exact = (150 * 200) / (250 * 200)
    assert not math.isclose(mask_iou(a, b, 256), exact, abs_tol=1e-3)


def test_bbox_equals_its_quad_polygon_and_is_order_free() -> None:
    box = Geometry("bbox_2d", (120, 80, 640, 410))
    inverted = Geometry("bbox_2d", (640, 410, 120, 80))
    quad = Geometry("poly", (120, 80, 640, 80, 640, 410, 120, 410))
    assert mask_iou(box, quad) == 1.0
    assert mask_iou(inverted, box) == 1.0


def test_values_are_clamped_before_projection() -> None:
    inside = Geometry("bbox_2d", (900, 900, 999, 999))
    outside = Geometry("bbox_2d", (900, 900, 1500, 1500))
    assert mask_iou(inside, outside) == 1.0


def test_known_partial_overlap() -> None:
    # Two 4x4-pixel-aligned boxes on a 1000 canvas (projection is the identity there).
    a = Geometry("bbox_2d", (0, 0, 400, 400))
    b = Geometry("bbox_2d", (200, 0, 600, 400))
    assert mask_iou(a, b, 1000) == pytest.approx(1 / 3, abs=5e-3)


def test_matrix_requested_pairs_only() -> None:
    preds = [Geometry("bbox_2d", (0, 0, 100, 100)), Geometry("bbox_2d", (500, 500, 700, 700))]
    gts = [
        Geometry("bbox_2d", (0, 0, 100, 100)),
        Geometry("bbox_2d", (500, 500, 600, 700)),
        Geometry("poly", (1, 1, 50, 1, 1, 50)),
    ]
    full = maskiou_matrix(preds, gts).values
    assert np.isfinite(full).all()
    mask = np.array([[True, False, False], [False, True, True]])
    masked = maskiou_matrix(preds, gts, mask)
    assert masked.raster_errors == 0
    np.testing.assert_array_equal(np.isnan(masked.values), ~mask)
    np.testing.assert_array_equal(masked.values[mask], full[mask])
    by_pairs = maskiou_matrix(preds, gts, [(0, 0), (1, 1), (1, 2)]).values
    np.testing.assert_array_equal(np.isnan(by_pairs), ~mask)
    np.testing.assert_array_equal(by_pairs[mask], full[mask])
    assert full[0, 0] == 1.0
    assert full[1, 1] == pytest.approx(0.5, abs=0.02)


def test_matrix_empty_inputs() -> None:
    g = Geometry("bbox_2d", (0, 0, 10, 10))
    assert maskiou_matrix([], [g]).values.shape == (0, 1)
    assert maskiou_matrix([g], []).values.shape == (1, 0)
    none = maskiou_matrix([g], [g], np.zeros((1, 1), dtype=bool))
    assert np.isnan(none.values).all() and none.raster_errors == 0


def test_as_geometry_accepts_coordobject_like_and_pairs() -> None:
    obj = SimpleNamespace(desc="cat", geom_key="poly", values=[1, 2, 3, 4, 5, 6])
    assert as_geometry(obj) == Geometry("poly", (1, 2, 3, 4, 5, 6))
    assert as_geometry(("bbox_2d", [1, 2, 3, 4])) == Geometry("bbox_2d", (1.0, 2.0, 3.0, 4.0))
    g = Geometry("bbox_2d", (1, 2, 3, 4))
    assert as_geometry(g) is g


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (("bbox_2d", [1, 2, 3]), "needs 4 values"),
        (("poly", [1, 2, 3, 4]), "even number"),
        (("poly", [1, 2, 3, 4, 5, 6, 7]), "even number"),
        (("circle", [1, 2, 3]), "geom_key"),
        (("bbox_2d", [1, 2, 3, float("nan")]), "finite"),
        (("bbox_2d", [1, 2, 3, True]), "real number"),
        (("bbox_2d", 5), "sequence"),
        ([1, 2, 3, 4], "expected a geometry"),
    ],
)
def test_bad_geometries_raise(raw, message: str) -> None:
    with pytest.raises(CoordexpError, match=message):
        as_geometry(raw)


def test_bad_geometry_error_names_side_and_index() -> None:
    g = Geometry("bbox_2d", (0, 0, 10, 10))
    with pytest.raises(CoordexpError, match=r"gts\[1\]"):
        maskiou_matrix([g], [g, ("poly", [1, 2])])


def test_bad_resolution_and_candidates_raise() -> None:
    g = Geometry("bbox_2d", (0, 0, 10, 10))
    with pytest.raises(CoordexpError, match=">= 16"):
        maskiou_matrix([g], [g], resolution=8)
    with pytest.raises(CoordexpError, match="shape"):
        maskiou_matrix([g], [g], np.ones((2, 1), dtype=bool))
    with pytest.raises(CoordexpError, match="out of range"):
        maskiou_matrix([g], [g], [(0, 1)])
    with pytest.raises(CoordexpError, match="pairs"):
        maskiou_matrix([g], [g], np.array([[0.5, 0.5]]))
