"""attrs field validators for the config schema.

They raise :class:`FieldValueError` carrying the field name, which the structuring layer turns into
a ConfigError at the field's full dotted path. ``None`` passes every bound (optional fields say
``| None`` in their type; the type check, not the bound, rejects a null where none is allowed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


class FieldValueError(ValueError):
    """A field value is out of bounds; ``field`` is the attribute (YAML key) name."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def at_least(low: float) -> Validator:
    """``value >= low``."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not value >= low:
            raise FieldValueError(attribute.name, f"must be >= {low}, got {value!r}")

    return check


def greater_than(low: float) -> Validator:
    """``value > low``."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not value > low:
            raise FieldValueError(attribute.name, f"must be > {low}, got {value!r}")

    return check


def within(low: float, high: float, *, low_open: bool = False) -> Validator:
    """``low <= value <= high`` (``low < value`` with ``low_open``)."""

    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        ok = (value > low if low_open else value >= low) and value <= high
        if not ok:
            bracket = "(" if low_open else "["
            raise FieldValueError(
                attribute.name, f"must be in {bracket}{low}, {high}], got {value!r}"
            )

    return check


def non_blank(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A string with at least one non-whitespace character."""
    if value is not None and not value.strip():
        raise FieldValueError(attribute.name, "must be a non-empty string")


def top_k_value(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """``-1`` (off) or ``>= 1``."""
    if value is not None and value != -1 and value < 1:
        raise FieldValueError(attribute.name, f"must be -1 (off) or >= 1, got {value!r}")


def non_empty(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A non-empty sequence."""
    if value is not None and not value:
        raise FieldValueError(attribute.name, "must not be empty")


def non_empty_unique(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A non-empty sequence without repeated items."""
    if value is None:
        return
    if not value:
        raise FieldValueError(attribute.name, "must not be empty")
    seen = set()
    for item in value:
        if item in seen:
            raise FieldValueError(attribute.name, f"duplicate entry {item!r}")
        seen.add(item)
