"""Geometries in bins and their mask IoU (spec 03 §3.4 step 2; invariant E8).

A geometry is a CoordJSON geometry: ``geom_key`` (``"bbox_2d"`` or ``"poly"``) and its flat
``values`` in bins (0..999). :func:`as_geometry` accepts :class:`Geometry`, any object with
``geom_key`` and ``values`` attributes (``coordexp.core.coordjson.serialize.CoordObject``), or a
``(geom_key, values)`` pair.

Mask IoU follows COCO polygon semantics:

1. clamp every value to [0, 999] and project it onto an R×R canvas as ``v·(R−1)/999``;
2. a bbox becomes the quad ``(x1,y1),(x2,y1),(x2,y2),(x1,y2)`` after min/max, a poly is one ring;
3. each ring is rasterized as pycocotools does (``frPyObjects``) and the IoU is pycocotools' RLE
   IoU.

A shape whose raster is empty (for example one smaller than about a pixel: at R = 256 a pixel is
999/255 ≈ 3.9 bins) has IoU 0 with everything, itself included, because pycocotools defines the
IoU of two empty masks as 0.

Box pairs use the *rasterized* IoU too. Exact continuous box IoU is *not* equivalent to it (the
raster snaps edges to the pixel grid), so the "exact box IoU where equivalent" shortcut of the
spec never applies; ``test_rollout_maskiou.py`` pins a counterexample. What is exact is the raster
itself: a whole-bin box rasterizes to a pixel rectangle that :mod:`coordexp.rollout.boxraster`
writes down in closed form, so box–box pairs need no raster at all. Pairs involving a polygon use
:mod:`coordexp.rollout.polyraster`, which computes pycocotools' polygon raster in closed form per
pixel column (equal pixel for pixel, IoUs equal to the bit) for all pairs of a decode batch in one
pass (:func:`maskiou_between_many`); at the bench's decode batch of 16 that costs about half of
pycocotools' per-sample calls (whose RLE string encoding and decoding dominated). pycocotools itself
remains in :func:`rasterize`, the reference the tests compare with. Closed-form rasters cannot fail
on finite input, so ``raster_errors`` (spec 03 §3.4: a raster error gives IoU 0 and is counted)
stays 0.

:class:`GeometryBatch` stacks a sample's geometries once; matching and OT work on it.
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
from coordexp.rollout.boxraster import box_pixel_rects, rect_areas, rect_iou_matrix, rect_ious, rect_overlaps
from coordexp.rollout.polyraster import (
    ColumnRasters,
    expand_ranges,
    pair_intersections,
    rasterize_rings,
    rect_intersections,
)

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


def _box_ring(values: Sequence[float]) -> tuple[float, ...]:
    """The quad ``(x1,y1),(x2,y1),(x2,y2),(x1,y2)`` of a bbox after min/max, flat."""
    x1, y1, x2, y2 = values
    lo_x, hi_x = (x1, x2) if x1 <= x2 else (x2, x1)
    lo_y, hi_y = (y1, y2) if y1 <= y2 else (y2, y1)
    return (lo_x, lo_y, hi_x, lo_y, hi_x, hi_y, lo_x, hi_y)


def _ring_values(geometry: Geometry) -> Sequence[float]:
    """Flat ring ``[x, y, ...]`` in bins (same point order as :meth:`Geometry.points`)."""
    if geometry.geom_key == POLY_KEY:
        return geometry.values
    return _box_ring(geometry.values)


@attrs.frozen
class PointStack:
    """The clamped points of several geometries in one array.

    ``points``: float64 ``[T, 2]`` (x, y) clamped to [0, 999]; geometry i owns rows
    ``offsets[i]:offsets[i+1]`` (``offsets``: int64 ``[n+1]``).
    """

    points: np.ndarray
    offsets: np.ndarray


def _stack_rings(rings: Sequence[Sequence[float]], int_values: bool = False) -> PointStack:
    """``int_values``: every value is a Python int (read as int64, then converted: cheaper per value
    than reading ints as floats, same floats)."""
    offsets = np.fromiter(
        itertools.accumulate((len(r) >> 1 for r in rings), initial=0), dtype=np.int64, count=len(rings) + 1
    )
    values = itertools.chain.from_iterable(rings)
    count = 2 * int(offsets[-1])
    if int_values:
        flat = np.fromiter(values, dtype=np.int64, count=count).astype(np.float64)
    else:
        flat = np.fromiter(values, dtype=np.float64, count=count)
    points = flat.reshape(-1, 2)
    np.minimum(np.maximum(points, 0.0, out=points), float(MAX_BIN), out=points)
    return PointStack(points, offsets)


def stack_points(geometries: Sequence[Geometry]) -> PointStack:
    """Stack the clamped points of ``geometries`` (bbox: its 4 corners; poly: its vertices)."""
    return _stack_rings([_ring_values(g) for g in geometries])


def _to_canvas(points: np.ndarray, resolution: int) -> np.ndarray:
    """Clamped bin coordinates (float64, any shape) projected onto the R×R canvas: ``v·(R−1)/999``."""
    return points * ((resolution - 1) / MAX_BIN)


def canvas_rings(geometries: Sequence[Geometry], resolution: int) -> list[list[float]]:
    """Each geometry's ring on the R×R canvas: flat ``[x, y, ...]`` after clamp and projection."""
    stack = stack_points(geometries)
    flat = _to_canvas(stack.points, resolution).reshape(-1).tolist()
    bounds = (2 * stack.offsets).tolist()
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@attrs.frozen(eq=False)
class GeometryBatch:
    """Several geometries in bins, stacked once for every vectorized step of matching and OT.

    ``keys``/``values``: each geometry's ``geom_key`` and flat values, as given. ``is_box``: bool
    ``[n]``. ``stack``: the clamped points (:func:`stack_points`; a bbox's 4 corners in the order
    (x1,y1),(x2,y1),(x2,y2),(x1,y2) after min/max). ``aabb``: float64 ``[n, 4]`` ``(x1, y1, x2, y2)``
    of the clamped points. ``whole``: bool ``[n]``, geometries whose AABB is on whole bins (its pixel
    rectangle is exact, :mod:`coordexp.rollout.boxraster`); ``exact_box``: the whole boxes (their
    raster has a closed form).

    Build it with :meth:`of` from untrusted input (validated like :func:`as_geometries`), or with
    :meth:`from_bins` from CoordJSON geometries that were validated where they were made.
    """

    keys: tuple[str, ...]
    values: tuple[Sequence[float], ...]
    is_box: np.ndarray
    stack: PointStack
    aabb: np.ndarray
    whole: np.ndarray
    exact_box: np.ndarray

    @classmethod
    def of(cls, geometries: Sequence[Any], side: str = "geometries") -> GeometryBatch:
        """Validate ``geometries`` (:func:`as_geometries`; errors name ``side``) and stack them."""
        checked = as_geometries(geometries, side)
        return cls._stacked([g.geom_key for g in checked], [g.values for g in checked], whole_bins=False)

    @classmethod
    def from_bins(cls, keys: Sequence[str], values: Sequence[Sequence[int]]) -> GeometryBatch:
        """Stack CoordJSON geometries without re-validating them.

        The caller guarantees what :class:`~coordexp.core.coordjson.serialize.CoordObject` and a
        valid :class:`~coordexp.core.coordjson.parse.ParsedRecord` guarantee: ``keys[i]`` is
        ``"bbox_2d"`` (4 values) or ``"poly"`` (an even number >= 6 of values) and the values are
        int bins. Only the lengths agreeing is checked.
        """
        return cls._stacked(keys, values, whole_bins=True)

    @classmethod
    def concat(cls, batches: Sequence[GeometryBatch]) -> tuple[GeometryBatch, list[int]]:
        """``batches`` as one batch (geometries in order) and each batch's first geometry index in
        it. Every field is a plain concatenation (point offsets shifted), so each geometry keeps its
        exact keys, values and clamped points: per-pair results on the joined batch are those on
        its parts (used to run one OT call for a whole decode batch)."""
        counts = [len(batch) for batch in batches]
        bases = list(itertools.accumulate(counts[:-1], initial=0))
        point_counts = [int(batch.stack.offsets[-1]) for batch in batches]
        point_bases = np.repeat(
            np.fromiter(itertools.accumulate(point_counts[:-1], initial=0), np.int64, len(batches)), counts
        )
        offsets = np.empty(sum(counts) + 1, dtype=np.int64)
        offsets[0] = 0
        np.add(np.concatenate([batch.stack.offsets[1:] for batch in batches]), point_bases, out=offsets[1:])
        joined = cls(
            keys=tuple(itertools.chain.from_iterable(batch.keys for batch in batches)),
            values=tuple(itertools.chain.from_iterable(batch.values for batch in batches)),
            is_box=np.concatenate([batch.is_box for batch in batches]),
            stack=PointStack(np.concatenate([batch.stack.points for batch in batches]), offsets),
            aabb=np.concatenate([batch.aabb for batch in batches]),
            whole=np.concatenate([batch.whole for batch in batches]),
            exact_box=np.concatenate([batch.exact_box for batch in batches]),
        )
        return joined, bases

    @classmethod
    def _stacked(
        cls, keys: Sequence[str], values: Sequence[Sequence[float]], *, whole_bins: bool
    ) -> GeometryBatch:
        keys, values = tuple(keys), tuple(values)
        if len(keys) != len(values):
            raise CoordexpError(f"GeometryBatch: {len(keys)} keys for {len(values)} value tuples")
        stack = _stack_rings(
            [v if k == POLY_KEY else _box_ring(v) for k, v in zip(keys, values, strict=True)],
            int_values=whole_bins,
        )
        is_box = np.fromiter((k == BBOX_KEY for k in keys), dtype=bool, count=len(keys))
        if keys:
            starts = stack.offsets[:-1]
            aabb = np.concatenate(
                [
                    np.minimum.reduceat(stack.points, starts, axis=0),
                    np.maximum.reduceat(stack.points, starts, axis=0),
                ],
                axis=1,
            )
        else:
            aabb = np.zeros((0, 4), dtype=np.float64)
        # The closed forms of the boxraster module need whole-bin extremes.
        whole = np.ones(len(keys), dtype=bool) if whole_bins else (aabb == np.floor(aabb)).all(axis=1)
        return cls(keys, values, is_box, stack, aabb, whole, is_box & whole)

    def __len__(self) -> int:
        return len(self.keys)

    def geometry(self, index: int) -> Geometry:
        """Geometry ``index`` as a :class:`Geometry` (unclamped, as given)."""
        return Geometry(self.keys[index], self.values[index])

    def pixel_rects(self, resolution: int) -> np.ndarray:
        """int64 ``[n, 4]`` pixel rectangles of the AABBs on the R×R canvas
        (:func:`~coordexp.rollout.boxraster.box_pixel_rects`): the raster itself for an exact box."""
        return box_pixel_rects(self.aabb, resolution)


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
    return RasterBatch(tuple(_rasterize_rings(canvas_rings(geometries, resolution), resolution)))


@attrs.frozen
class MaskIoUMatrix:
    """Mask IoU of requested (pred, gt) pairs.

    ``values``: float64 ``[P, G]``; requested entries lie in [0, 1], entries that were not
    requested are NaN. ``raster_errors``: number of requested pairs forced to 0 because a
    rasterization failed — always 0 with the closed-form rasters (module doc).
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


def _rasterize_rings(rings: Sequence[Sequence[float]], resolution: int) -> list[dict | None]:
    if not rings:
        return []
    try:
        return list(coco_mask.frPyObjects(rings, resolution, resolution))
    except Exception:  # noqa: BLE001 - pycocotools raises bare Exception; failures are isolated below
        rles: list[dict | None] = []
        for ring in rings:
            try:
                rles.append(coco_mask.frPyObjects([ring], resolution, resolution)[0])
            except Exception:  # noqa: BLE001 - a raster error gives IoU 0 (spec 03 §3.4)
                rles.append(None)
        return rles


def maskiou_between(
    pred: GeometryBatch,
    gt: GeometryBatch,
    mask: np.ndarray,
    resolution: int,
    gate: float | None = None,
) -> MaskIoUMatrix:
    """:func:`maskiou_matrix` on stacked geometries and a bool ``[P, G]`` request mask
    (:func:`maskiou_between_many` of one item)."""
    return maskiou_between_many([(pred, gt, mask)], resolution, gate)[0]


def maskiou_between_many(
    items: Sequence[tuple[GeometryBatch, GeometryBatch, np.ndarray]],
    resolution: int,
    gate: float | None = None,
) -> list[MaskIoUMatrix]:
    """:func:`maskiou_matrix` for several ``(pred, gt, bool [P, G] request mask)`` items (e.g. the
    samples of a decode batch); one result per item, equal to computing the items one by one.

    Exact shortcuts first (:mod:`coordexp.rollout.boxraster`): requested pairs of two exact boxes
    get the closed-form raster IoU, and pairs whose AABB pixel rectangles share no pixel get 0. The
    other requested pairs of *all* items are rasterized together (:func:`_raster_ious`), so the
    fixed NumPy cost of rasterizing is paid once per call. ``resolution`` must already be checked.

    ``gate`` (matching only): requested pairs whose IoU is provably below it are left NaN instead of
    computed. The bound is ``min(|R_a ∩ R_b|, |a|, |b|) / max(|a|, |b|)`` with ``R`` the pixel
    rectangles (which contain the rasters) and ``|a|`` raster areas. Every value that is computed
    is exact.
    """
    staged = [_StagedPairs.of(pred, gt, mask, resolution) for pred, gt, mask in items]
    pending = [k for k, stage in enumerate(staged) if stage.rest.size]
    if pending:
        found = _raster_ious([items[k][:2] for k in pending], [staged[k] for k in pending], resolution, gate)
        for k, pair_iou in zip(pending, found, strict=True):
            staged[k].pair_iou[staged[k].rest] = pair_iou
    return [stage.result() for stage in staged]


@attrs.frozen(eq=False)
class _StagedPairs:
    """One item of :func:`maskiou_between_many` after the exact shortcuts. ``values``: the ``[P, G]``
    result (NaN where not requested); ``flat``: the requested cells (row-major), whose IoUs
    ``pair_iou`` ``[K]`` are filled in; ``rest``: positions in ``flat`` still to rasterize, with
    their ``rows``/``cols``, AABB pixel rectangles ``pred_rects``/``gt_rects`` ``[R, 4]`` and shared
    rectangle pixels ``overlap``."""

    values: np.ndarray
    flat: np.ndarray
    pair_iou: np.ndarray
    rest: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    pred_rects: np.ndarray
    gt_rects: np.ndarray
    overlap: np.ndarray

    @classmethod
    def of(cls, pred: GeometryBatch, gt: GeometryBatch, mask: np.ndarray, resolution: int) -> _StagedPairs:
        none = np.zeros(0, dtype=np.int64)
        if pred.exact_box.all() and gt.exact_box.all():
            # Boxes only: every pair has its closed-form raster IoU; whole matrices are cheapest here.
            rects = box_pixel_rects(np.concatenate([pred.aabb, gt.aabb]), resolution)
            iou = rect_iou_matrix(rects[: len(pred)], rects[len(pred) :])
            return cls(np.where(mask, iou, np.nan), none, none, none, none, none, none, none, none)
        values = np.full(mask.shape, np.nan, dtype=np.float64)
        # Work on the requested pairs as flat [K] arrays (row-major order): a few dozen whole-array
        # operations on K values cost far less than the same operations on [P, G] broadcasts.
        flat = np.flatnonzero(mask)
        if not flat.size:
            return cls(values, none, none, none, none, none, none, none, none)
        rows, cols = np.divmod(flat, mask.shape[1])
        n_pred = len(pred)
        rects = box_pixel_rects(np.concatenate([pred.aabb, gt.aabb]), resolution)
        areas = rect_areas(rects)
        gt_rows = cols + n_pred
        # np.take: row gathers by fancy indexing cost several times more.
        pred_rects, gt_rects = np.take(rects, rows, axis=0), np.take(rects, gt_rows, axis=0)
        overlap = rect_overlaps(pred_rects, gt_rects)
        pair_iou = np.full(rows.size, np.nan)
        analytic = pred.exact_box[rows] & gt.exact_box[cols]
        # Rasters lie inside their AABB's pixel rectangle (boxraster module doc): disjoint ones give 0.
        apart = (overlap == 0.0) & ~analytic & pred.whole[rows] & gt.whole[cols]
        if np.count_nonzero(analytic):
            np.copyto(pair_iou, rect_ious(overlap, areas[rows], areas[gt_rows]), where=analytic)
        pair_iou[apart] = 0.0
        rest = (~(analytic | apart)).nonzero()[0]
        return cls(
            values,
            flat,
            pair_iou,
            rest,
            rows[rest],
            cols[rest],
            pred_rects[rest],
            gt_rects[rest],
            overlap[rest],
        )

    def result(self) -> MaskIoUMatrix:
        """The item's :class:`MaskIoUMatrix` once ``pair_iou`` is complete."""
        if self.flat.size:
            self.values.put(self.flat, self.pair_iou)
        return MaskIoUMatrix(self.values, 0)


def _raster_ious(
    items: Sequence[tuple[GeometryBatch, GeometryBatch]],
    staged: Sequence[_StagedPairs],
    resolution: int,
    gate: float | None,
) -> list[np.ndarray]:
    """IoU of every item's ``rest`` pairs (one float64 array per item, NaN where the ``gate`` bound
    excludes a pair) from one :func:`~coordexp.rollout.polyraster.rasterize_rings` call over every
    geometry of the items that is not an exact box (an exact box's raster is its pixel rectangle)."""
    batches = [batch for pair in items for batch in pair]
    bases = np.cumsum([0] + [len(batch) for batch in batches]).tolist()
    ring_of, rasters = _rasterize_inexact(batches, resolution)
    pred_geom = np.concatenate([stage.rows + bases[2 * k] for k, stage in enumerate(staged)])
    gt_geom = np.concatenate([stage.cols + bases[2 * k + 1] for k, stage in enumerate(staged)])
    pred_rects = np.concatenate([stage.pred_rects for stage in staged])
    gt_rects = np.concatenate([stage.gt_rects for stage in staged])
    pred_ring, gt_ring = np.take(ring_of, pred_geom), np.take(ring_of, gt_geom)
    # mode="clip": exact boxes (ring −1) read some ring's area, replaced by their rectangle's.
    pred_area = np.where(
        pred_ring >= 0, np.take(rasters.area, pred_ring, mode="clip"), rect_areas(pred_rects)
    )
    gt_area = np.where(gt_ring >= 0, np.take(rasters.area, gt_ring, mode="clip"), rect_areas(gt_rects))
    pair_iou = np.full(pred_geom.size, np.nan)
    computed = np.arange(pred_geom.size)
    if gate is not None and gate > 0.0:
        overlap = np.concatenate([stage.overlap for stage in staged])
        computed = computed[~(_iou_upper_bound(overlap, pred_area, gt_area) < gate)]
    pred_ring, gt_ring = pred_ring[computed], gt_ring[computed]
    shared = np.empty(computed.size)
    both = (pred_ring >= 0) & (gt_ring >= 0)
    if np.count_nonzero(both):
        shared[both] = pair_intersections(rasters, pred_ring[both], gt_ring[both])
    one = (~both).nonzero()[0]
    if one.size:
        # One side is an exact box (never both, or the pair would be analytic): its raster is its
        # rectangle, intersected with the other side's raster.
        box_is_gt = (gt_ring[one] < 0)[:, None]
        at = computed[one]
        rects = np.where(box_is_gt, np.take(gt_rects, at, axis=0), np.take(pred_rects, at, axis=0))
        shared[one] = rect_intersections(rasters, np.maximum(pred_ring[one], gt_ring[one]), rects)
    pair_iou[computed] = rect_ious(shared, pred_area[computed], gt_area[computed])
    bounds = np.cumsum([stage.rest.size for stage in staged])[:-1]
    return np.split(pair_iou, bounds)


def _rasterize_inexact(batches: Sequence[GeometryBatch], resolution: int) -> tuple[np.ndarray, ColumnRasters]:
    """Rasterize the geometries of ``batches`` (numbered in order across them) that are not exact
    boxes, in one call: (int64 ``[n]`` ring number per geometry, −1 for exact boxes; their
    :class:`~coordexp.rollout.polyraster.ColumnRasters`)."""
    inexact = ~np.concatenate([batch.exact_box for batch in batches])
    ring_of = np.where(inexact, np.cumsum(inexact) - 1, -1)
    picked = inexact.nonzero()[0]
    point_bases = np.cumsum([0] + [int(batch.stack.offsets[-1]) for batch in batches[:-1]])
    starts = np.concatenate(
        [batch.stack.offsets[:-1] + base for batch, base in zip(batches, point_bases.tolist(), strict=True)]
    )
    sizes = np.concatenate([np.diff(batch.stack.offsets) for batch in batches])
    sizes, starts = np.take(sizes, picked), np.take(starts, picked)
    owner, rank = expand_ranges(sizes)
    all_points = np.concatenate([batch.stack.points for batch in batches])
    points = np.take(all_points, np.take(starts, owner) + rank, axis=0)
    ring_offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(sizes)])
    return ring_of, rasterize_rings(_to_canvas(points, resolution), ring_offsets, resolution)


def _iou_upper_bound(overlap: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """``min(overlap, |a|, |b|) / max(|a|, |b|)`` per pair, all ``[K]`` (0 when both are empty;
    NaN stays NaN)."""
    larger = np.maximum(area_a, area_b)
    shared = np.minimum(np.minimum(overlap, area_a), area_b)
    with np.errstate(invalid="ignore"):
        return np.divide(shared, larger, out=np.zeros(overlap.shape), where=~(larger <= 0.0))


def maskiou_matrix(
    preds: Sequence[Any],
    gts: Sequence[Any],
    candidates: np.ndarray | Sequence[tuple[int, int]] | None = None,
    resolution: int = 256,
) -> MaskIoUMatrix:
    """Mask IoU between predictions and GT objects, on requested pairs only.

    ``candidates`` is None (all pairs), a bool ``[P, G]`` mask, or integer ``(pred_idx, gt_idx)``
    pairs. Only geometries that occur in a requested pair are rasterized, each once
    (:func:`maskiou_between`). Entries that were not requested are NaN. A raster or IoU error
    gives 0 and is counted in ``raster_errors``.
    """
    pred = GeometryBatch.of(preds, "preds")
    gt = GeometryBatch.of(gts, "gts")
    resolution = check_resolution(resolution)
    return maskiou_between(pred, gt, _pairs_mask(candidates, len(pred), len(gt)), resolution)


def mask_iou(a: Any, b: Any, resolution: int = 256) -> float:
    """Mask IoU of two geometries (see module docstring); 0.0 on a raster error."""
    return float(maskiou_matrix([a], [b], None, resolution).values[0, 0])
