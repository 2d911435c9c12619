"""Strict cattrs structuring of the config schema, with errors at dotted key paths.

Rules (spec 05 §5.2 (5), §5.9): unknown keys fail at any depth (``forbid_extra_keys``); ``int``
fields take ints only (never bools or strings); ``float`` fields take ints or floats, finite
only; ``bool`` and ``str`` fields are never coerced; a Literal field takes one of its values
exactly; lists must be YAML lists. Every problem found in one pass is reported in a single
ConfigError whose path is the first problem's path, each with its ``file:line`` when known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from coordexp.core.errors import ConfigError

from .keypath import KeyPath, Provenance, format_path
from .schema import (
    TOP_LEVEL_SECTIONS,
    CoordexpConfig,
    EvalMetric,
    EvalMetrics,
    FreeMapping,
    PipelineMapping,
)
from .tree import freeze, get_path, iter_paths, thaw
from .validators import FieldValueError


class TypeMismatch(TypeError):
    """A value has the wrong YAML type for its field."""

    def __init__(self, expected: str, value: object) -> None:
        self.message = f"expected {expected}, got {describe(value)}"
        super().__init__(self.message)


def describe(value: object) -> str:
    """Short type-and-value description used in type errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _int(value: object, _type: object) -> int:
    if type(value) is not int:
        raise TypeMismatch("int", value)
    return value


def _float(value: object, _type: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeMismatch("float (or int)", value)
    result = float(value)
    if not math.isfinite(result):
        raise TypeMismatch("a finite float", value)
    return result


def _bool(value: object, _type: object) -> bool:
    if not isinstance(value, bool):
        raise TypeMismatch("bool (true/false)", value)
    return value


def _str(value: object, _type: object) -> str:
    if not isinstance(value, str):
        raise TypeMismatch("str", value)
    return value


def _is_literal(tp: object) -> bool:
    return get_origin(tp) is Literal


def _literal(value: object, tp: object) -> object:
    allowed = get_args(tp)
    for option in allowed:
        if type(value) is type(option) and value == option:
            return value
    raise TypeMismatch("one of " + ", ".join(repr(option) for option in allowed), value)


def _string_keyed_mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise TypeMismatch("a mapping", value)
    for key in value:
        if not isinstance(key, str):
            raise TypeMismatch("a mapping with string keys", value)
    return value


def _free_mapping(value: object, _type: object) -> object:
    mapping = _string_keyed_mapping(value)
    for sub_path in iter_paths(mapping):
        item = get_path(mapping, sub_path)
        if isinstance(item, float) and not math.isfinite(item):
            raise TypeMismatch(
                f"finite numbers only inside this mapping ({format_path(sub_path)})", item
            )
    return freeze(mapping)


def _eval_metrics(value: object, _type: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TypeMismatch("'coco', 'f1' or a list of them", value)
    errors: list[Exception] = []
    out: list[str] = []
    for index, item in enumerate(items):
        try:
            out.append(_literal(item, EvalMetric))  # type: ignore[arg-type]
        except TypeMismatch as exc:
            exc.__notes__ = [IterableValidationNote(f"index {index}", index, str)]
            errors.append(exc)
    if errors and not isinstance(value, str):
        raise IterableValidationError("While structuring eval metrics", errors, tuple)
    if errors:
        raise errors[0]
    return tuple(out)


def _is_homogeneous_tuple(tp: object) -> bool:
    args = get_args(tp)
    return get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def build_converter() -> cattrs.Converter:
    """A converter with the strict hooks above; attrs classes must be given mappings."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _int)
    converter.register_structure_hook(float, _float)
    converter.register_structure_hook(bool, _bool)
    converter.register_structure_hook(str, _str)
    converter.register_structure_hook_func(_is_literal, _literal)
    converter.register_structure_hook(FreeMapping, _free_mapping)
    converter.register_structure_hook(PipelineMapping, _free_mapping)
    converter.register_structure_hook(EvalMetrics, _eval_metrics)

    def tuple_factory(tp: Any) -> Callable[[object, object], tuple[object, ...]]:
        item_type = get_args(tp)[0]

        def structure_tuple(value: object, _type: object) -> tuple[object, ...]:
            if not isinstance(value, (list, tuple)):
                raise TypeMismatch("a list", value)
            out: list[object] = []
            errors: list[Exception] = []
            for index, item in enumerate(value):
                try:
                    out.append(converter.structure(item, item_type))
                except Exception as exc:  # collected and re-raised as one group below
                    exc.__notes__ = [
                        *getattr(exc, "__notes__", []),
                        IterableValidationNote(f"index {index}", index, item_type),
                    ]
                    errors.append(exc)
            if errors:
                raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
            return tuple(out)

        return structure_tuple

    def attrs_factory(cl: type) -> Callable[[object, object], object]:
        generated = make_dict_structure_fn(cl, converter)

        def structure_class(value: object, _type: object) -> object:
            return generated(_string_keyed_mapping(value), cl)

        return structure_class

    converter.register_structure_hook_factory(_is_homogeneous_tuple, tuple_factory)
    converter.register_structure_hook_factory(attrs.has, attrs_factory)
    return converter


_CONVERTER = build_converter()


def iter_problems(exc: BaseException, path: KeyPath = ()) -> Iterator[tuple[KeyPath, str]]:
    """Flatten a cattrs error tree into ``(key path, message)`` pairs."""
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = ", ".join(sorted(field.name for field in attrs.fields(exc.cl)))
        for key in sorted(exc.extra_fields):
            yield (*path, key), f"unknown key (allowed here: {allowed})"
        return
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    sub_path = (*path, note.name)
                elif isinstance(note, IterableValidationNote):
                    sub_path = (*path, note.index)
            yield from iter_problems(sub, sub_path)
        return
    if isinstance(exc, FieldValueError):
        yield (*path, exc.field), exc.message
    elif isinstance(exc, TypeMismatch):
        yield path, exc.message
    elif isinstance(exc, KeyError):
        yield path, "required key is missing"
    else:
        yield path, f"{type(exc).__name__}: {exc}"


def structure_config(data: Mapping[str, object], provenance: Provenance | None = None) -> CoordexpConfig:
    """Build the typed config from a merged raw document, or raise one located ConfigError."""
    try:
        return _CONVERTER.structure(data, CoordexpConfig)
    except (ClassValidationError, TypeMismatch) as exc:
        problems = list(iter_problems(exc))
    raise problems_error(problems, provenance)


def problems_error(problems: list[tuple[KeyPath, str]], provenance: Provenance | None) -> ConfigError:
    """One ConfigError for several problems; the first problem's path is the error path."""

    def render(path: KeyPath, message: str) -> str:
        where = provenance.locate(path) if provenance is not None else None
        return f"{message} (at {where})" if where is not None else message

    first_path, first_message = problems[0]
    text = render(first_path, first_message)
    for path, message in problems[1:]:
        text += f"\n  also {format_path(path)}: {render(path, message)}"
    return ConfigError(format_path(first_path), text)


def unstructure_config(config: CoordexpConfig) -> dict[str, object]:
    """Plain dict of the typed config with every default filled in; absent sections omitted."""
    plain = thaw(_CONVERTER.unstructure(config))
    assert isinstance(plain, dict)
    return {name: plain[name] for name in TOP_LEVEL_SECTIONS if plain.get(name) is not None}
