"""Strict, bounded attrs fields for module ``Config`` classes.

Every field converts ``int`` → ``float`` where a float is declared (never ``bool`` or ``str``) and
validates type and bounds on construction, so a ``Config`` built in code is held to the same rules
as one structured from YAML by the pipeline (which reports the failing key with its dotted path).
"""

from __future__ import annotations

import math
from typing import Any

import attrs


def _to_float(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _optional_to_float(value: object) -> object:
    return None if value is None else _to_float(value)


def _check_float(name: str, value: object, *, lower: float | None, strict: bool) -> None:
    if not isinstance(value, float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lower is None:
        return
    if strict and not value > lower:
        raise ValueError(f"{name} must be > {lower}, got {value!r}")
    if not strict and not value >= lower:
        raise ValueError(f"{name} must be >= {lower}, got {value!r}")


def weight_field(default: float) -> Any:
    """A finite float ``>= 0`` (a loss weight)."""

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        _check_float(attribute.name, value, lower=0.0, strict=False)

    return attrs.field(default=default, converter=_to_float, validator=check)


def signed_weight_field(default: float) -> Any:
    """A finite float of any sign (e.g. an entropy weight that may reward or penalize entropy)."""

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        _check_float(attribute.name, value, lower=None, strict=False)

    return attrs.field(default=default, converter=_to_float, validator=check)


def positive_field(default: float) -> Any:
    """A finite float ``> 0`` (temperatures, widths, thresholds)."""

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        _check_float(attribute.name, value, lower=0.0, strict=True)

    return attrs.field(default=default, converter=_to_float, validator=check)


def optional_weight_field() -> Any:
    """``None`` (inherit, resolved by the module) or a finite float ``>= 0``; default ``None``."""

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if value is not None:
            _check_float(attribute.name, value, lower=0.0, strict=False)

    return attrs.field(default=None, converter=_optional_to_float, validator=check)


def int_field(default: int | None, *, lower: int, upper: int | None = None, optional: bool = False) -> Any:
    """An ``int`` in ``[lower, upper]`` (``upper=None``: unbounded); ``optional`` also allows ``None``."""

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if value is None and optional:
            return
        bound = f"[{lower}, {upper}]" if upper is not None else f">= {lower}"
        allowed = f"null or an int {bound}" if optional else f"an int {bound}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{attribute.name} must be {allowed}, got {value!r}")
        if value < lower or (upper is not None and value > upper):
            raise ValueError(f"{attribute.name} must be {allowed}, got {value!r}")

    return attrs.field(default=default, validator=check)
