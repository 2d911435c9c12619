"""Dense region labels for vision pretraining: which object each merged vision token belongs to.

The vision tower of Qwen3-VL emits one token per merged cell (``patch_size · merge_size`` pixels
square, 32 for Qwen3-VL) in row-major order over the merged grid of the (possibly resized) image.
:func:`region_labels` gives every cell a class id:

* ``0`` (background) unless the cell's centre lies inside some object's box;
* otherwise the desc id of the smallest such box (ties: the earlier object), so a small object
  drawn over a large one keeps its cells;
* and the cell holding an object's box centre always carries that object's id (smaller boxes are
  written last), so an object smaller than a cell still owns one cell.

With ``subcells = s > 1`` each merged cell is split into ``s × s`` sub-cells, and the rules above
apply on that finer grid: a token then predicts ``s²`` labels, which carry where the box edges
fall inside its cell (to ``cell / s``) as well as what the object is.

Geometry is read in normalized coordinates (bin / 999, spec 01), so the labels do not depend on
the pixel size the processor resized to. A polygon counts as its bounding box.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from coordexp.core.coordjson.serialize import CoordObject
from coordexp.core.errors import ConfigError

BACKGROUND = 0


@attrs.frozen
class RegionVocab:
    """The closed set of descs a region head predicts; id 0 is background, desc k is ``k + 1``."""

    descs: tuple[str, ...] = attrs.field(converter=tuple)
    #: desc → class id, built once (``ids`` runs for every image of every batch)
    _index: dict[str, int] = attrs.field(init=False, eq=False, repr=False)

    @descs.validator
    def _check(self, _attribute: attrs.Attribute, descs: tuple[str, ...]) -> None:
        if not descs:
            raise ConfigError("vision_pretrain.data", "the training data has no objects, so no desc to learn")
        if list(descs) != sorted(set(descs)):
            raise ConfigError("vision_pretrain.vocab", "descs must be unique and sorted")

    @_index.default
    def _build_index(self) -> dict[str, int]:
        return {desc: k + 1 for k, desc in enumerate(self.descs)}

    @property
    def n_classes(self) -> int:
        """Number of head outputs: the descs plus background."""
        return len(self.descs) + 1

    def ids(self, objects: Sequence[CoordObject]) -> np.ndarray:
        """Class id of each object (int64, shape ``(n,)``); an unknown desc raises ConfigError."""
        try:
            return np.array([self._index[obj.desc] for obj in objects], dtype=np.int64)
        except KeyError as exc:
            raise ConfigError("vision_pretrain.vocab", f"desc {exc.args[0]!r} is not in the region vocabulary") from None


def normalized_boxes(objects: Sequence[CoordObject]) -> np.ndarray:
    """``(n, 4)`` float64 ``x1, y1, x2, y2`` in [0, 1]: the bbox, or a polygon's bounding box."""
    boxes = np.empty((len(objects), 4), dtype=np.float64)
    for row, obj in enumerate(objects):
        values = np.asarray(obj.values, dtype=np.float64)
        xs, ys = values[0::2], values[1::2]
        boxes[row] = (xs.min(), ys.min(), xs.max(), ys.max())
    return boxes / 999.0


@attrs.frozen
class RegionLabels:
    """Per-cell targets of one image, both of shape ``(grid_h · grid_w · subcells²,)``: merged cells
    in row-major order, and within each cell its sub-cells in row-major order.

    ``classes`` are int64 class ids (0 = background); ``centres`` is True on the (sub-)cell that
    holds an object's box centre (where per-object accuracy is read).
    """

    classes: np.ndarray
    centres: np.ndarray


def region_labels(
    objects: Sequence[CoordObject], vocab: RegionVocab, grid_h: int, grid_w: int, subcells: int = 1
) -> RegionLabels:
    """Label the ``grid_h × grid_w`` merged cells of one image, ``subcells²`` labels per cell
    (rules in the module docstring)."""
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"merged grid must be at least 1x1, got {grid_h}x{grid_w}")
    if subcells < 1:
        raise ValueError(f"subcells must be >= 1, got {subcells}")
    fine = _grid_labels(objects, vocab, grid_h * subcells, grid_w * subcells)
    if subcells == 1:
        return fine

    def token_major(values: np.ndarray) -> np.ndarray:
        return values.reshape(grid_h, subcells, grid_w, subcells).transpose(0, 2, 1, 3).reshape(-1)

    return RegionLabels(token_major(fine.classes), token_major(fine.centres))


def _grid_labels(
    objects: Sequence[CoordObject], vocab: RegionVocab, grid_h: int, grid_w: int
) -> RegionLabels:
    """The module's rules on a ``grid_h × grid_w`` grid, row-major."""
    cells = grid_h * grid_w
    classes = np.full(cells, BACKGROUND, dtype=np.int64)
    centres = np.zeros(cells, dtype=bool)
    if not objects:
        return RegionLabels(classes, centres)
    ids = vocab.ids(objects)
    boxes = normalized_boxes(objects)
    u = (np.arange(grid_w) + 0.5) / grid_w
    v = (np.arange(grid_h) + 0.5) / grid_h
    inside_x = (boxes[:, 0:1] <= u) & (u <= boxes[:, 2:3])  # (n, grid_w)
    inside_y = (boxes[:, 1:2] <= v) & (v <= boxes[:, 3:4])  # (n, grid_h)
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).reshape(len(objects), cells)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # argmin over objects of the area where inside, +inf elsewhere: the first smallest box wins.
    owner = np.where(inside, area[:, None], np.inf).argmin(axis=0)
    covered = inside.any(axis=0)
    classes[covered] = ids[owner[covered]]
    cx = np.minimum(((boxes[:, 0] + boxes[:, 2]) / 2 * grid_w).astype(np.int64), grid_w - 1)
    cy = np.minimum(((boxes[:, 1] + boxes[:, 3]) / 2 * grid_h).astype(np.int64), grid_h - 1)
    # Write centres largest box first and, among equal areas, later objects first, so the last
    # write (which wins) is the smallest box, earliest object: the same rule as for coverage.
    for k in np.lexsort((-np.arange(len(objects)), -area)):
        cell = cy[k] * grid_w + cx[k]
        classes[cell] = ids[k]
        centres[cell] = True
    return RegionLabels(classes, centres)
