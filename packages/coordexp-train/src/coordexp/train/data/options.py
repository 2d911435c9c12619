"""Allowed values of the data-related config keys (spec 01 §1.1, 05 §5.7) and their validators.

Each validator returns the value unchanged or raises `ConfigError` naming the config key and the
allowed values, so the loaders can be called with values straight from a resolved config.
"""

from __future__ import annotations

from coordexp.core.coordjson.serialize import FIELD_ORDERS
from coordexp.core.errors import ConfigError

ORDERINGS: tuple[str, ...] = ("sorted", "random")
TRAINER_VARIANTS: tuple[str, ...] = ("stage1", "stage2_two_channel", "stage2_rollout_aligned")
BBOX_ONLY_VARIANTS: frozenset[str] = frozenset({"stage2_two_channel"})


def _check_choice(value: object, allowed: tuple[str, ...], key: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(key, f"got {value!r}; expected one of {', '.join(allowed)}")
    return value


def check_field_order(value: object) -> str:
    """Validate `custom.object_field_order`."""
    return _check_choice(value, FIELD_ORDERS, "custom.object_field_order")


def check_ordering(value: object) -> str:
    """Validate `custom.object_ordering`."""
    return _check_choice(value, ORDERINGS, "custom.object_ordering")


def check_trainer_variant(value: object) -> str:
    """Validate `custom.trainer_variant`."""
    return _check_choice(value, TRAINER_VARIANTS, "custom.trainer_variant")


def check_max_pixels(value: object) -> int | None:
    """Validate `template.max_pixels` (None = no limit, used by offline validation only)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("template.max_pixels", f"got {value!r}; expected an int >= 1")
    return value
