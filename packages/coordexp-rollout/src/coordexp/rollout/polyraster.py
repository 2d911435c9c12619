"""COCO-RLE polygon rasters in closed form, one pixel column at a time (spec 03 §3.4 step 2).

pycocotools' polygon rasterizer (``frPyObjects``) works on a canvas upsampled by 5: it rounds each
vertex to ``X = ⌊5·x + ½⌋`` (same for ``y``), walks every edge through whole upsampled points —
along ``x`` when ``|ΔX| ≥ |ΔY|`` (``Y = trunc(Y_a + s·t + ½)`` at ``X = X_a + t``, ``s = ΔY/ΔX``),
else along ``y`` (``X = trunc(X_a + s·t + ½)`` at ``Y = Y_a + t``, ``s = ΔX/ΔY``), from the
endpoint ``a`` with the smaller walking coordinate — and records a *crossing* wherever two
consecutive points straddle a pixel column's centre line ``X = 5c + 2½`` (``0 ≤ c < R``): the
crossing's row is ``clip(⌈(Y_min − 2)/5⌉, 0, R)`` with ``Y_min`` the smaller ``Y`` of the two points.
The mask is the parity of the crossings in column-major order; a closed walk crosses each line an
even number of times, so column ``c`` holds rows ``[y₀, y₁) ∪ [y₂, y₃) ∪ …`` of its sorted crossing
rows.

The crossings of an edge are found without walking it: along ``x`` the two points around column
``c`` sit at ``t = 5c + 2 − X_a`` and ``t + 1``; along ``y`` the straddling step is the last ``t``
whose ``X`` is still on the starting side, estimated from the line equation and settled by
evaluating pycocotools' own expression on the steps around the estimate (``X(t)`` is monotone).
Every value is computed with the same float operations in the same order as pycocotools, so a
raster here equals pycocotools' pixel for pixel, and an IoU (whole pixel counts divided once)
equals its RLE IoU to the bit (:func:`~coordexp.rollout.boxraster.rect_ious` of the counts);
``test_rollout_polyraster.py`` compares both.

A raster is kept as row intervals per column (:class:`ColumnRasters`), so areas and the
intersections of many ring pairs — of a whole decode batch at once — are a few dozen whole-array
operations over intervals, not pixels, and no per-ring Python work.
"""

from __future__ import annotations

import attrs
import numpy as np

from coordexp.core.errors import CoordexpError
from coordexp.rollout.boxraster import UPSAMPLE

# Steps searched on each side of the line-equation estimate of a y-walk's straddling step (the
# float estimate is off by at most one step).
_SEARCH = 2


@attrs.frozen(eq=False)
class ColumnRasters:
    """The rasters of ``n`` rings on an R×R canvas as row intervals per pixel column.

    Intervals (``K``, sorted by ring, then column, then row): ``column`` int64 ``[K]``, ``lo``/``hi``
    float64 ``[K]`` whole rows ``[lo, hi)`` (possibly empty; intervals of one column never
    overlap). Ring ``r`` owns intervals ``first[r]:first[r + 1]`` (``first`` int64 ``[n + 1]``) and
    has ``area[r]`` pixels (float64 ``[n]``, whole). Column lookup: ring ``r`` spans columns
    ``col0[r]..col1[r]`` (int64 ``[n]``, ``col1 < col0`` when empty); the intervals of its column
    ``c`` in that span are ``col_start[i]`` on, ``col_count[i]`` of them, with
    ``i = col_base[r] + c − col0[r]``.
    """

    resolution: int
    column: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    first: np.ndarray
    area: np.ndarray
    col0: np.ndarray
    col1: np.ndarray
    col_base: np.ndarray
    col_start: np.ndarray
    col_count: np.ndarray


def expand_ranges(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For int64 counts ``[E]``: the owner ``e`` of every expanded entry (``counts[e]`` entries each,
    in order) and its rank ``0..counts[e] − 1``, both int64 ``[counts.sum()]``."""
    owner = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(owner.size) - np.take(starts, owner)


def _rounded(start: np.ndarray, slope: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """pycocotools' walked coordinate ``(int)(start + slope·steps + ½)`` as whole float64 (the sums
    are non-negative, so truncation is ``floor``)."""
    return np.floor(start + slope * steps + 0.5)


def rasterize_rings(canvas_points: np.ndarray, offsets: np.ndarray, resolution: int) -> ColumnRasters:
    """Rasters of rings given as canvas points: float64 ``[T, 2]`` (x, y) in ``[0, R − 1]``, ring
    ``r`` owning rows ``offsets[r]:offsets[r + 1]`` (int64 ``[n + 1]``, every ring >= 1 point).

    Equal to ``pycocotools.mask.frPyObjects`` of each ring (module doc).
    """
    if resolution < 1:
        raise CoordexpError(f"raster resolution must be >= 1, got {resolution}")
    n_rings = offsets.size - 1
    up = np.floor(canvas_points * float(UPSAMPLE) + 0.5)
    following = np.arange(1, up.shape[0] + 1)
    following[offsets[1:] - 1] = offsets[:-1]
    x0, y0 = up[:, 0], up[:, 1]
    x1, y1 = np.take(x0, following), np.take(y0, following)
    dx, dy = np.abs(x1 - x0), np.abs(y1 - y0)
    along_x = dx >= dy
    # Walk from the endpoint with the smaller walking coordinate (pycocotools' flip).
    flip = np.where(along_x, x0 > x1, y0 > y1)
    xa, ya = np.where(flip, x1, x0), np.where(flip, y1, y0)
    xb, yb = np.where(flip, x0, x1), np.where(flip, y0, y1)
    # Columns c whose centre line lies between the edge's X extremes: 5c + 2 in [min X, max X − 1].
    c_lo = np.maximum(-((2.0 - np.minimum(xa, xb)) // UPSAMPLE), 0.0)
    c_hi = np.minimum((np.maximum(xa, xb) - 3.0) // UPSAMPLE, resolution - 1.0)
    count = np.maximum(c_hi - c_lo + 1.0, 0.0).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):  # edges without crossings only
        slope = np.where(along_x, (yb - ya) / dx, (xb - xa) / dy)
    ring = np.repeat(np.arange(n_rings, dtype=np.float64), np.diff(offsets))
    # x-walked edges first, so that their crossings form a prefix of the expanded arrays.
    order = np.argsort(~along_x, kind="stable")
    n_x = int(count[along_x].sum())
    count = np.take(count, order)
    # Per crossing (an edge's crossings are consecutive): repeat rows of 4 float64 (a fast
    # fixed-size copy) rather than gather them.
    rows = np.repeat(np.take(np.stack([c_lo, xa, ya, slope], axis=1), order, axis=0), count, axis=0)
    column = rows[:, 0] + (np.arange(rows.shape[0]) - np.repeat(np.cumsum(count) - count, count))
    y_min = np.empty(column.size)
    x_part, y_part = rows[:n_x], rows[n_x:]
    steps = UPSAMPLE * column[:n_x] + 2.0 - x_part[:, 1]
    np.minimum(
        _rounded(x_part[:, 2], x_part[:, 3], steps),
        _rounded(x_part[:, 2], x_part[:, 3], steps + 1.0),
        out=y_min[:n_x],
    )
    y_steps = np.repeat(np.take(dy, order), count)[n_x:]
    y_min[n_x:] = y_part[:, 2] + _straddling_steps(column[n_x:], y_part[:, 1], y_part[:, 3], y_steps)
    # ⌈(Y_min − 2)/5⌉: a whole quotient is exact and any other lies >= 0.2 from a whole number.
    crossing_row = np.clip(np.ceil((y_min - 2.0) / UPSAMPLE), 0.0, float(resolution))
    owner = np.repeat(np.take(ring, order), count)
    keys = np.sort(((owner * resolution + column) * (resolution + 1) + crossing_row).astype(np.int64))
    lows, highs = keys[0::2], keys[1::2]
    group = lows // (resolution + 1)
    lo = (lows - group * (resolution + 1)).astype(np.float64)
    hi = (highs - group * (resolution + 1)).astype(np.float64)
    owner, column_of = np.divmod(group, resolution)
    return _with_column_index(resolution, n_rings, owner, column_of, lo, hi)


def _straddling_steps(
    column: np.ndarray, start: np.ndarray, slope: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """For y-walked edges (one entry per crossing; ``start`` = ``X_a``, ``steps`` = ``|ΔY|``, all
    float64): the last step ``t`` whose ``X(t) = trunc(X_a + s·t + ½)`` is still on the starting
    side of the centre line ``5c + 2½`` (``X ≤ 5c + 2`` when X grows, ``≥ 5c + 3`` when it
    shrinks). ``X(t)`` is monotone and the side holds at ``t = 0`` but not at ``t = steps``, so
    counting the steps on the starting side within a window around the estimate finds it."""
    line = UPSAMPLE * column + 2.0
    grows = slope > 0
    estimate = np.floor((line + 0.5 - start) / slope)
    base = np.clip(estimate - _SEARCH, 0.0, steps - 1.0)
    last = base.copy()
    for k in range(1, 2 * _SEARCH + 1):
        last += (_rounded(start, slope, np.minimum(base + k, steps)) <= line) == grows
    return last


def _with_column_index(
    resolution: int, n_rings: int, owner: np.ndarray, column: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> ColumnRasters:
    """:class:`ColumnRasters` of intervals sorted by (ring ``owner``, ``column``), with the per-ring
    column lookup tables."""
    first = np.searchsorted(owner, np.arange(n_rings + 1))
    has = first[1:] > first[:-1]
    if column.size:
        col0 = np.where(has, np.take(column, first[:-1], mode="clip"), 0)
        col1 = np.where(has, np.take(column, first[1:] - 1, mode="clip"), -1)
    else:
        col0, col1 = np.zeros(n_rings, dtype=np.int64), np.full(n_rings, -1, dtype=np.int64)
    span = col1 - col0 + 1
    col_base = np.cumsum(span) - span
    col_count = np.bincount(np.take(col_base - col0, owner) + column, minlength=int(span.sum()))
    col_start = np.cumsum(col_count) - col_count
    area = np.bincount(owner, weights=hi - lo, minlength=n_rings)
    return ColumnRasters(resolution, column, lo, hi, first, area, col0, col1, col_base, col_start, col_count)


def pair_intersections(rasters: ColumnRasters, a_rings: np.ndarray, b_rings: np.ndarray) -> np.ndarray:
    """Shared pixels float64 ``[K]`` of rings ``a_rings[k]`` and ``b_rings[k]`` of ``rasters``
    (int64 ``[K]``)."""
    first = rasters.first
    pair, rank = expand_ranges(np.take(first, a_rings + 1) - np.take(first, a_rings))
    mine = np.take(np.take(first, a_rings), pair) + rank
    column = np.take(rasters.column, mine)
    partner = np.take(b_rings, pair)
    offset = column - np.take(rasters.col0, partner)
    inside = (offset >= 0) & (column <= np.take(rasters.col1, partner))
    cell = np.take(rasters.col_base, partner) + np.where(inside, offset, 0)
    owner, step = expand_ranges(np.where(inside, np.take(rasters.col_count, cell, mode="clip"), 0))
    theirs = np.take(np.take(rasters.col_start, cell, mode="clip"), owner) + step
    mine = np.take(mine, owner)
    lo, hi = rasters.lo, rasters.hi
    top = np.minimum(np.take(hi, mine), np.take(hi, theirs))
    shared = top - np.maximum(np.take(lo, mine), np.take(lo, theirs))
    return np.bincount(np.take(pair, owner), weights=np.maximum(shared, 0.0), minlength=a_rings.size)


def rect_intersections(rasters: ColumnRasters, rings: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Shared pixels float64 ``[K]`` of ring ``rings[k]`` of ``rasters`` and pixel rectangle
    ``rects[k]`` (float64 ``[K, 4]`` whole ``(c0, r0, c1, r1)``, half-open, as
    :func:`~coordexp.rollout.boxraster.box_pixel_rects` gives: a whole-bin box's exact raster)."""
    first = rasters.first
    pair, rank = expand_ranges(np.take(first, rings + 1) - np.take(first, rings))
    mine = np.take(np.take(first, rings), pair) + rank
    column = np.take(rasters.column, mine)
    box = np.take(rects, pair, axis=0)
    inside = (column >= box[:, 0]) & (column < box[:, 2])
    top = np.minimum(np.take(rasters.hi, mine), box[:, 3])
    shared = top - np.maximum(np.take(rasters.lo, mine), box[:, 1])
    return np.bincount(pair, weights=np.maximum(shared, 0.0) * inside, minlength=rings.size)


__all__ = [
    "ColumnRasters",
    "expand_ranges",
    "pair_intersections",
    "rasterize_rings",
    "rect_intersections",
]
