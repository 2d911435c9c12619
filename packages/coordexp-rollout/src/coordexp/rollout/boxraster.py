"""The COCO-RLE raster of axis-aligned boxes in closed form (spec 03 §3.4 step 2).

A bbox's mask is its quad ``(x1,y1),(x2,y1),(x2,y2),(x1,y2)`` rasterized with pycocotools'
polygon semantics (``frPyObjects``). For an axis-aligned quad that raster is a pixel rectangle whose
four edges each depend on one canvas coordinate only, so it can be written down directly:

* pycocotools upsamples by 5 and rounds: ``X = ⌊5·x + ½⌋`` (same for ``y``);
* the horizontal edges cross pixel column ``c`` iff ``X_lo ≤ 5c + 2 ≤ X_hi − 1`` and
  ``0 ≤ c < R``, so the columns are ``[⌈(X_lo − 2)/5⌉, ⌊(X_hi − 3)/5⌋ + 1)`` clipped to ``[0, R]``;
* each crossed column is filled from row ``⌈(Y_lo − 2)/5⌉`` to row ``⌈(Y_hi − 2)/5⌉`` (exclusive),
  both clipped to ``[0, R]``; the vertical edges add no crossing.

The IoU of two such rectangles is ``|A ∩ B| / |A ∪ B|`` in pixels, 0 when the union is empty —
the same integers pycocotools' RLE IoU divides, so the value is identical to the last bit.

The same edges bound *any* polygon's raster: every crossing pycocotools generates lies in a column
``c`` with ``X_min ≤ 5c + 2 ≤ X_max − 1`` and between rows ``⌈(Y_min − 2)/5⌉`` and
``⌈(Y_max − 2)/5⌉`` of the vertices' extremes, and each column is filled only between its
crossings. So a shape's raster lies inside the pixel rectangle of its AABB, and two shapes whose
AABB rectangles share no pixel have mask IoU exactly 0 — no rasterization needed.

Exactness needs whole-bin box values: then ``5·x + ½`` lies at least 1/1998 away from an integer,
far from any rounding, whereas a fractional value could land on an integer where the order of
pycocotools' float operations matters. Callers use this only for whole-bin boxes
(:attr:`coordexp.rollout.maskiou.GeometryBatch.exact_box`) and rasterize anything else with
pycocotools. ``test_rollout_boxraster.py`` compares it with pycocotools' rasters over every bin
value at several resolutions.
"""

from __future__ import annotations

import numpy as np

from coordexp.core.errors import CoordexpError

UPSAMPLE = 5


def box_pixel_rects(boxes: np.ndarray, resolution: int) -> np.ndarray:
    """Pixel rectangles ``[n, 4]`` float64 ``(c0, r0, c1, r1)`` (half-open, whole numbers) of boxes.

    ``boxes``: float64 ``[n, 4]`` ``(x_min, y_min, x_max, y_max)`` in bins, already clamped to
    [0, 999] and whole. The mask is columns ``[c0, c1)`` × rows ``[r0, r1)`` of the R×R
    canvas; ``c1 <= c0`` or ``r1 <= r0`` means an empty raster. Every edge is
    ``clip(⌈(U − 2)/5⌉, 0, R)`` of its upsampled coordinate ``U`` (module doc; for whole ``U``,
    ``⌊(U − 3)/5⌋ + 1 = ⌈(U − 2)/5⌉``). ``U`` and ``U − 2`` are small whole numbers, so the float
    arithmetic here is exact.
    """
    if resolution < 1:
        raise CoordexpError(f"box raster resolution must be >= 1, got {resolution}")
    canvas = np.asarray(boxes, dtype=np.float64) * ((resolution - 1) / 999)
    upsampled = np.floor(UPSAMPLE * canvas + 0.5)
    return np.minimum(np.maximum(np.ceil((upsampled - 2.0) / UPSAMPLE), 0.0), float(resolution))


def rect_areas(rects: np.ndarray) -> np.ndarray:
    """Pixel count ``[n]`` of each rectangle (0 when empty)."""
    return np.maximum(rects[:, 2] - rects[:, 0], 0.0) * np.maximum(rects[:, 3] - rects[:, 1], 0.0)


def rect_overlap_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels ``[A, B]`` float64 shared by rectangles ``a [A, 4]`` and ``b [B, 4]``."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.maximum(width, 0.0) * np.maximum(height, 0.0)


def rect_overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels ``[K]`` float64 shared by rectangle pairs ``a[k]``, ``b[k]`` (``a``, ``b``: ``[K, 4]``);
    entry k equals ``rect_overlap_matrix(a, b)[k, k]`` to the bit."""
    width = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    height = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    np.maximum(width, 0.0, out=width)
    np.maximum(height, 0.0, out=height)
    width *= height
    return width


def rect_ious(overlap: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU ``[K]`` of rectangle pairs from their :func:`rect_overlaps` and :func:`rect_areas`
    (0 where the union is empty); the arithmetic of :func:`rect_iou_matrix`, pair by pair. Any two
    rasters' pixel counts work too: it is pycocotools' RLE IoU ``i / u`` (0 when ``i = 0``), as
    :mod:`coordexp.rollout.polyraster` uses it."""
    union = area_a + area_b - overlap
    return np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)


def rect_iou_matrix(
    a: np.ndarray,
    b: np.ndarray,
    overlap: np.ndarray | None = None,
    areas: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """IoU ``[A, B]`` float64 of pixel rectangles ``a [A, 4]``, ``b [B, 4]`` (``c0, r0, c1, r1``).

    Areas count pixels; an empty rectangle has area 0 and a pair with an empty union gets 0.
    ``overlap``: :func:`rect_overlap_matrix` of ``a`` and ``b``, and ``areas``: the
    :func:`rect_areas` of ``a`` and of ``b``, when the caller has them.
    """
    inter = rect_overlap_matrix(a, b) if overlap is None else overlap
    area_a, area_b = (rect_areas(a), rect_areas(b)) if areas is None else areas
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


__all__ = [
    "box_pixel_rects",
    "rect_areas",
    "rect_iou_matrix",
    "rect_ious",
    "rect_overlap_matrix",
    "rect_overlaps",
]
