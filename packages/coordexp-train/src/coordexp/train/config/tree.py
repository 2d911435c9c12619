"""Operations on plain config trees (nested mappings, lists and scalars)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from .keypath import KeyPath, format_path


def iter_paths(data: object, prefix: KeyPath = ()) -> Iterator[KeyPath]:
    """Yield the path of every mapping key and list element below ``data`` (pre-order)."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            path = (*prefix, key)
            yield path
            yield from iter_paths(value, path)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            path = (*prefix, index)
            yield path
            yield from iter_paths(value, path)


def copy_tree(value: object) -> object:
    """Deep copy of a plain tree: mappings become new dicts, lists new lists, scalars shared."""
    if isinstance(value, Mapping):
        return {key: copy_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_tree(item) for item in value]
    return value


_MISSING = object()


def get_path(data: object, path: KeyPath, default: object = _MISSING) -> object:
    """Return the value at ``path`` in nested mappings/lists; ``default`` (or KeyError) if absent."""
    node = data
    for part in path:
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            if default is _MISSING:
                raise KeyError(format_path(path))
            return default
    return node


def has_path(data: object, path: KeyPath) -> bool:
    """True when ``path`` addresses an existing value (which may be ``None``)."""
    absent = object()
    return get_path(data, path, absent) is not absent


def freeze(value: object) -> object:
    """Deep read-only copy: mappings become MappingProxyType, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: object) -> object:
    """Inverse of :func:`freeze`: plain dicts and lists (a deep copy)."""
    return copy_tree(value)
