"""Closed-form column rasters equal pycocotools' polygon rasters and RLE IoUs (spec 03 §3.4 step 2).

:mod:`coordexp.rollout.polyraster` replaces pycocotools on the matching path; these properties
compare it with pycocotools itself (``frPyObjects``, ``decode``, ``area``, ``iou``) pixel for pixel
and bit for bit, on rings that stress its arithmetic: upsampled vertices on pixel centres and
column lines, canvas borders, horizontal, vertical and diagonal edges, repeated vertices and
self-intersections, and fractional coordinates.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from coordexp.rollout.maskiou import (
    Geometry,
    GeometryBatch,
    canvas_rings,
    maskiou_between,
    maskiou_between_many,
    maskiou_matrix,
    rasterize,
)
from coordexp.rollout.boxraster import rect_ious
from coordexp.rollout.polyraster import pair_intersections, rasterize_rings, rect_intersections

RESOLUTIONS = st.sampled_from([16, 17, 64, 256])


@st.composite
def canvas_rings_and_resolution(draw) -> tuple[list[np.ndarray], int]:
    """1–6 rings of 3–40 canvas points in [0, R − 1]: bin projections, fifths of a pixel (the
    upsampled grid itself), or free floats; sometimes with repeated vertices."""
    resolution = draw(RESOLUTIONS)
    rings = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(3, 40))
        kind = draw(st.sampled_from(("bins", "fifths", "floats")))
        if kind == "bins":
            raw = draw(st.lists(st.integers(0, 999), min_size=2 * n, max_size=2 * n))
            points = np.array(raw, dtype=np.float64).reshape(n, 2) * ((resolution - 1) / 999)
        elif kind == "fifths":
            top = 5 * (resolution - 1)
            raw = draw(st.lists(st.integers(0, top), min_size=2 * n, max_size=2 * n))
            points = np.array(raw, dtype=np.float64).reshape(n, 2) / 5.0
        else:
            raw = draw(
                st.lists(st.floats(0.0, resolution - 1.0, allow_nan=False), min_size=2 * n, max_size=2 * n)
            )
            points = np.array(raw, dtype=np.float64).reshape(n, 2)
        for _ in range(draw(st.integers(0, 2))):
            points[draw(st.integers(0, n - 1))] = points[draw(st.integers(0, n - 1))]
        rings.append(points)
    return rings, resolution


def _rasters(rings: list[np.ndarray], resolution: int):
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int64)
    return rasterize_rings(np.concatenate(rings), offsets, resolution)


def _dense(rasters, n: int) -> np.ndarray:
    """uint8 ``[n, R, R]`` masks indexed ``[ring, row, column]`` (pycocotools' decode layout)."""
    masks = np.zeros((n, rasters.resolution, rasters.resolution), dtype=np.uint8)
    owner = np.repeat(np.arange(n), np.diff(rasters.first))
    for ring, column, lo, hi in zip(owner, rasters.column, rasters.lo, rasters.hi, strict=True):
        masks[ring, int(lo) : int(hi), column] = 1
    return masks


def _coco_rles(rings: list[np.ndarray], resolution: int) -> list[dict]:
    return coco_mask.frPyObjects([ring.reshape(-1).tolist() for ring in rings], resolution, resolution)


@settings(max_examples=150, deadline=None)
@given(case=canvas_rings_and_resolution())
def test_rasters_equal_pycocotools(case) -> None:
    rings, resolution = case
    rasters = _rasters(rings, resolution)
    rles = _coco_rles(rings, resolution)
    masks = _dense(rasters, len(rings))
    for k, rle in enumerate(rles):
        np.testing.assert_array_equal(masks[k], coco_mask.decode(rle))
    np.testing.assert_array_equal(rasters.area, coco_mask.area(rles))


@settings(max_examples=150, deadline=None)
@given(case=canvas_rings_and_resolution(), data=st.data())
def test_intersections_and_ious_equal_pycocotools(case, data) -> None:
    rings, resolution = case
    n = len(rings)
    rasters = _rasters(rings, resolution)
    a, b = (np.array(v, dtype=np.int64) for v in np.divmod(np.arange(n * n), n))
    ious = rect_ious(pair_intersections(rasters, a, b), rasters.area[a], rasters.area[b])
    rles = _coco_rles(rings, resolution)
    expected = np.asarray(coco_mask.iou(rles, rles, [0] * n))
    assert ious.tobytes() == expected.reshape(-1).tobytes()

    corners = data.draw(
        st.lists(st.integers(0, resolution), min_size=4 * n, max_size=4 * n).map(
            lambda v: np.sort(np.array(v, dtype=np.float64).reshape(n, 2, 2), axis=1)
        )
    )
    rects = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], axis=1)
    shared = rect_intersections(rasters, np.arange(n), rects)
    masks = _dense(rasters, n)
    for k in range(n):
        c0, r0, c1, r1 = (int(v) for v in rects[k])
        assert shared[k] == masks[k][r0:r1, c0:c1].sum()


geometries = st.one_of(
    st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999), st.integers(0, 999)).map(
        lambda v: Geometry("bbox_2d", (min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])))
    ),
    st.lists(st.tuples(st.integers(0, 999), st.integers(0, 999)), min_size=3, max_size=12).map(
        lambda pts: Geometry("poly", tuple(c for p in pts for c in p))
    ),
    st.lists(st.tuples(st.floats(-20.0, 1020.0), st.floats(-20.0, 1020.0)), min_size=3, max_size=6).map(
        lambda pts: Geometry("poly", tuple(c for p in pts for c in p))
    ),
)


@settings(max_examples=100, deadline=None)
@given(
    preds=st.lists(geometries, min_size=1, max_size=6),
    gts=st.lists(geometries, min_size=1, max_size=6),
    resolution=RESOLUTIONS,
)
def test_maskiou_matrix_equals_pycocotools_rle_iou(preds, gts, resolution: int) -> None:
    got = maskiou_matrix(preds, gts, None, resolution)
    rles_p = coco_mask.frPyObjects(canvas_rings(preds, resolution), resolution, resolution)
    rles_g = coco_mask.frPyObjects(canvas_rings(gts, resolution), resolution, resolution)
    expected = np.asarray(coco_mask.iou(rles_p, rles_g, [0] * len(gts))).reshape(len(preds), len(gts))
    assert got.values.tobytes() == expected.tobytes()
    assert got.raster_errors == 0
    assert len(rasterize(preds, resolution).rles) == len(preds)


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.lists(geometries, max_size=5), st.lists(geometries, max_size=5), st.randoms()),
        min_size=1,
        max_size=5,
    ),
    gate=st.sampled_from([None, 0.0, 0.3]),
)
def test_many_items_equal_one_by_one(items, gate) -> None:
    """Rasterizing the items together changes no value (batch independence)."""
    staged = []
    for preds, gts, rnd in items:
        mask = np.array([[rnd.random() < 0.7 for _ in gts] for _ in preds], dtype=bool)
        mask = mask.reshape(len(preds), len(gts))
        staged.append((GeometryBatch.of(preds), GeometryBatch.of(gts), mask))
    together = maskiou_between_many(staged, 256, gate)
    for (pred, gt, mask), got in zip(staged, together, strict=True):
        alone = maskiou_between(pred, gt, mask, 256, gate)
        assert got.values.tobytes() == alone.values.tobytes()
