"""Object ordering (spec 01 §1.6).

`sorted`: a stable sort by the anchor `(y1, x1)` (a polygon's first vertex after §1.7), ties keep
source order. `random`: a per-epoch permutation drawn from NumPy's PCG64 seeded with the first 8
bytes (big-endian) of `sha256(f"{seed}:{epoch}:{key}")`, so it depends only on (seed, epoch, key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from coordexp.core.coordjson.serialize import CoordObject


def anchor(obj: CoordObject) -> tuple[int, int]:
    """The sort anchor `(y, x)` of an object: its first (x, y) pair, in bins."""
    return (obj.values[1], obj.values[0])


def sort_objects(objects: Sequence[CoordObject]) -> tuple[tuple[CoordObject, ...], bool]:
    """Stable-sort by anchor; return the sorted tuple and whether the order changed."""
    ordered = tuple(sorted(objects, key=anchor))
    changed = any(a is not b for a, b in zip(ordered, objects, strict=True))
    return ordered, changed


def epoch_seed(seed: int, epoch: int, key: str) -> int:
    """The 64-bit PCG64 seed of one record in one epoch: sha256(f"{seed}:{epoch}:{key}")[:8], big-endian."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def random_order(
    objects: Sequence[CoordObject], *, seed: int, epoch: int, key: str
) -> tuple[CoordObject, ...]:
    """The `random`-ordering GT order of `objects` for (seed, epoch, record key)."""
    rng = np.random.Generator(np.random.PCG64(epoch_seed(seed, epoch, key)))
    permutation = rng.permutation(len(objects))
    return tuple(objects[int(i)] for i in permutation)
