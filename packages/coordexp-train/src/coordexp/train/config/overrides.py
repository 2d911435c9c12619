"""Dotted command-line overrides: ``a.b.c=value`` and ``a.b[0].c=value``.

The key path is ``name`` segments joined by ``.``, each optionally followed by ``[index]``
selectors into existing lists. The value is parsed as one YAML document with the same safe loader
as config files, so ``3`` is an int, ``0.5`` a float, ``true`` a bool, ``null`` (or nothing) is
null, ``'3'`` is a string, and flow collections work (``[1, 2]``, ``{name: token_ce}``).

Overrides set the value at the path (replacing whatever was there, mappings included); missing
intermediate mappings are created, and an explicit ``null`` on the way counts as absent. Unknown
paths are not rejected here: they are created and then fail in the strict schema like any other
unknown key. Overrides apply after ``extends`` resolution and count as authored in the leaf.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from coordexp.core.errors import ConfigError

from .extends import EXTENDS_KEY
from .keypath import KeyPath, Location, Provenance, format_path
from .tree import copy_tree, iter_paths
from .yaml_io import ConfigSource, parse_yaml_text

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


def parse_override(text: str) -> tuple[KeyPath, object]:
    """Split ``path=value`` into a key path and a parsed YAML value."""
    if "=" not in text:
        raise ConfigError("", f"override {text!r} must look like dotted.key=value")
    raw_path, raw_value = text.split("=", 1)
    path = parse_key_path(raw_path.strip(), text)
    if path[0] == EXTENDS_KEY:
        raise ConfigError(EXTENDS_KEY, f"override {text!r}: `extends` cannot be overridden")
    value, _ = parse_yaml_text(raw_value, origin=override_origin(text), line_numbers=False)
    return path, value


def override_origin(text: str) -> str:
    """How an override is named in locations and messages."""
    return f"override `{text}`"


def parse_key_path(raw: str, text: str) -> KeyPath:
    """Parse ``a.b[0].c`` into ``("a", "b", 0, "c")``; ``text`` is the override, for messages."""
    if not raw:
        raise ConfigError("", f"override {text!r} has an empty key path")
    path: list[str | int] = []
    for segment in raw.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ConfigError(
                "",
                f"override {text!r}: bad key segment {segment!r} (expected name or name[index])",
            )
        path.append(match.group(1))
        path.extend(int(index) for index in _INDEX.findall(match.group(2)))
    return tuple(path)


def apply_overrides(source: ConfigSource, overrides: Iterable[str]) -> ConfigSource:
    """Apply overrides in order; later overrides win. Returns a new source."""
    data = copy_tree(source.data)
    assert isinstance(data, dict)
    locations = dict(source.provenance.locations)
    for text in overrides:
        path, value = parse_override(text)
        _set(data, path, copy_tree(value), text)
        origin = override_origin(text)
        for stale in [p for p in locations if p[: len(path)] == path]:
            del locations[stale]
        for end in range(1, len(path) + 1):
            locations.setdefault(path[:end], Location(origin))
        locations[path] = Location(origin)
        for sub in iter_paths(value, path):
            locations[sub] = Location(origin)
    files = source.files
    return ConfigSource(data=data, provenance=Provenance(locations), files=files)


def _set(data: dict[str, object], path: KeyPath, value: object, text: str) -> None:
    node: object = data
    for depth, part in enumerate(path[:-1]):
        node = _step(node, part, path[: depth + 1], path[depth + 1], text)
    _assign(node, path[-1], path, value, text)


def _step(node: object, part: str | int, where: KeyPath, following: str | int, text: str) -> object:
    if isinstance(part, int):
        _check_index(node, part, where, text)
        assert isinstance(node, list)
        child = node[part]
    else:
        assert isinstance(node, dict)
        child = node.get(part)
        if child is None and isinstance(following, str):
            child = {}
            node[part] = child
    if isinstance(following, str) and not isinstance(child, dict):
        raise ConfigError(
            format_path(where),
            f"override {text!r}: cannot set a key below a {type(child).__name__} value",
        )
    if isinstance(following, int) and not isinstance(child, list):
        raise ConfigError(
            format_path(where), f"override {text!r}: [{following}] needs a list here"
        )
    return child


def _assign(node: object, part: str | int, path: KeyPath, value: object, text: str) -> None:
    if isinstance(part, int):
        _check_index(node, part, path, text)
        assert isinstance(node, list)
        node[part] = value
    else:
        assert isinstance(node, Mapping)
        node[part] = value  # type: ignore[index]


def _check_index(node: object, index: int, where: KeyPath, text: str) -> None:
    if not isinstance(node, list):
        raise ConfigError(format_path(where), f"override {text!r}: [{index}] needs a list here")
    if index >= len(node):
        raise ConfigError(
            format_path(where),
            f"override {text!r}: index {index} is out of range (the list has {len(node)} items)",
        )
