"""The ``gt_vs_pred.jsonl`` artifact (spec 06 §6.2): one JSON line per evaluated image.

Value objects (:class:`GTItem`, :class:`PredItem`, :class:`ParseSummary`, :class:`ImageRecord`)
validate on construction, so a record that exists is well formed. Geometry is in integer pixels
(``coord_mode = "pixel"``): bins map to pixels with the spec 01 §1.2 rule
``clamp(round_half_up(k·max(1, W−1)/999), 0, W−1)`` (x with the width, y with the height).

:func:`image_record` is the single builder the inference code calls; :func:`write_records` /
:func:`read_records` move records to and from disk in input order.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from coordexp.core.codec import bins_to_pixels_int
from coordexp.core.coordjson.parse import DROP_BUCKETS, ParseResult
from coordexp.core.coordjson.serialize import GEOM_KEYS, CoordObject
from coordexp.core.errors import DataContractError
from coordexp.train.data.records import Record
from coordexp.train.eval.scores import RECORDED_SCORE_SOURCES, SCORE_VERSION, ImageScores

GT_VS_PRED_FILE = "gt_vs_pred.jsonl"
COORD_MODE = "pixel"
RULE = "gt_vs_pred"  # DataContractError rule id for malformed artifact lines


def _fail(message: str, field: str | None = None) -> DataContractError:
    return DataContractError(RULE, message, field=field)


def _check_int(value: Any, what: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise _fail(f"{what} must be an integer >= {minimum}, got {value!r}", what)
    return int(value)


def _points(values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _fail(f"points must be a list of integer pixels, got {values!r}", "points")
    return tuple(_check_int(v, "points") for v in values)


def _check_geometry(geom_type: Any, points: tuple[int, ...]) -> None:
    if geom_type not in GEOM_KEYS:
        raise _fail(f"type must be one of {GEOM_KEYS}, got {geom_type!r}", "type")
    if geom_type == "bbox_2d":
        if len(points) != 4:
            raise _fail(f"a bbox_2d needs 4 points [x1, y1, x2, y2], got {len(points)}", "points")
        x1, y1, x2, y2 = points
        if x2 < x1 or y2 < y1:
            raise _fail(f"a bbox_2d needs x1 <= x2 and y1 <= y2, got {list(points)}", "points")
    elif len(points) < 6 or len(points) % 2:
        raise _fail(f"a poly needs an even number >= 6 of points, got {len(points)}", "points")


def _check_desc(desc: Any) -> None:
    if not isinstance(desc, str) or not desc.strip():
        raise _fail(f"desc must be a non-blank string, got {desc!r}", "desc")


@attrs.frozen
class GTItem:
    """One GT object in pixels: ``type`` (``bbox_2d``/``poly``), flat ``points``, ``desc``."""

    type: str
    points: tuple[int, ...] = attrs.field(converter=_points)
    desc: str = attrs.field()

    def __attrs_post_init__(self) -> None:
        _check_geometry(self.type, self.points)
        _check_desc(self.desc)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "points": list(self.points), "desc": self.desc}


@attrs.frozen
class PredItem:
    """One valid prediction in pixels, with its score in (0, 1] and its appearance index."""

    type: str
    points: tuple[int, ...] = attrs.field(converter=_points)
    desc: str = attrs.field()
    score: float = attrs.field(converter=float)
    pred_index: int = attrs.field()

    def __attrs_post_init__(self) -> None:
        _check_geometry(self.type, self.points)
        _check_desc(self.desc)
        if not (math.isfinite(self.score) and 0.0 < self.score <= 1.0):
            raise _fail(f"score must lie in (0, 1], got {self.score!r}", "score")
        _check_int(self.pred_index, "pred_index")

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "points": list(self.points),
            "desc": self.desc,
            "score": self.score,
            "pred_index": self.pred_index,
        }


def _dropped(counts: Any) -> dict[str, int]:
    if not isinstance(counts, Mapping):
        raise _fail(f"parse.dropped must be an object {{bucket: count}}, got {counts!r}", "parse.dropped")
    unknown = sorted(set(counts) - set(DROP_BUCKETS))
    if unknown:
        raise _fail(f"unknown drop buckets {unknown}; expected some of {DROP_BUCKETS}", "parse.dropped")
    # Canonical form: bucket order of the parser, zero counts omitted.
    return {b: _check_int(counts[b], f"parse.dropped.{b}") for b in DROP_BUCKETS if counts.get(b, 0)}


@attrs.frozen
class ParseSummary:
    """The ``parse`` field: valid record count, non-zero drop buckets, field-order mismatches."""

    valid: int = attrs.field(converter=lambda v: _check_int(v, "parse.valid"))
    dropped: dict[str, int] = attrs.field(converter=_dropped, factory=dict)
    field_order_mismatch: int = attrs.field(
        converter=lambda v: _check_int(v, "parse.field_order_mismatch"), default=0
    )

    @classmethod
    def from_parse_result(cls, result: ParseResult) -> ParseSummary:
        return cls(len(result.valid_records), dict(result.drop_counts), result.field_order_mismatch)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "dropped": dict(self.dropped),
            "field_order_mismatch": self.field_order_mismatch,
        }


def _error_codes(codes: Any) -> tuple[str, ...]:
    if isinstance(codes, (str, bytes)) or not isinstance(codes, Iterable):
        raise _fail(f"errors must be a list of error codes, got {codes!r}", "errors")
    out = tuple(codes)
    bad = [c for c in out if not isinstance(c, str) or not c]
    if bad:
        raise _fail(f"error codes must be non-empty strings, got {bad[:4]}", "errors")
    return out


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"{what} must be true or false, got {value!r}", what)
    return value


def _check_inside(items: Sequence[GTItem | PredItem], width: int, height: int, side: str) -> None:
    for index, item in enumerate(items):
        xs, ys = item.points[0::2], item.points[1::2]
        if max(xs) > width - 1 or max(ys) > height - 1:
            raise _fail(
                f"{side}[{index}] points {list(item.points)} leave the {width}x{height} image "
                f"(pixels must lie in [0, W-1] x [0, H-1])",
                side,
            )


@attrs.frozen(kw_only=True)
class ImageRecord:
    """One line of ``gt_vs_pred.jsonl`` (spec 06 §6.2).

    ``gt`` is in GT order; ``pred`` holds the valid predictions in appearance order
    (``pred_index`` strictly increasing). ``metadata`` is the record's parsed JSON value.
    """

    image_id: int = attrs.field(converter=lambda v: _check_int(v, "image_id"))
    image: str
    width: int = attrs.field(converter=lambda v: _check_int(v, "width", minimum=1))
    height: int = attrs.field(converter=lambda v: _check_int(v, "height", minimum=1))
    metadata: Any = None
    coord_mode: str = COORD_MODE
    gt: tuple[GTItem, ...] = attrs.field(converter=tuple)
    pred: tuple[PredItem, ...] = attrs.field(converter=tuple)
    pred_score_source: str
    pred_score_version: int = SCORE_VERSION
    raw_output: str
    ends_with_eos: bool
    truncated: bool
    invalid_rollout: bool
    parse: ParseSummary
    errors: tuple[str, ...] = attrs.field(converter=_error_codes, default=())

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.image, str):
            raise _fail(f"image must be a string path, got {self.image!r}", "image")
        if self.coord_mode != COORD_MODE:
            raise _fail(f"coord_mode must be {COORD_MODE!r}, got {self.coord_mode!r}", "coord_mode")
        if not isinstance(self.raw_output, str):
            raise _fail(f"raw_output must be a string, got {type(self.raw_output).__name__}", "raw_output")
        for flag in ("ends_with_eos", "truncated", "invalid_rollout"):
            _check_bool(getattr(self, flag), flag)
        if self.pred_score_source not in RECORDED_SCORE_SOURCES:
            raise _fail(
                f"pred_score_source must be one of {RECORDED_SCORE_SOURCES}, got {self.pred_score_source!r}",
                "pred_score_source",
            )
        if self.pred_score_version != SCORE_VERSION:
            raise _fail(f"pred_score_version must be {SCORE_VERSION}, got {self.pred_score_version!r}")
        if not all(isinstance(g, GTItem) for g in self.gt) or not all(
            isinstance(p, PredItem) for p in self.pred
        ):
            raise _fail("gt must hold GTItem values and pred PredItem values")
        if not isinstance(self.parse, ParseSummary):
            raise _fail(f"parse must be a ParseSummary, got {type(self.parse).__name__}", "parse")
        indices = [p.pred_index for p in self.pred]
        if any(b <= a for a, b in itertools.pairwise(indices)):
            raise _fail(f"pred_index must be strictly increasing (appearance order), got {indices}", "pred")
        if self.pred_score_source != "coord_logprob" and any(p.score != 1.0 for p in self.pred):
            raise _fail(f"{self.pred_score_source} scores must all be 1.0", "pred")
        _check_inside(self.gt, self.width, self.height, "gt")
        _check_inside(self.pred, self.width, self.height, "pred")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this line, fields in spec order."""
        return {
            "image_id": self.image_id,
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "metadata": self.metadata,
            "coord_mode": self.coord_mode,
            "gt": [g.to_json() for g in self.gt],
            "pred": [p.to_json() for p in self.pred],
            "pred_score_source": self.pred_score_source,
            "pred_score_version": self.pred_score_version,
            "raw_output": self.raw_output,
            "ends_with_eos": self.ends_with_eos,
            "truncated": self.truncated,
            "invalid_rollout": self.invalid_rollout,
            "parse": self.parse.to_json(),
            "errors": list(self.errors),
        }


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in attrs.fields(ImageRecord))
_ITEM_FIELDS = {"gt": ("type", "points", "desc"), "pred": ("type", "points", "desc", "score", "pred_index")}


def _check_keys(obj: Any, expected: Sequence[str], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise _fail(f"{where} must be a JSON object, got {type(obj).__name__}", where)
    missing = [k for k in expected if k not in obj]
    unknown = sorted(set(obj) - set(expected))
    if missing or unknown:
        raise _fail(
            f"{where}: missing keys {missing}, unknown keys {unknown}; expected {list(expected)}", where
        )


def _items(raw: Any, side: str, cls: type[GTItem | PredItem]) -> list[GTItem | PredItem]:
    if not isinstance(raw, list):
        raise _fail(f"{side} must be a list, got {type(raw).__name__}", side)
    items = []
    for index, item in enumerate(raw):
        where = f"{side}[{index}]"
        _check_keys(item, _ITEM_FIELDS[side], where)
        try:
            items.append(cls(**item))
        except DataContractError as exc:
            raise _fail(exc.message, f"{where}.{exc.field}" if exc.field else where) from None
    return items


def record_from_json(obj: Any) -> ImageRecord:
    """Build an :class:`ImageRecord` from one parsed JSON line (exact key set, all fields checked)."""
    _check_keys(obj, RECORD_FIELDS, "record")
    _check_keys(obj["parse"], ("valid", "dropped", "field_order_mismatch"), "parse")
    fields = dict(obj)
    fields["gt"] = _items(obj["gt"], "gt", GTItem)
    fields["pred"] = _items(obj["pred"], "pred", PredItem)
    fields["parse"] = ParseSummary(**obj["parse"])
    return ImageRecord(**fields)


def _check_order(records: Sequence[ImageRecord]) -> None:
    ids = [r.image_id for r in records]
    for position, (a, b) in enumerate(itertools.pairwise(ids), start=1):
        if b <= a:
            raise _fail(
                f"image_id must be strictly increasing (input order); record {position} has {b} after {a}"
            )


def write_records(path: str | Path, records: Sequence[ImageRecord]) -> Path:
    """Write ``records`` as JSONL (one line per image, given order; image ids strictly increasing)."""
    _check_order(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    return path


def read_records(path: str | Path) -> list[ImageRecord]:
    """Read a ``gt_vs_pred.jsonl`` file; a malformed line raises DataContractError with file:line."""
    path = Path(path)
    records: list[ImageRecord] = []
    with path.open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(record_from_json(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataContractError(
                    RULE, f"invalid JSON: {exc.msg} at column {exc.colno}", file=str(path), line=line_no
                ) from None
            except DataContractError as exc:
                raise exc.located(file=str(path), line=line_no) from None
            except (TypeError, ValueError) as exc:
                raise DataContractError(RULE, str(exc), file=str(path), line=line_no) from None
    try:
        _check_order(records)
    except DataContractError as exc:
        raise exc.located(file=str(path)) from None
    return records


# ---------------------------------------------------------------------------------------------
# builder (called by inference)
# ---------------------------------------------------------------------------------------------


def pixel_points(obj: CoordObject, width: int, height: int) -> tuple[int, ...]:
    """A CoordObject's bins as flat integer pixels (x with ``width``, y with ``height``; 01 §1.2)."""
    values = np.asarray(obj.values, dtype=np.int64)
    pixels = np.empty_like(values)
    pixels[0::2] = bins_to_pixels_int(values[0::2], width)
    pixels[1::2] = bins_to_pixels_int(values[1::2], height)
    return tuple(pixels.tolist())


def image_record(
    image_id: int,
    record: Record,
    preds: Sequence[CoordObject],
    scores: ImageScores,
    pred_indices: Sequence[int],
    *,
    parse: ParseSummary | ParseResult,
    raw_output: str,
    ends_with_eos: bool,
    truncated: bool,
    invalid_rollout: bool,
    errors: Sequence[str] = (),
) -> ImageRecord:
    """Build the ``gt_vs_pred`` line of one image.

    ``record``: the evaluated sample (GT in bins); ``preds``: the valid predictions in bins, in
    appearance order, with ``scores`` (from :func:`coordexp.train.eval.scores.score_predictions`)
    and ``pred_indices`` aligned to them. ``parse`` is the parser's result or its summary. A
    malformed generation passes ``preds=()`` and its error codes. A score fallback adds its
    reason (``score_trace_missing``/``score_trace_misaligned``) to ``errors``.
    """
    if not (len(preds) == len(scores.scores) == len(pred_indices)):
        raise ValueError(
            f"image {image_id}: {len(preds)} predictions, {len(scores.scores)} scores and "
            f"{len(pred_indices)} pred indices must have the same length"
        )
    width, height = record.width, record.height
    gt = [GTItem(o.geom_key, pixel_points(o, width, height), o.desc) for o in record.objects]
    pred = [
        PredItem(o.geom_key, pixel_points(o, width, height), o.desc, score, index)
        for o, score, index in zip(preds, scores.scores, pred_indices)
    ]
    codes = list(errors)
    if scores.fallback_reason is not None and scores.fallback_reason not in codes:
        codes.append(scores.fallback_reason)
    summary = parse if isinstance(parse, ParseSummary) else ParseSummary.from_parse_result(parse)
    return ImageRecord(
        image_id=image_id,
        image=record.image_ref,
        width=width,
        height=height,
        metadata=record.metadata,
        gt=gt,
        pred=pred,
        pred_score_source=scores.source,
        raw_output=raw_output,
        ends_with_eos=ends_with_eos,
        truncated=truncated,
        invalid_rollout=invalid_rollout,
        parse=summary,
        errors=codes,
    )
