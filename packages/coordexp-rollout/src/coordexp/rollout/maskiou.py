"""Geometries in bins and their mask IoU (spec 03 §3.4 step 2; invariant E8).

A geometry is a CoordJSON geometry: ``geom_key`` (``"bbox_2d"`` or ``"poly"``) and its flat
``values`` in bins (0..999). :func:`as_geometry` accepts :class:`Geometry`, any object with
``geom_key`` and ``values`` attributes (``coordexp.core.coordjson.serialize.CoordObject``), or a
``(geom_key, values)`` pair.

Mask IoU follows COCO polygon semantics:

1. clamp every value to [0, 999] and project it onto an R×R canvas as ``v·(R−1)/999``;
2. a bbox becomes the quad ``(x1,y1),(x2,y1),(x2,y2),(x1,y2)`` after min/max, a poly is one ring;
3. pycocotools rasterizes each ring to an RLE (``frPyObjects``) and computes the RLE IoU.

A rasterization or IoU error yields IoU 0 and is counted. A shape whose raster is empty (for
example one smaller than about a pixel: at R = 256 a pixel is 999/255 ≈ 3.9 bins) has IoU 0 with
everything, itself included, because pycocotools defines the IoU of two empty masks as 0.

Box pairs are rasterized too. Exact continuous box IoU is *not* equivalent to the rasterized
value (the raster snaps edges to the pixel grid), so the "exact box IoU where equivalent"
shortcut of the spec never applies; ``test_rollout_maskiou.py`` pins a counterexample.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
from pycocotools import mask as coco_mask

from coordexp.core.errors import CoordexpError

BBOX_KEY = "bbox_2d"
POLY_KEY = "poly"
MAX_BIN = 999
MIN_RESOLUTION = 16


def _to_values(raw: Any) -> tuple[float, ...]:
    try:
        items = tuple(raw)
    except TypeError as exc:
        raise CoordexpError(f"geometry values must be a sequence of bins, got {type(raw).__name__}") from exc
    out = []
    for pos, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise CoordexpError(f"geometry values[{pos}] must be a real number (a bin), got {item!r}")
        value = float(item)
        if not math.isfinite(value):
            raise CoordexpError(f"geometry values[{pos}] must be finite, got {item!r}")
        out.append(value)
    return tuple(out)


def _check_geom_key(instance: Geometry, attribute: attrs.Attribute, value: object) -> None:
    if value not in (BBOX_KEY, POLY_KEY):
        raise CoordexpError(f"geom_key must be {BBOX_KEY!r} or {POLY_KEY!r}, got {value!r}")


def _check_arity(instance: Geometry, attribute: attrs.Attribute, values: tuple[float, ...]) -> None:
    if instance.geom_key == BBOX_KEY and len(values) != 4:
        raise CoordexpError(f"a {BBOX_KEY} geometry needs 4 values [x1, y1, x2, y2], got {len(values)}")
    if instance.geom_key == POLY_KEY and (len(values) % 2 or len(values) < 6):
        raise CoordexpError(
            f"a {POLY_KEY} geometry needs an even number (>= 6) of values [x1, y1, x2, y2, ...], "
            f"got {len(values)}"
        )


@attrs.frozen
class Geometry:
    """One CoordJSON geometry in bins.

    ``values`` is flat: ``[x1, y1, x2, y2]`` for ``bbox_2d``, ``[x1, y1, ..., xn, yn]`` (n >= 3)
    for ``poly``. Values are stored as floats; they are normally integral bins.
    """

    geom_key: str = attrs.field(validator=_check_geom_key)
    values: tuple[float, ...] = attrs.field(converter=_to_values, validator=_check_arity)

    def points(self) -> np.ndarray:
        """The geometry's points in bins, float64 ``[n, 2]`` as (x, y).

        A bbox gives its four corners in the order (x1,y1),(x2,y1),(x2,y2),(x1,y2) after min/max;
        a poly gives its vertices in stored order. No clamping.
        """
        return np.asarray(_ring_values(self), dtype=np.float64).reshape(-1, 2)


def as_geometry(obj: Any) -> Geometry:
    """Normalize ``obj`` to a :class:`Geometry`.

    Accepts a :class:`Geometry`, an object with ``geom_key`` and ``values`` attributes, or a
    ``(geom_key, values)`` pair. Raises :class:`CoordexpError` on anything else.
    """
    if isinstance(obj, Geometry):
        return obj
    if hasattr(obj, "geom_key") and hasattr(obj, "values"):
        return Geometry(obj.geom_key, obj.values)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str):
        return Geometry(obj[0], obj[1])
    raise CoordexpError(
        "expected a geometry: Geometry, an object with geom_key/values attributes, or a "
        f"(geom_key, values) pair; got {type(obj).__name__}"
    )


def as_geometries(objs: Sequence[Any], side: str) -> list[Geometry]:
    """Normalize a sequence of geometries; errors name ``side`` and the index (e.g. ``preds[3]``)."""
    out = []
    for index, obj in enumerate(objs):
        try:
            out.append(as_geometry(obj))
        except CoordexpError as exc:
            raise CoordexpError(f"{side}[{index}]: {exc}") from exc
    return out


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if it is an int >= 16, else raise :class:`CoordexpError`."""
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, numbers.Integral)
        or resolution < MIN_RESOLUTION
    ):
        raise CoordexpError(f"maskiou resolution must be an int >= {MIN_RESOLUTION}, got {resolution!r}")
    return int(resolution)


def _ring_values(geometry: Geometry) -> tuple[float, ...]:
    """Flat ring ``[x, y, ...]`` in bins (same point order as :meth:`Geometry.points`)."""
    if geometry.geom_key == POLY_KEY:
        return geometry.values
    x1, y1, x2, y2 = geometry.values
    lo_x, hi_x = (x1, x2) if x1 <= x2 else (x2, x1)
    lo_y, hi_y = (y1, y2) if y1 <= y2 else (y2, y1)
    return (lo_x, lo_y, hi_x, lo_y, hi_x, hi_y, lo_x, hi_y)


@attrs.frozen
class PointStack:
    """The clamped points of several geometries in one array.

    ``points``: float64 ``[T, 2]`` (x, y) clamped to [0, 999]; geometry i owns rows
    ``offsets[i]:offsets[i+1]`` (``offsets``: int64 ``[n+1]``).
    """

    points: np.ndarray
    offsets: np.ndarray


def stack_points(geometries: Sequence[Geometry]) -> PointStack:
    """Stack the clamped points of ``geometries`` (bbox: its 4 corners; poly: its vertices)."""
    rings = [_ring_values(g) for g in geometries]
    offsets = np.zeros(len(rings) + 1, dtype=np.int64)
    np.cumsum([len(r) // 2 for r in rings], out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(rings), dtype=np.float64, count=2 * int(offsets[-1]))
    return PointStack(np.clip(flat.reshape(-1, 2), 0.0, float(MAX_BIN)), offsets)


def canvas_rings(geometries: Sequence[Geometry], resolution: int) -> list[list[float]]:
    """Each geometry's ring on the R×R canvas: flat ``[x, y, ...]`` after clamp and projection."""
    stack = stack_points(geometries)
    flat = (stack.points * ((resolution - 1) / MAX_BIN)).reshape(-1).tolist()
    bounds = (2 * stack.offsets).tolist()
    return [flat[start:end] for start, end in itertools.pairwise(bounds)]


@attrs.frozen
class RasterBatch:
    """Rasterized geometries: ``rles[i]`` is a pycocotools RLE dict, or None when it failed."""

    rles: tuple[dict | None, ...]


def rasterize(geometries: Sequence[Geometry], resolution: int) -> RasterBatch:
    """Rasterize each geometry as one polygon ring on an R×R canvas (COCO polygon semantics).

    One pycocotools call covers the batch; if it raises, each ring is retried alone so that only
    the failing ones are marked (``None``).
    """
    resolution = check_resolution(resolution)
    rings = canvas_rings(geometries, resolution)
    if not rings:
        return RasterBatch(())
    try:
        return RasterBatch(tuple(coco_mask.frPyObjects(rings, resolution, resolution)))
    except Exception:  # noqa: BLE001 - pycocotools raises bare Exception; failures are isolated below
        rles: list[dict | None] = []
        for ring in rings:
            try:
                rles.append(coco_mask.frPyObjects([ring], resolution, resolution)[0])
            except Exception:  # noqa: BLE001 - a raster error gives IoU 0 (spec 03 §3.4)
                rles.append(None)
        return RasterBatch(tuple(rles))


@attrs.frozen
class MaskIoUMatrix:
    """Mask IoU of requested (pred, gt) pairs.

    ``values``: float64 ``[P, G]``; requested entries lie in [0, 1], entries that were not
    requested are NaN. ``raster_errors``: number of requested pairs forced to 0 because a
    rasterization or the IoU computation raised.
    """

    values: np.ndarray
    raster_errors: int


def _pairs_mask(
    candidates: np.ndarray | Sequence[tuple[int, int]] | None, n_pred: int, n_gt: int
) -> np.ndarray:
    if candidates is None:
        return np.ones((n_pred, n_gt), dtype=bool)
    arr = np.asarray(candidates)
    if arr.dtype == bool:
        if arr.shape != (n_pred, n_gt):
            raise CoordexpError(f"candidate mask must have shape ({n_pred}, {n_gt}), got {arr.shape}")
        return arr
    if arr.size == 0:
        return np.zeros((n_pred, n_gt), dtype=bool)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise CoordexpError(
            f"candidates must be a bool [P, G] mask or integer (pred_idx, gt_idx) pairs [K, 2], "
            f"got dtype {arr.dtype} shape {arr.shape}"
        )
    if (arr < 0).any() or (arr[:, 0] >= n_pred).any() or (arr[:, 1] >= n_gt).any():
        raise CoordexpError(f"candidate pair out of range for {n_pred} predictions x {n_gt} GT objects")
    mask = np.zeros((n_pred, n_gt), dtype=bool)
    mask[arr[:, 0], arr[:, 1]] = True
    return mask


def _iou_block(pred_rles: list[dict], gt_rles: list[dict]) -> np.ndarray:
    """IoU ``[len(pred_rles), len(gt_rles)]`` with one pycocotools call, or row by row if it raises.

    A row whose call raises is NaN (reported as a raster error by the caller).
    """
    crowd = [0] * len(gt_rles)
    shape = (len(pred_rles), len(gt_rles))
    try:
        return np.asarray(coco_mask.iou(pred_rles, gt_rles, crowd), dtype=np.float64).reshape(shape)
    except Exception:  # noqa: BLE001 - pycocotools raises bare Exception; isolate the failing rows
        rows = []
        for rle in pred_rles:
            try:
                rows.append(np.asarray(coco_mask.iou([rle], gt_rles, crowd), dtype=np.float64).reshape(-1))
            except Exception:  # noqa: BLE001 - an IoU error is a raster error: IoU 0, counted
                rows.append(np.full(len(gt_rles), np.nan))
        return np.stack(rows)


def maskiou_matrix(
    preds: Sequence[Any],
    gts: Sequence[Any],
    candidates: np.ndarray | Sequence[tuple[int, int]] | None = None,
    resolution: int = 256,
) -> MaskIoUMatrix:
    """Mask IoU between predictions and GT objects, on requested pairs only.

    ``candidates`` is None (all pairs), a bool ``[P, G]`` mask, or integer ``(pred_idx, gt_idx)``
    pairs. Only geometries that occur in a requested pair are rasterized. pycocotools evaluates
    the rectangle "rows with a request × columns with a request" in one call: decoding the RLE
    strings dominates its cost and happens once per call, so this is about twice as fast as one
    call per row. Entries of that rectangle that were not requested are discarded (NaN). A raster
    or IoU error gives 0 and is counted in ``raster_errors``.
    """
    pred_geoms = as_geometries(preds, "preds")
    gt_geoms = as_geometries(gts, "gts")
    resolution = check_resolution(resolution)
    n_pred, n_gt = len(pred_geoms), len(gt_geoms)
    mask = _pairs_mask(candidates, n_pred, n_gt)
    values = np.full((n_pred, n_gt), np.nan, dtype=np.float64)
    if not mask.any():
        return MaskIoUMatrix(values, 0)

    pred_rows = np.flatnonzero(mask.any(axis=1))
    gt_cols = np.flatnonzero(mask.any(axis=0))
    pred_rles = rasterize([pred_geoms[i] for i in pred_rows], resolution).rles
    gt_rles = rasterize([gt_geoms[j] for j in gt_cols], resolution).rles
    pred_ok = np.array([rle is not None for rle in pred_rles], dtype=bool)
    gt_ok = np.array([rle is not None for rle in gt_rles], dtype=bool)

    block = np.full((pred_rows.size, gt_cols.size), np.nan)
    if pred_ok.any() and gt_ok.any():
        block[np.ix_(pred_ok, gt_ok)] = _iou_block(
            [rle for rle in pred_rles if rle is not None], [rle for rle in gt_rles if rle is not None]
        )
    requested = mask[np.ix_(pred_rows, gt_cols)]
    failed = requested & ~np.isfinite(block)
    block = np.where(failed, 0.0, np.clip(block, 0.0, 1.0))
    values[np.ix_(pred_rows, gt_cols)] = np.where(requested, block, np.nan)
    return MaskIoUMatrix(values, int(failed.sum()))


def mask_iou(a: Any, b: Any, resolution: int = 256) -> float:
    """Mask IoU of two geometries (see module docstring); 0.0 on a raster error."""
    return float(maskiou_matrix([a], [b], None, resolution).values[0, 0])
