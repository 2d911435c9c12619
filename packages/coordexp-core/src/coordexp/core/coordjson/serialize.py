"""Canonical CoordJSON serialization (spec 01 §1.3): the only form the system emits.

``{"objects": [`` + records joined by ``", "`` + ``]}``; a record is
``{"desc": S, "<geom>": [<|coord_k|>, …]}`` (``desc_first``) or the reverse (``geometry_first``).
``S`` is a JSON string with ``"``, ``\\`` and U+0000–U+001F escaped (short escapes where they exist,
else ``\\u00xx``) and everything else, non-ASCII included, verbatim. One line, no trailing newline.
"""

from __future__ import annotations

import functools

import json
import operator
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

import attrs

from coordexp.core.codec import COORD_TOKENS, MAX_BIN
from coordexp.core.errors import DataContractError

FieldOrder = Literal["desc_first", "geometry_first"]
GeomKey = Literal["bbox_2d", "poly"]
FIELD_ORDERS: tuple[str, ...] = get_args(FieldOrder)
GEOM_KEYS: tuple[str, ...] = get_args(GeomKey)

OPEN_PREFIX = '{"objects": ['
CLOSURE = "]}"
RECORD_SEPARATOR = ", "
EMPTY_CONTAINER = OPEN_PREFIX + CLOSURE


def check_field_order(field_order: Any) -> FieldOrder:
    """Return ``field_order`` if it is ``"desc_first"`` or ``"geometry_first"``, else raise ValueError."""
    if field_order not in FIELD_ORDERS:
        raise ValueError(f"field_order must be one of {FIELD_ORDERS}, got {field_order!r}")
    return field_order


def _to_values(values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise DataContractError("coord_range", f"geometry values must be a sequence of bins, got {values!r}")
    out = []
    for position, value in enumerate(values):
        if isinstance(value, bool):
            raise DataContractError("coord_range", f"item {position} is the bool {value!r}, expected a bin")
        try:
            out.append(operator.index(value))
        except TypeError:
            raise DataContractError(
                "coord_range", f"item {position} is {value!r}, expected an integer bin 0..{MAX_BIN}"
            ) from None
    return tuple(out)


@attrs.frozen
class CoordObject:
    """One detection in bins: a description and exactly one geometry.

    ``geom_key`` is ``"bbox_2d"`` (``values = (x1, y1, x2, y2)``, ``x1 ≤ x2``, ``y1 ≤ y2``) or
    ``"poly"`` (flat ``(x1, y1, …)``, even length ≥ 6). Bins are ints in 0..999; ``desc`` is a
    non-blank string encodable as UTF-8. Violations raise :class:`DataContractError` with the
    spec 01 §1.1 rule id (``desc_empty``, ``geom_count``, ``coord_range``, ``bbox_inverted``,
    ``poly_arity``; a bbox without 4 values uses ``bbox_arity``).
    """

    desc: str = attrs.field()
    geom_key: str = attrs.field()
    values: tuple[int, ...] = attrs.field(converter=_to_values)

    @desc.validator
    def _check_desc(self, _attribute: attrs.Attribute, desc: Any) -> None:
        if not isinstance(desc, str) or not desc.strip():
            raise DataContractError(
                "desc_empty", f"desc must be a non-blank string, got {desc!r}", field="desc"
            )
        try:
            desc.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataContractError(
                "desc_empty", f"desc is not valid text: lone surrogate at character {exc.start}", field="desc"
            ) from None

    @geom_key.validator
    def _check_geom_key(self, _attribute: attrs.Attribute, geom_key: Any) -> None:
        if geom_key not in GEOM_KEYS:
            raise DataContractError(
                "geom_count", f"geometry key must be one of {GEOM_KEYS}, got {geom_key!r}", field="geom_key"
            )

    @values.validator
    def _check_values(self, _attribute: attrs.Attribute, values: tuple[int, ...]) -> None:
        field = self.geom_key
        out_of_range = [v for v in values if not 0 <= v <= MAX_BIN]
        if out_of_range:
            raise DataContractError(
                "coord_range", f"bins must lie in 0..{MAX_BIN}, got {out_of_range[:4]}", field=field
            )
        if self.geom_key == "bbox_2d":
            if len(values) != 4:
                raise DataContractError(
                    "bbox_arity", f"bbox_2d needs 4 values [x1, y1, x2, y2], got {len(values)}", field=field
                )
            x1, y1, x2, y2 = values
            if x2 < x1 or y2 < y1:
                raise DataContractError(
                    "bbox_inverted",
                    f"got {list(values)}; store [x1,y1,x2,y2] with x1≤x2, y1≤y2",
                    field=field,
                )
        elif len(values) < 6 or len(values) % 2:
            raise DataContractError(
                "poly_arity", f"poly needs an even number ≥ 6 of values, got {len(values)}", field=field
            )


@functools.lru_cache(maxsize=4096)
def _desc_literal(desc: str) -> str:
    # A dataset has few distinct descs, so the literals are memoized (json.dumps' Python wrapper
    # costs more than the escaping itself).
    # json.dumps(ensure_ascii=False) escapes exactly '"', '\\' and U+0000-U+001F (short escapes for
    # \b \f \n \r \t, lowercase \u00xx otherwise) and keeps non-ASCII verbatim: the §1.3 rule.
    return json.dumps(desc, ensure_ascii=False)


def _geometry_literal(values: tuple[int, ...]) -> str:
    return "[" + RECORD_SEPARATOR.join(map(COORD_TOKENS.__getitem__, values)) + "]"


def _check_object(obj: Any) -> CoordObject:
    if not isinstance(obj, CoordObject):
        raise TypeError(f"expected a CoordObject, got {type(obj).__name__}")
    return obj


def _record_parts(obj: CoordObject, field_order: FieldOrder) -> tuple[str, str, str]:
    """(record text, desc literal with quotes, geometry literal with brackets)."""
    _check_object(obj)
    desc_literal = _desc_literal(obj.desc)
    geom_literal = _geometry_literal(obj.values)
    desc_member = '"desc": ' + desc_literal
    geom_member = f'"{obj.geom_key}": ' + geom_literal
    if field_order == "desc_first":
        record = "{" + desc_member + RECORD_SEPARATOR + geom_member + "}"
    else:
        record = "{" + geom_member + RECORD_SEPARATOR + desc_member + "}"
    return record, desc_literal, geom_literal


def serialize_object(obj: CoordObject, field_order: FieldOrder) -> str:
    """Canonical text of one record, e.g. ``{"desc": "cat", "bbox_2d": [<|coord_1|>, …]}``."""
    return _record_parts(obj, check_field_order(field_order))[0]


def serialize_records(objects: Sequence[CoordObject], field_order: FieldOrder) -> str:
    """Records joined by ``", "`` without the container (the body between ``[`` and ``]``)."""
    check_field_order(field_order)
    return RECORD_SEPARATOR.join(_record_parts(obj, field_order)[0] for obj in objects)


def serialize(objects: Sequence[CoordObject], field_order: FieldOrder) -> str:
    """The canonical CoordJSON text of ``objects`` (no trailing newline, no eos)."""
    return OPEN_PREFIX + serialize_records(objects, field_order) + CLOSURE


Span = tuple[int, int]


@attrs.frozen
class SerializedCoordJSON:
    """Canonical text plus character spans (start inclusive, end exclusive) into ``text``.

    ``record_spans[i]`` covers ``{``..``}`` of object i; ``desc_spans[i]`` the desc characters
    inside the quotes (escapes included as written); ``geom_spans[i]`` covers ``[``..``]``;
    ``coord_spans[i][j]`` covers the j-th ``<|coord_k|>`` literal. ``head_end`` is
    ``len(head)`` (the ``open_end`` for the default head) and ``tail_start`` where ``tail`` begins.
    """

    text: str
    head_end: int
    tail_start: int
    record_spans: tuple[Span, ...]
    desc_spans: tuple[Span, ...]
    geom_spans: tuple[Span, ...]
    coord_spans: tuple[tuple[Span, ...], ...]


def serialize_with_spans(
    objects: Sequence[CoordObject],
    field_order: FieldOrder,
    *,
    head: str = OPEN_PREFIX,
    tail: str = CLOSURE,
) -> SerializedCoordJSON:
    """Serialize ``head + records joined by ", " + tail`` and report every span without re-parsing.

    With the defaults the text equals :func:`serialize`. An FN fragment (03 §3.6) is
    ``serialize_with_spans(fn_objects, order, head=lead, tail="]}")`` with ``lead`` ``", "`` or ``""``.
    """
    check_field_order(field_order)
    pieces: list[str] = [head]
    cursor = len(head)
    record_spans: list[Span] = []
    desc_spans: list[Span] = []
    geom_spans: list[Span] = []
    coord_spans: list[tuple[Span, ...]] = []
    for index, obj in enumerate(objects):
        if index:
            pieces.append(RECORD_SEPARATOR)
            cursor += len(RECORD_SEPARATOR)
        record, desc_literal, geom_literal = _record_parts(obj, field_order)
        if field_order == "desc_first":
            desc_open = cursor + len('{"desc": ')
            geom_open = desc_open + len(desc_literal) + len(RECORD_SEPARATOR) + len(f'"{obj.geom_key}": ')
        else:
            geom_open = cursor + len(f'{{"{obj.geom_key}": ')
            desc_open = geom_open + len(geom_literal) + len(RECORD_SEPARATOR) + len('"desc": ')
        record_spans.append((cursor, cursor + len(record)))
        desc_spans.append((desc_open + 1, desc_open + len(desc_literal) - 1))
        geom_spans.append((geom_open, geom_open + len(geom_literal)))
        coords: list[Span] = []
        position = geom_open + 1
        for value in obj.values:
            token = COORD_TOKENS[value]
            coords.append((position, position + len(token)))
            position += len(token) + len(RECORD_SEPARATOR)
        coord_spans.append(tuple(coords))
        pieces.append(record)
        cursor += len(record)
    pieces.append(tail)
    return SerializedCoordJSON(
        text="".join(pieces),
        head_end=len(head),
        tail_start=cursor,
        record_spans=tuple(record_spans),
        desc_spans=tuple(desc_spans),
        geom_spans=tuple(geom_spans),
        coord_spans=tuple(coord_spans),
    )
