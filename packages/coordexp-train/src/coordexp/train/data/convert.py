"""Converters to contract JSONL (spec 01 §1.1–1.2, §1.6–1.7): pixel-space JSONL and COCO JSON.

Pixel coordinates map to norm1000 bins with the core codec (`k = clamp(round(999·x/max(1,W−1)))`,
half-up); a pixel value outside [0, W] (x) or [0, H] (y) is a data error (`pixel_range`). After
binning, polygons are canonicalized (§1.7) and objects stable-sorted by anchor (§1.6). Output lines
are deterministic: fixed key order, `", "`/`": "` separators, UTF-8, one record per line.

Image references in the output are relative to the output file's directory (the loader's rule), so
the output must live in a directory that contains the images (`image_path` error otherwise).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from coordexp.core.codec import coord_token, pixels_to_bins
from coordexp.core.coordjson.serialize import CoordObject
from coordexp.core.errors import ConfigError, DataContractError
from coordexp.core.polygon import canonicalize_polygon
from coordexp.train.data.images import resolve_image_ref
from coordexp.train.data.jsonl import parse_json_line
from coordexp.train.data.ordering import sort_objects
from coordexp.train.data.records import GEOMETRY_KEYS, LEGACY_OBJECT_KEYS, OBJECT_KEYS, RECORD_KEYS

COORD_FORMS: tuple[str, ...] = ("int", "token")


@attrs.frozen
class ConversionSummary:
    """What a conversion wrote. `counts` holds `records`, `objects`, `bbox_2d`, `poly`,
    `degenerate_bbox`, `poly_canonicalized`, `reordered_records` and converter-specific
    counts (`poly_as_bbox`, `skipped_crowd`, `clipped_coords`, …)."""

    output: Path
    counts: Mapping[str, int]

    def summary_lines(self) -> list[str]:
        return [f"wrote {self.output}"] + [f"{key}: {value}" for key, value in sorted(self.counts.items())]


def check_coord_form(coord_form: str) -> str:
    if coord_form not in COORD_FORMS:
        raise ConfigError("coord_form", f"got {coord_form!r}; expected one of {', '.join(COORD_FORMS)}")
    return coord_form


def _pixel_values(raw: object, field: str) -> list[float]:
    if not isinstance(raw, list):
        raise DataContractError(
            "pixel_range", f"expected a JSON array of pixel numbers, got {type(raw).__name__}", field=field
        )
    values: list[float] = []
    for i, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataContractError(
                "pixel_range", f"{value!r} is not a finite pixel number", field=f"{field}[{i}]"
            )
        values.append(float(value))
    return values


def _axis_bins(values: Sequence[float], size: int, axis: str, field: str) -> list[int]:
    try:
        return [int(k) for k in pixels_to_bins(values, size)]
    except ValueError as exc:
        bad = next(v for v in values if not 0.0 <= v <= size)
        raise DataContractError(
            "pixel_range",
            f"{axis} = {bad!r} is outside [0, {size}] (image {'width' if axis == 'x' else 'height'} "
            f"{size} px); fix the annotation or the stored image size",
            field=field,
        ) from exc


def bin_pixel_geometry(
    desc: str, geom_key: str, values: Sequence[float], width: int, height: int, *, field: str
) -> tuple[CoordObject, bool]:
    """Bin one pixel-space geometry; return the object and whether polygon canonicalization changed it.

    bbox: `[x1, y1, x2, y2]` pixels with x1 ≤ x2, y1 ≤ y2 (`bbox_inverted` otherwise, `bbox_arity`
    for a wrong length). poly: flat `[x, y, …]`, even length ≥ 6 and ≥ 3 distinct vertices after
    binning and §1.7 cleaning (`poly_arity`). Raises DataContractError without file/line.
    """
    if geom_key == "bbox_2d":
        if len(values) != 4:
            raise DataContractError(
                "bbox_arity", f"bbox_2d must hold 4 pixel values, got {len(values)}", field=field
            )
        if values[2] < values[0] or values[3] < values[1]:
            raise DataContractError(
                "bbox_inverted",
                f"pixel box {list(values)} is inverted; store [x1,y1,x2,y2] with x1≤x2, y1≤y2",
                field=field,
            )
    elif len(values) % 2 or len(values) < 6:
        raise DataContractError(
            "poly_arity",
            f"poly must be a flat list of even length >= 6, got {len(values)} values",
            field=field,
        )
    xs = _axis_bins(values[0::2], width, "x", field)
    ys = _axis_bins(values[1::2], height, "y", field)
    bins = tuple(v for pair in zip(xs, ys, strict=True) for v in pair)
    if geom_key == "bbox_2d":
        return CoordObject(desc, "bbox_2d", bins), False
    try:
        canonical, changed = canonicalize_polygon(bins)
    except ValueError as exc:
        raise DataContractError("poly_arity", str(exc).removeprefix("poly_arity: "), field=field) from exc
    return CoordObject(desc, "poly", canonical), changed


def poly_bbox(values: Sequence[float]) -> list[float]:
    """The axis-aligned box `[min x, min y, max x, max y]` of a flat pixel polygon."""
    xs, ys = values[0::2], values[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def _coord_json(values: Sequence[int], coord_form: str) -> list[int] | list[str]:
    return [coord_token(v) for v in values] if coord_form == "token" else list(values)


def contract_line(
    *,
    image_ref: str,
    width: int,
    height: int,
    objects: Sequence[CoordObject],
    coord_form: str,
    record_id: Any = None,
    metadata: Any = None,
    summary: Any = None,
    has_metadata: bool = False,
    has_summary: bool = False,
) -> str:
    """One contract JSONL line (with the trailing newline) in the fixed key order
    id, images, width, height, objects, summary, metadata; objects as {desc, geometry}."""
    record: dict[str, Any] = {}
    if record_id is not None:
        record["id"] = record_id
    record["images"] = [image_ref]
    record["width"] = width
    record["height"] = height
    record["objects"] = [{"desc": o.desc, o.geom_key: _coord_json(o.values, coord_form)} for o in objects]
    if has_summary:
        record["summary"] = summary
    if has_metadata:
        record["metadata"] = metadata
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "), allow_nan=False) + "\n"


class Tally:
    """Counts of a conversion run (see ConversionSummary.counts)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter(
            {
                k: 0
                for k in (
                    "records",
                    "objects",
                    "bbox_2d",
                    "poly",
                    "degenerate_bbox",
                    "poly_canonicalized",
                    "reordered_records",
                )
            }
        )

    def add_record(self, objects: Sequence[CoordObject], canonicalized: int, reordered: bool) -> None:
        self.counts["records"] += 1
        self.counts["objects"] += len(objects)
        self.counts["poly_canonicalized"] += canonicalized
        self.counts["reordered_records"] += int(reordered)
        for o in objects:
            self.counts[o.geom_key] += 1
            if o.geom_key == "bbox_2d" and (o.values[0] == o.values[2] or o.values[1] == o.values[3]):
                self.counts["degenerate_bbox"] += 1


def output_ref(image: Path, out_dir: Path, shown: str) -> str:
    relative = os.path.relpath(image, out_dir)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        raise DataContractError(
            "image_path",
            f"image {shown!r} ({image}) is outside the output directory {out_dir}; write the output "
            "JSONL into a directory that contains the images (references may not escape it)",
            field="images[0]",
        )
    return Path(relative).as_posix()


def _size(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataContractError(
            "image_size", f"{key} must be an int >= 1 (image size in pixels), got {value!r}", field=key
        )
    return value


def _desc(raw: Mapping[str, Any]) -> str:
    desc = raw.get("desc")
    if not isinstance(desc, str) or not desc.strip():
        raise DataContractError("desc_empty", f"desc must be a non-blank string, got {desc!r}", field="desc")
    return desc


def _pixel_object(
    raw: object, index: int, width: int, height: int, bbox_only: bool
) -> tuple[CoordObject, bool]:
    try:
        if not isinstance(raw, Mapping):
            raise DataContractError(
                "record_shape", f"an object must be a JSON object, got {type(raw).__name__}"
            )
        for key in raw:
            if key in LEGACY_OBJECT_KEYS:
                raise DataContractError(
                    "legacy_key", f"legacy key {key!r}; use {LEGACY_OBJECT_KEYS[key]!r}", field=key
                )
            if key not in OBJECT_KEYS:
                raise DataContractError(
                    "unknown_key",
                    f"unknown object key {key!r}; allowed: {', '.join(sorted(OBJECT_KEYS))}",
                    field=key,
                )
        desc = _desc(raw)
        geom_keys = [k for k in GEOMETRY_KEYS if k in raw]
        if len(geom_keys) != 1:
            raise DataContractError(
                "geom_count", f"an object needs exactly one of 'bbox_2d' or 'poly', found {len(geom_keys)}"
            )
        geom_key = geom_keys[0]
        values = _pixel_values(raw[geom_key], geom_key)
        if geom_key == "poly" and "poly_points" in raw and raw["poly_points"] != len(values) // 2:
            raise DataContractError(
                "poly_arity",
                f"poly_points = {raw['poly_points']!r} but poly holds {len(values) // 2} vertices",
                field="poly_points",
            )
        if geom_key == "poly" and bbox_only:
            if len(values) % 2 or len(values) < 6:
                raise DataContractError(
                    "poly_arity",
                    f"poly must be a flat list of even length >= 6, got {len(values)} values",
                    field="poly",
                )
            geom_key, values = "bbox_2d", poly_bbox(values)
        return bin_pixel_geometry(desc, geom_key, values, width, height, field=geom_key)
    except DataContractError as exc:
        raise DataContractError(exc.rule, exc.message, object_index=index, field=exc.field) from exc


def convert_pixel_jsonl(
    src: str | Path, dst: str | Path, *, coord_form: str = "int", bbox_only: bool = False
) -> ConversionSummary:
    """Convert a pixel-space JSONL (contract shape, `bbox_2d`/`poly` in pixels) to contract JSONL.

    `bbox_only` exports each polygon as its pixel AABB (for `stage2_two_channel`). Raises the
    first DataContractError with `file:line`; writes nothing in that case.
    """
    check_coord_form(coord_form)
    src_path = Path(src).absolute()
    dst_path = Path(dst).absolute()
    if not src_path.is_file():
        raise DataContractError("jsonl_file", f"input {str(src)!r} not found", file=str(src))
    if src_path == dst_path:
        raise ConfigError("output", "the output file must differ from the input file")
    tally = Tally()
    lines: list[str] = []
    file = str(src_path)
    with src_path.open("rb") as handle:
        for line, data in enumerate(handle, start=1):
            raw = parse_json_line(data.rstrip(b"\n").rstrip(b"\r"), file=file, line=line)
            try:
                lines.append(
                    _convert_pixel_record(raw, src_path.parent, dst_path.parent, coord_form, bbox_only, tally)
                )
            except DataContractError as exc:
                raise exc.located(file=file, line=line) from exc
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    dst_path.write_text("".join(lines), encoding="utf-8", newline="\n")
    return ConversionSummary(dst_path, dict(tally.counts))


def _convert_pixel_record(
    raw: object, src_dir: Path, dst_dir: Path, coord_form: str, bbox_only: bool, tally: Tally
) -> str:
    if not isinstance(raw, Mapping):
        raise DataContractError("record_shape", f"a line must hold one JSON object, got {type(raw).__name__}")
    for key in raw:
        if key not in RECORD_KEYS:
            raise DataContractError(
                "unknown_key",
                f"unknown record key {key!r}; allowed: {', '.join(sorted(RECORD_KEYS))}",
                field=key,
            )
    images = raw.get("images")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
        raise DataContractError(
            "record_shape",
            f"images must be a list with exactly one path string, got {images!r}",
            field="images",
        )
    image_ref = output_ref(resolve_image_ref(images[0], src_dir), dst_dir, images[0])
    width, height = _size(raw, "width"), _size(raw, "height")
    raw_objects = raw.get("objects")
    if not isinstance(raw_objects, list):
        raise DataContractError(
            "record_shape", f"objects must be a list, got {raw_objects!r}", field="objects"
        )
    record_id = raw.get("id")
    if "id" in raw and not (
        (isinstance(record_id, int) and not isinstance(record_id, bool))
        or (isinstance(record_id, str) and record_id.strip())
    ):
        raise DataContractError(
            "record_shape", f"id must be a non-blank string or an int, got {record_id!r}", field="id"
        )
    converted = [_pixel_object(o, i, width, height, bbox_only) for i, o in enumerate(raw_objects)]
    objects, reordered = sort_objects([o for o, _ in converted])
    tally.add_record(objects, sum(changed for _, changed in converted), reordered)
    return contract_line(
        image_ref=image_ref,
        width=width,
        height=height,
        objects=objects,
        coord_form=coord_form,
        record_id=record_id,
        metadata=raw.get("metadata"),
        summary=raw.get("summary"),
        has_metadata="metadata" in raw,
        has_summary="summary" in raw,
    )
