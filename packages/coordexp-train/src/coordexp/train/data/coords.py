"""Coordinate arrays of JSONL records: norm1000 bins as ints or `<|coord_k|>` strings (spec 01 §1.1).

One array uses one value form. Floats within 1e-6 of an integer count as that integer; anything
else (bools, non-finite or non-integral numbers, malformed tokens, nested values, mixed forms,
values outside 0..999) is a `coord_range` data error. Values above 999 are usually pixels, so the
message points at `coordexp data convert`.
"""

from __future__ import annotations

import math

from coordexp.core.codec import NUM_BINS, parse_coord_token
from coordexp.core.errors import DataContractError

INTEGRAL_TOLERANCE = 1e-6


def _fail(message: str, field: str) -> DataContractError:
    return DataContractError("coord_range", message, field=field)


def _as_bin_number(value: int | float, field: str) -> int:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(f"{value!r} is not a finite number", field)
        nearest = math.floor(value + 0.5)
        if abs(value - nearest) > INTEGRAL_TOLERANCE:
            raise _fail(
                f"{value!r} is not an integer bin; coordinates are norm1000 bins 0..{NUM_BINS - 1}", field
            )
        value = int(nearest)
    if not 0 <= value < NUM_BINS:
        raise _fail(
            f"{value} is outside 0..{NUM_BINS - 1}; coordinates are norm1000 bins, "
            "convert pixel coordinates with `coordexp data convert`",
            field,
        )
    return value


def parse_bin_array(raw: object, field: str) -> tuple[int, ...]:
    """Parse a geometry array into bins 0..999, or raise DataContractError(rule="coord_range").

    `field` names the array in messages (e.g. "bbox_2d"); item errors name "bbox_2d[2]".
    """
    if not isinstance(raw, list):
        raise _fail(f"expected a JSON array of coordinates, got {type(raw).__name__}", field)
    bins: list[int] = []
    forms: set[str] = set()
    for i, value in enumerate(raw):
        item = f"{field}[{i}]"
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _fail(
                f"{value!r} ({type(value).__name__}) is not a coordinate; use an int 0..{NUM_BINS - 1} "
                'or a "<|coord_k|>" string',
                item,
            )
        if isinstance(value, str):
            forms.add("token")
            try:
                bins.append(parse_coord_token(value))
            except ValueError as exc:
                raise _fail(f"malformed coord token {value!r}: {exc}", item) from exc
        else:
            forms.add("int")
            bins.append(_as_bin_number(value, item))
    if len(forms) > 1:
        raise _fail('mixes ints and "<|coord_k|>" strings; one array must use one value form', field)
    return tuple(bins)
