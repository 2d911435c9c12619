"""The per-record rules of the JSONL data contract (spec 01 §1.1, §1.6, §1.7).

`check_record` turns one parsed JSON line into a `Record` or into every `DataContractError` the
line has (at most one per object, since an object's later checks depend on its earlier ones).

Rule ids of spec 01 §1.1: `geom_count`, `legacy_key`, `coord_range`, `bbox_inverted`,
`poly_arity`, `desc_empty`, `variant_geom`, `image_size`, `too_long` (`bbox_degenerate` is counted,
never raised). Rule ids this loader adds for cases the table leaves implicit:

* `json_syntax` — the line is not one valid UTF-8 JSON value (raised by the line reader);
* `duplicate_key` — a JSON object repeats a key (JSON libraries would keep the last silently);
* `record_shape` — the line or an object is not a JSON object, a required key is missing, or
  `images`/`objects`/`id` has the wrong type;
* `unknown_key` — a key outside the contract (with a close-match suggestion);
* `duplicate_id` — two records share an `id` (raised by the loader);
* `jsonl_file` — the JSONL path does not name a regular file (raised by the loader);
* `image_path` — absolute, escaping, malformed or missing image path;
* `image_decode` — the image file exists but PIL cannot read it;
* `bbox_arity` — `bbox_2d` does not hold exactly 4 values;
* `desc_not_nfc` — a desc is not NFC-normalized (Qwen tokenizers normalize to NFC, so the text
  could never be reproduced token-exactly).
"""

from __future__ import annotations

import unicodedata

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from coordexp.core.coordjson.serialize import CoordObject
from coordexp.core.errors import DataContractError
from coordexp.core.polygon import canonicalize_polygon
from coordexp.train.data.coords import parse_bin_array
from coordexp.train.data.images import ImageSizeReader, resolve_image_ref
from coordexp.train.data.ordering import sort_objects
from coordexp.train.data.records import (
    GEOMETRY_KEYS,
    LEGACY_OBJECT_KEYS,
    OBJECT_KEYS,
    RECORD_KEYS,
    REQUIRED_RECORD_KEYS,
    Record,
)


@attrs.frozen
class LengthCheck:
    """The `too_long` hook: `length_fn(record)` returns the encoded GT sequence length in tokens
    (the caller's tokenizer decides how: spec 04 §4.6 takes the max of the whole-string and the
    split encodings); records longer than `max_length` are a data error."""

    length_fn: Callable[[Record], int]
    max_length: int = attrs.field(validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class RuleConfig:
    """What the rules need besides the record: the JSONL's directory (absolute), the pixel cap
    (None = unchecked), whether the variant is bbox-only, whether to open images, the ordering
    mode and the optional `too_long` hook."""

    base_dir: Path
    max_pixels: int | None
    bbox_only: bool
    check_images: bool
    ordering: str
    length_check: LengthCheck | None = None


@attrs.frozen
class CheckedObject:
    obj: CoordObject
    degenerate: bool
    canonicalized: bool


@attrs.frozen
class RecordCheck:
    """Outcome of one line: the record (None when any error was found), the errors and counts."""

    record: Record | None
    errors: tuple[DataContractError, ...]
    degenerate_bbox_count: int = 0
    poly_canonicalized_count: int = 0
    reordered: bool = False
    num_objects: int = 0


def _suggest(key: str, allowed: frozenset[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_object(raw: object, index: int, *, bbox_only: bool) -> CheckedObject:
    """Validate one element of `objects`; raise the first DataContractError (object_index=index)."""
    try:
        return _check_object(raw, bbox_only)
    except DataContractError as exc:
        raise DataContractError(exc.rule, exc.message, object_index=index, field=exc.field) from exc


def _object_error(rule: str, message: str, field: str | None = None) -> DataContractError:
    """An object-level error; `check_object` adds the object index and the loader file:line."""
    return DataContractError(rule, message, field=field)


def _check_object(raw: object, bbox_only: bool) -> CheckedObject:
    if not isinstance(raw, Mapping):
        raise _object_error("record_shape", f"an object must be a JSON object, got {type(raw).__name__}")
    for key in raw:
        if key in LEGACY_OBJECT_KEYS:
            raise _object_error(
                "legacy_key",
                f"legacy key {key!r} is not accepted; use {LEGACY_OBJECT_KEYS[key]!r}"
                + (" (v1 has no line geometry)" if key == "line" else ""),
                key,
            )
    for key in raw:
        if key not in OBJECT_KEYS:
            raise _object_error(
                "unknown_key",
                f"unknown object key {key!r}{_suggest(key, OBJECT_KEYS)}; "
                f"allowed: {', '.join(sorted(OBJECT_KEYS))}",
                key,
            )
    desc = raw.get("desc")
    if not isinstance(desc, str) or not desc.strip():
        got = "missing" if "desc" not in raw else repr(desc)
        raise _object_error("desc_empty", f"desc must be a non-blank string, got {got}", "desc")
    if not unicodedata.is_normalized("NFC", desc):
        # Qwen tokenizers NFC-normalize their input, so a non-NFC desc could never be the exact
        # training target; it is reported rather than silently rewritten (descs are kept verbatim).
        raise _object_error(
            "desc_not_nfc",
            f"desc {desc!r} is not NFC-normalized (the tokenizer would turn it into "
            f"{unicodedata.normalize('NFC', desc)!r}); store unicodedata.normalize('NFC', desc)",
            "desc",
        )
    geom_keys = [k for k in GEOMETRY_KEYS if k in raw]
    if len(geom_keys) != 1:
        raise _object_error(
            "geom_count", f"an object needs exactly one of 'bbox_2d' or 'poly', found {len(geom_keys)}"
        )
    geom_key = geom_keys[0]
    if geom_key == "poly" and bbox_only:
        raise _object_error(
            "variant_geom",
            "poly objects are not supported by trainer_variant stage2_two_channel "
            "(bbox-only); export polygons as their bbox_2d or use another variant",
            "poly",
        )
    if "poly_points" in raw and geom_key != "poly":
        raise _object_error(
            "unknown_key", "'poly_points' is only allowed together with 'poly'", "poly_points"
        )
    values = parse_bin_array(raw[geom_key], geom_key)
    if geom_key == "bbox_2d":
        return _check_bbox(values, desc)
    return _check_poly(values, desc, raw.get("poly_points"), "poly_points" in raw)


def _check_bbox(values: tuple[int, ...], desc: str) -> CheckedObject:
    if len(values) != 4:
        raise _object_error(
            "bbox_arity", f"bbox_2d must hold exactly 4 values [x1, y1, x2, y2], got {len(values)}", "bbox_2d"
        )
    x1, y1, x2, y2 = values
    if x2 < x1 or y2 < y1:
        raise _object_error(
            "bbox_inverted",
            f"box {list(values)} is inverted; store [x1,y1,x2,y2] with x1≤x2, y1≤y2",
            "bbox_2d",
        )
    degenerate = x2 == x1 or y2 == y1
    return CheckedObject(CoordObject(desc, "bbox_2d", values), degenerate=degenerate, canonicalized=False)


def _check_poly(
    values: tuple[int, ...],
    desc: str,
    poly_points: Any,
    has_poly_points: bool,
) -> CheckedObject:
    if len(values) % 2 or len(values) < 6:
        raise _object_error(
            "poly_arity",
            f"poly must be a flat [x1, y1, x2, y2, ...] list of even length >= 6, got {len(values)} values",
            "poly",
        )
    if has_poly_points and (not _is_int(poly_points) or poly_points != len(values) // 2):
        raise _object_error(
            "poly_arity",
            f"poly_points = {poly_points!r} but poly holds {len(values) // 2} vertices",
            "poly_points",
        )
    try:
        canonical, changed = canonicalize_polygon(values)
    except ValueError as exc:
        raise _object_error("poly_arity", str(exc).removeprefix("poly_arity: "), "poly") from exc
    return CheckedObject(CoordObject(desc, "poly", tuple(canonical)), degenerate=False, canonicalized=changed)


def _record_id(raw: Mapping[str, Any], line: int) -> str:
    if "id" not in raw:
        return str(line - 1)
    value = raw["id"]
    if _is_int(value) or (isinstance(value, str) and value.strip()):
        return str(value)
    raise DataContractError(
        "record_shape", f"id must be a non-blank string or an int, got {value!r}", field="id"
    )


def _image_ref(raw: Mapping[str, Any]) -> str:
    images = raw["images"]
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
        raise DataContractError(
            "record_shape",
            f"images must be a list with exactly one path string (v1: one image per record), got {images!r}",
            field="images",
        )
    return images[0]


def _size_field(raw: Mapping[str, Any], key: str) -> int:
    value = raw[key]
    if not _is_int(value) or value < 1:
        raise DataContractError(
            "image_size", f"{key} must be an int >= 1 (stored image size in pixels), got {value!r}", field=key
        )
    return value


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise DataContractError(
            "image_size",
            f"image is {width}x{height} = {width * height} pixels, above template.max_pixels = {max_pixels}; "
            "images are never resized at runtime, so resize the file offline (and its width/height) "
            "or raise template.max_pixels",
            field="width",
        )


def _check_decoded(path: Path, ref: str, width: int, height: int, sizes: ImageSizeReader) -> None:
    decoded = sizes.size(path, ref)
    if decoded != (width, height):
        raise DataContractError(
            "image_size",
            f"record says width x height = {width}x{height} but {ref!r} decodes to "
            f"{decoded[0]}x{decoded[1]}; store the true image size (images are never resized at runtime)",
            field="width",
        )


def check_record(
    raw: object, *, file: str, line: int, config: RuleConfig, sizes: ImageSizeReader
) -> RecordCheck:
    """Apply every §1.1 rule to one parsed line (1-based `line`) and collect all errors.

    On success the record's objects are canonicalized and, for `sorted` ordering, stable-sorted.
    Every returned error carries `file` and `line`.
    """
    errors: list[DataContractError] = []

    def add(exc: DataContractError) -> None:
        errors.append(exc.located(file=file, line=line))

    if not isinstance(raw, Mapping):
        add(DataContractError("record_shape", f"a line must hold one JSON object, got {type(raw).__name__}"))
        return RecordCheck(None, tuple(errors))
    for key in raw:
        if key not in RECORD_KEYS:
            add(
                DataContractError(
                    "unknown_key",
                    f"unknown record key {key!r}{_suggest(key, RECORD_KEYS)}; "
                    f"allowed: {', '.join(sorted(RECORD_KEYS))}",
                    field=key,
                )
            )
    for key in REQUIRED_RECORD_KEYS:
        if key not in raw:
            add(DataContractError("record_shape", f"missing required key {key!r}", field=key))

    record_id = ref = width = height = None
    image_path: Path | None = None
    try:
        record_id = _record_id(raw, line)
    except DataContractError as exc:
        add(exc)
    if "images" in raw:
        try:
            ref = _image_ref(raw)
            image_path = resolve_image_ref(ref, config.base_dir)
        except DataContractError as exc:
            add(exc)
    for key in ("width", "height"):
        if key in raw:
            try:
                value = _size_field(raw, key)
            except DataContractError as exc:
                add(exc)
                continue
            width, height = (value, height) if key == "width" else (width, value)
    if width is not None and height is not None:
        try:
            _check_pixels(width, height, config.max_pixels)
            if config.check_images and image_path is not None and ref is not None:
                _check_decoded(image_path, ref, width, height, sizes)
        except DataContractError as exc:
            add(exc)
    elif config.check_images and image_path is not None and ref is not None:
        try:
            sizes.size(image_path, ref)
        except DataContractError as exc:
            add(exc)

    checked: list[CheckedObject] = []
    if "objects" in raw:
        objects = raw["objects"]
        if not isinstance(objects, list):
            add(
                DataContractError(
                    "record_shape",
                    f"objects must be a list (may be empty), got {type(objects).__name__}",
                    field="objects",
                )
            )
        else:
            for index, obj in enumerate(objects):
                try:
                    checked.append(check_object(obj, index, bbox_only=config.bbox_only))
                except DataContractError as exc:
                    add(exc)
    if errors:
        return RecordCheck(None, tuple(errors))

    source_objects = tuple(c.obj for c in checked)
    reordered = False
    if config.ordering == "sorted":
        gt_objects, reordered = sort_objects(source_objects)
    else:
        gt_objects = source_objects
    record = Record(
        id=str(record_id),
        image=image_path,
        image_ref=ref,
        width=width,
        height=height,
        objects=gt_objects,
        metadata=raw.get("metadata"),
        summary=raw.get("summary"),
        source_file=file,
        source_line=line,
    )
    if config.length_check is not None:
        length = config.length_check.length_fn(record)
        if length > config.length_check.max_length:
            add(
                DataContractError(
                    "too_long",
                    f"encoded GT sequence is {length} tokens, above template.max_length = "
                    f"{config.length_check.max_length}; raise template.max_length or split this record",
                )
            )
            return RecordCheck(None, tuple(errors))
    return RecordCheck(
        record,
        (),
        degenerate_bbox_count=sum(c.degenerate for c in checked),
        poly_canonicalized_count=sum(c.canonicalized for c in checked),
        reordered=reordered,
        num_objects=len(checked),
    )
