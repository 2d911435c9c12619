"""COCO-style annotation JSON → contract JSONL (spec 01 §1.1–1.2, §1.6–1.7).

Input: `{"images": [{id, file_name, width, height}], "annotations": [{image_id, category_id,
bbox: [x, y, w, h], segmentation?, iscrowd?}], "categories": [{id, name}]}`. The category name is
the `desc`. One output line per entry of `images`, in file order (images without annotations give
`"objects": []`); annotations keep file order before the anchor sort.

Geometry (`geometry="poly"`): a segmentation that is exactly one polygon becomes `poly`; RLE,
multi-part or missing segmentations, and polygons that collapse below 3 vertices at 1000 bins, fall
back to the annotation's bbox and are counted (`poly_as_bbox_*`). `geometry="bbox"` exports boxes
only. Crowd annotations are skipped and counted unless `include_crowd`. Out-of-image pixels are a
`pixel_range` error unless `clip_to_image`, which clamps them and counts `clipped_coords`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordexp.core.coordjson.serialize import CoordObject
from coordexp.core.errors import ConfigError, DataContractError
from coordexp.train.data.convert import (
    ConversionSummary,
    Tally,
    bin_pixel_geometry,
    check_coord_form,
    contract_line,
    output_ref,
)
from coordexp.train.data.images import resolve_image_ref
from coordexp.train.data.ordering import sort_objects

COCO_GEOMETRIES: tuple[str, ...] = ("poly", "bbox")


def _shape_error(message: str, field: str) -> DataContractError:
    return DataContractError("record_shape", message, field=field)


def _list_of_dicts(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise _shape_error(f"'{key}' must be a list, got {type(value).__name__}", key)
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise _shape_error(f"each entry must be a JSON object, got {type(item).__name__}", f"{key}[{i}]")
    return value


def _key(value: object, field: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _shape_error(f"expected an int or string id, got {value!r}", field)
    return value


def _positive_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataContractError("image_size", f"expected an int >= 1 (pixels), got {value!r}", field=field)
    return value


def _numbers(value: object, field: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise DataContractError(
            "pixel_range", f"expected a list of finite pixel numbers, got {value!r}", field=field
        )
    return [float(v) for v in value]


class _Clipper:
    """Clamps pixel values into the image when enabled, counting the changed values."""

    def __init__(self, enabled: bool, tally: Tally) -> None:
        self.enabled = enabled
        self.tally = tally

    def __call__(self, values: list[float], width: int, height: int) -> list[float]:
        if not self.enabled:
            return values
        out = [min(max(v, 0.0), float(width if i % 2 == 0 else height)) for i, v in enumerate(values)]
        self.tally.counts["clipped_coords"] += sum(a != b for a, b in zip(values, out, strict=True))
        return out


def _load(path: Path) -> Mapping[str, Any]:
    file = str(path)
    try:
        with path.open("r", encoding="utf-8") as handle:
            doc = json.load(handle)
    except UnicodeDecodeError as exc:
        raise DataContractError("json_syntax", f"not valid UTF-8 at byte {exc.start}", file=file) from exc
    except json.JSONDecodeError as exc:
        raise DataContractError(
            "json_syntax",
            f"invalid JSON at {file}:{exc.lineno}:{exc.colno}: {exc.msg}",
            file=file,
            line=exc.lineno,
        ) from exc
    if not isinstance(doc, Mapping):
        raise DataContractError("record_shape", "a COCO file must hold one JSON object", file=file)
    return doc


def convert_coco(
    annotations: str | Path,
    dst: str | Path,
    *,
    image_dir: str | Path | None = None,
    coord_form: str = "int",
    geometry: str = "poly",
    include_crowd: bool = False,
    clip_to_image: bool = False,
) -> ConversionSummary:
    """Convert a COCO annotation file to contract JSONL at `dst`.

    `image_dir` is where `file_name`s live (default: the annotation file's directory); it must
    be inside `dst`'s directory. Errors carry `file` = the annotation file and a field path such
    as `annotations[12].bbox`; nothing is written on error.
    """
    check_coord_form(coord_form)
    if geometry not in COCO_GEOMETRIES:
        raise ConfigError("geometry", f"got {geometry!r}; expected one of {', '.join(COCO_GEOMETRIES)}")
    ann_path = Path(annotations).absolute()
    if not ann_path.is_file():
        raise DataContractError(
            "jsonl_file", f"annotation file {str(annotations)!r} not found", file=str(annotations)
        )
    dst_path = Path(dst).absolute()
    images_root = Path(image_dir).absolute() if image_dir is not None else ann_path.parent
    try:
        lines, tally = _convert(
            _load(ann_path), images_root, dst_path.parent, coord_form, geometry, include_crowd, clip_to_image
        )
    except DataContractError as exc:
        raise exc.located(file=str(ann_path)) from exc
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    dst_path.write_text("".join(lines), encoding="utf-8", newline="\n")
    return ConversionSummary(dst_path, dict(tally.counts))


def _convert(
    doc: Mapping[str, Any],
    images_root: Path,
    out_dir: Path,
    coord_form: str,
    geometry: str,
    include_crowd: bool,
    clip_to_image: bool,
) -> tuple[list[str], Tally]:
    images = _list_of_dicts(doc, "images")
    annotations = _list_of_dicts(doc, "annotations")
    categories = _list_of_dicts(doc, "categories")
    tally = Tally()
    for key in (
        "skipped_crowd",
        "poly_as_bbox_rle",
        "poly_as_bbox_multipart",
        "poly_as_bbox_missing",
        "poly_as_bbox_collapsed",
        "clipped_coords",
    ):
        tally.counts[key] = 0
    clip = _Clipper(clip_to_image, tally)

    names: dict[int | str, str] = {}
    for i, cat in enumerate(categories):
        cat_id = _key(cat.get("id"), f"categories[{i}].id")
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DataContractError(
                "desc_empty",
                f"category name must be a non-blank string, got {name!r}",
                field=f"categories[{i}].name",
            )
        if cat_id in names:
            raise _shape_error(f"category id {cat_id!r} appears twice", f"categories[{i}].id")
        names[cat_id] = name

    image_index: dict[int | str, int] = {}
    for i, image in enumerate(images):
        image_id = _key(image.get("id"), f"images[{i}].id")
        if image_id in image_index:
            raise _shape_error(f"image id {image_id!r} appears twice", f"images[{i}].id")
        image_index[image_id] = i
    per_image: list[list[tuple[int, Mapping[str, Any]]]] = [[] for _ in images]
    for k, ann in enumerate(annotations):
        image_id = _key(ann.get("image_id"), f"annotations[{k}].image_id")
        if image_id not in image_index:
            raise _shape_error(
                f"image_id {image_id!r} is not listed in 'images'", f"annotations[{k}].image_id"
            )
        per_image[image_index[image_id]].append((k, ann))

    lines: list[str] = []
    for i, image in enumerate(images):
        file_name = image.get("file_name")
        if not isinstance(file_name, str):
            raise _shape_error(f"file_name must be a string, got {file_name!r}", f"images[{i}].file_name")
        try:
            ref = output_ref(resolve_image_ref(file_name, images_root), out_dir, file_name)
        except DataContractError as exc:
            raise DataContractError(exc.rule, exc.message, field=f"images[{i}].file_name") from exc
        width = _positive_int(image.get("width"), f"images[{i}].width")
        height = _positive_int(image.get("height"), f"images[{i}].height")
        objects = []
        canonicalized = 0
        for k, ann in per_image[i]:
            converted = _annotation(k, ann, names, width, height, geometry, include_crowd, clip, tally)
            if converted is not None:
                objects.append(converted[0])
                canonicalized += converted[1]
        ordered, reordered = sort_objects(objects)
        tally.add_record(ordered, canonicalized, reordered)
        image_id = image["id"]
        lines.append(
            contract_line(
                image_ref=ref,
                width=width,
                height=height,
                objects=ordered,
                coord_form=coord_form,
                record_id=image_id,
                metadata={"coco_image_id": image_id},
                has_metadata=True,
            )
        )
    return lines, tally


def _annotation(
    k: int,
    ann: Mapping[str, Any],
    names: Mapping[int | str, str],
    width: int,
    height: int,
    geometry: str,
    include_crowd: bool,
    clip: _Clipper,
    tally: Tally,
) -> tuple[CoordObject, bool] | None:
    """One annotation as (object, polygon changed by canonicalization), or None for a skipped crowd."""
    where = f"annotations[{k}]"
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, bool):
        raise _shape_error(f"iscrowd must be 0 or 1, got {crowd!r}", f"{where}.iscrowd")
    if crowd == 1 and not include_crowd:
        tally.counts["skipped_crowd"] += 1
        return None
    category = _key(ann.get("category_id"), f"{where}.category_id")
    if category not in names:
        raise _shape_error(f"category_id {category!r} is not listed in 'categories'", f"{where}.category_id")
    desc = names[category]
    xywh = _numbers(ann.get("bbox"), f"{where}.bbox")
    if len(xywh) != 4:
        raise DataContractError(
            "bbox_arity", f"bbox must be [x, y, w, h], got {len(xywh)} values", field=f"{where}.bbox"
        )
    if xywh[2] < 0 or xywh[3] < 0:
        raise DataContractError(
            "bbox_inverted", f"bbox {xywh} has a negative width or height", field=f"{where}.bbox"
        )
    box = clip([xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]], width, height)
    if geometry == "poly":
        polygon = _single_polygon(ann.get("segmentation"), where, tally)
        if polygon is not None:
            try:
                return bin_pixel_geometry(
                    desc, "poly", clip(polygon, width, height), width, height, field=f"{where}.segmentation"
                )
            except DataContractError as exc:
                if exc.rule != "poly_arity":
                    raise
                tally.counts["poly_as_bbox_collapsed"] += 1
    return bin_pixel_geometry(desc, "bbox_2d", box, width, height, field=f"{where}.bbox")


def _single_polygon(segmentation: object, where: str, tally: Tally) -> list[float] | None:
    if segmentation is None or segmentation == []:
        tally.counts["poly_as_bbox_missing"] += 1
        return None
    if isinstance(segmentation, Mapping):
        tally.counts["poly_as_bbox_rle"] += 1
        return None
    if not isinstance(segmentation, list) or not all(isinstance(part, list) for part in segmentation):
        raise _shape_error(
            "segmentation must be a list of polygons or an RLE object", f"{where}.segmentation"
        )
    if len(segmentation) != 1:
        tally.counts["poly_as_bbox_multipart"] += 1
        return None
    values = _numbers(segmentation[0], f"{where}.segmentation[0]")
    if len(values) % 2 or len(values) < 6:
        raise DataContractError(
            "poly_arity",
            f"a polygon needs an even number >= 6 of values, got {len(values)}",
            field=f"{where}.segmentation[0]",
        )
    return values
