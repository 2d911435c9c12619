"""The validated, in-memory form of one JSONL line (spec 01 §1.1).

GT geometry is held as norm1000 bins in `CoordObject`s (the core's CoordJSON value object), after
polygon canonicalization (§1.7) and, for `sorted` ordering, in GT order (§1.6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from coordexp.core.coordjson.serialize import CoordObject

RECORD_KEYS: frozenset[str] = frozenset({"images", "width", "height", "objects", "id", "summary", "metadata"})
REQUIRED_RECORD_KEYS: tuple[str, ...] = ("images", "width", "height", "objects")
OBJECT_KEYS: frozenset[str] = frozenset({"desc", "bbox_2d", "poly", "poly_points"})
GEOMETRY_KEYS: tuple[str, ...] = ("bbox_2d", "poly")
# Keys of older formats and the key that replaces each (spec 01 §1.1 `legacy_key`).
LEGACY_OBJECT_KEYS: dict[str, str] = {"bbox": "bbox_2d", "polygon": "poly", "line": "poly"}


@attrs.frozen(kw_only=True)
class Record:
    """One training/eval sample.

    `image` is the absolute path (the JSONL's directory joined with `image_ref`, normalized);
    `image_ref` is the path exactly as written in the record, which eval artifacts copy.
    `width`/`height` are pixels and equal the decoded image size. `objects` holds bins 0..999.
    `metadata` and `summary` are the parsed JSON values (None when absent); treat them as
    read-only. `source_file`/`source_line` (1-based) locate the record for error messages.
    """

    id: str
    image: Path
    image_ref: str
    width: int
    height: int
    objects: tuple[CoordObject, ...]
    metadata: Any = None
    summary: Any = None
    source_file: str
    source_line: int

    @property
    def where(self) -> str:
        """`file:line` of the record, for messages."""
        return f"{self.source_file}:{self.source_line}"
