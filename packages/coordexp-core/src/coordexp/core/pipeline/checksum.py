"""Canonical JSON and the pipeline checksum (spec 05 §5.5, D15).

``canonical`` is the one serialization used for every hash in coordexp (pipeline checksum,
``strategy_sha256``, resolved config, preflight output): sorted keys, no whitespace, ASCII, floats
via ``repr``, ``-0.0`` normalized to ``0.0``, NaN/Inf rejected.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from coordexp.core.errors import CoordexpError


class NonFiniteError(CoordexpError, ValueError):
    """A payload to be hashed holds NaN or ±Inf."""


def _normalize(x: object) -> object:
    if isinstance(x, float):
        if not math.isfinite(x):
            raise NonFiniteError("NaN/Inf in pipeline payload")
        return 0.0 if x == 0.0 else x
    if isinstance(x, dict):
        return {str(k): _normalize(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_normalize(v) for v in x]
    return x


def canonical(obj: object) -> str:
    """Canonical JSON text of ``obj`` (dicts, lists/tuples, str, int, float, bool, None)."""
    return json.dumps(
        _normalize(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def sha256_hex(obj: object) -> str:
    """sha256 hex digest of ``canonical(obj)`` encoded as ASCII."""
    return hashlib.sha256(canonical(obj).encode("ascii")).hexdigest()


def pipeline_checksum(payload: Mapping[str, object]) -> str:
    """The pipeline checksum of a ``{"trainer_variant", "objective", "diagnostics"}`` payload."""
    missing = {"trainer_variant", "objective", "diagnostics"} - set(payload)
    if missing:
        raise ValueError(f"pipeline payload lacks {sorted(missing)}")
    return sha256_hex(dict(payload))


def _union_members(tp: object) -> tuple[object, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (isinstance(tp, types.UnionType)):
        return typing.get_args(tp)
    return None


def _declares_float(tp: object) -> bool:
    if tp is float:
        return True
    members = _union_members(tp)
    return members is not None and float in members and int not in members


def _element_type(tp: object, index: int) -> object:
    args = typing.get_args(tp)
    if not args:
        return Any
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    if typing.get_origin(tp) in (tuple,) and index < len(args):
        return args[index]
    return args[0] if len(args) == 1 else Any


def schema_typed(tp: object, value: object) -> object:
    """``value`` as plain JSON data typed by the schema type ``tp`` (an int in a float field → float)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if attrs.has(type(value)):
        return config_payload(value)
    if isinstance(value, int) and _declares_float(tp):
        return float(value)
    if isinstance(value, Mapping):
        value_tp = typing.get_args(tp)[1] if len(typing.get_args(tp)) == 2 else Any
        return {str(k): schema_typed(value_tp, v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(schema_typed(_element_type(tp, 0), v) for v in value)
    if isinstance(value, (list, tuple)):
        return [schema_typed(_element_type(tp, i), v) for i, v in enumerate(value)]
    return value


def config_payload(config: object) -> dict[str, object]:
    """Every init field of an attrs config instance, keyed by its YAML key (the attrs alias),
    schema-typed. Defaults are whatever the instance holds, so pass the resolved config."""
    cls = type(config)
    if not attrs.has(cls):
        raise TypeError(f"config must be an attrs instance, got {cls.__name__}")
    attrs.resolve_types(cls)
    return {
        field.alias: schema_typed(field.type, getattr(config, field.name))
        for field in attrs.fields(cls)
        if field.init
    }
