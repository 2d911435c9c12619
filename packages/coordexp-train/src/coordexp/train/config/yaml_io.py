"""Safe YAML reading with key locations, and plain YAML writing.

Only the YAML core types are accepted: mappings with string keys, lists, strings, ints, floats,
bools and null. Any other tag (``!!python/object``, ``!!binary``, a custom ``!tag``, an implicit
timestamp such as an unquoted ``2024-01-01``) raises a ConfigError naming ``file:line``; nothing is
ever constructed from a tag. Duplicate keys, merge keys (``<<``; use ``extends``), recursive
aliases and multi-document files are errors too. Plain anchors and aliases are allowed.

The document is composed into a node tree with ruamel.yaml's pure-Python safe composer and
converted here, so every key path keeps the line it was written on (:class:`ConfigSource`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from coordexp.core.errors import ConfigError

from .keypath import KeyPath, Location, Provenance, format_path

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + name for name in ("null", "bool", "int", "float", "str"))
_SEQ_TAG = _TAG + "seq"
_MAP_TAG = _TAG + "map"
_MERGE_TAG = _TAG + "merge"
_TIMESTAMP_TAG = _TAG + "timestamp"


@attrs.frozen
class ConfigSource:
    """A parsed (and possibly merged) config document.

    ``data`` is a plain nested dict/list/scalar tree (treat it as read-only: every transformation
    in this package builds a new one); ``provenance`` maps each key path to where it was authored;
    ``files`` lists the files that contributed, in resolution order (the entry file last).
    """

    data: Mapping[str, object]
    provenance: Provenance
    files: tuple[str, ...]


def display_name(path: str | os.PathLike[str]) -> str:
    """The file name used in messages: the normalized path as given (not made absolute)."""
    return os.path.normpath(os.fspath(path))


def load_yaml_file(path: str | os.PathLike[str]) -> ConfigSource:
    """Read one YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    name = display_name(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {name}: {exc}") from None
    value, locations = parse_yaml_text(text, origin=name, line_numbers=True)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError("", f"the top level of {name} must be a mapping, got {_kind(value)}")
    return ConfigSource(data=value, provenance=Provenance(locations), files=(name,))


def parse_yaml_text(
    text: str, *, origin: str, line_numbers: bool = True, base_path: KeyPath = ()
) -> tuple[object, dict[KeyPath, Location]]:
    """Parse one YAML document into plain Python values plus the location of every key path.

    ``origin`` names the text in messages and locations (a file name or e.g. a CLI override);
    ``base_path`` is prepended to every recorded key path. With ``line_numbers=False`` the
    locations carry no line (used for one-line CLI values, where a line number would mislead).
    """
    try:
        node = YAML(typ="safe", pure=True).compose(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{origin}:{mark.line + 1}" if mark is not None and line_numbers else origin
        problem = "; ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise ConfigError("", f"invalid YAML in {where}: {problem}") from None
    except YAMLError as exc:
        raise ConfigError("", f"invalid YAML in {origin}: {exc}") from None
    if node is None:
        return None, {}
    builder = _Builder(origin, line_numbers)
    value = builder.build(node, base_path)
    return value, builder.locations


class _Builder:
    """Converts a composed node tree into plain values, recording key locations."""

    def __init__(self, origin: str, line_numbers: bool) -> None:
        self.origin = origin
        self.line_numbers = line_numbers
        self.locations: dict[KeyPath, Location] = {}
        self._active: set[int] = set()
        self._constructor = YAML(typ="safe", pure=True).constructor

    def _where(self, node: Node) -> Location:
        line = node.start_mark.line + 1 if self.line_numbers and node.start_mark else None
        return Location(self.origin, line)

    def _fail(self, node: Node, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(format_path(path), f"{message} (at {self._where(node)})")

    def build(self, node: Node, path: KeyPath) -> object:
        if id(node) in self._active:
            raise self._fail(node, path, "recursive YAML alias")
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            return self._scalar(node, path)
        finally:
            self._active.discard(id(node))

    def _check_tag(self, node: Node, path: KeyPath, allowed: frozenset[str] | str) -> None:
        tag = node.tag
        ok = tag in allowed if isinstance(allowed, frozenset) else tag == allowed
        if ok:
            return
        if tag == _TIMESTAMP_TAG:
            raise self._fail(
                node, path, f"{node.value!r} reads as a YAML timestamp; quote it to make it a string"
            )
        shown = "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag
        raise self._fail(
            node,
            path,
            f"YAML tag {shown} is not allowed; configs use plain mappings, lists, strings, "
            "numbers, booleans and null only",
        )

    def _scalar(self, node: Node, path: KeyPath) -> object:
        if not isinstance(node, ScalarNode):
            raise self._fail(node, path, f"unsupported YAML node {type(node).__name__}")
        self._check_tag(node, path, _SCALAR_TAGS)
        return self._constructor.construct_object(node, deep=True)

    def _sequence(self, node: SequenceNode, path: KeyPath) -> list[object]:
        self._check_tag(node, path, _SEQ_TAG)
        out: list[object] = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            self.locations[item_path] = self._where(item)
            out.append(self.build(item, item_path))
        return out

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, object]:
        self._check_tag(node, path, _MAP_TAG)
        out: dict[str, object] = {}
        first_seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                raise self._fail(
                    key_node, path, "YAML merge keys (<<) are not supported; use `extends`"
                )
            if not isinstance(key_node, ScalarNode) or key_node.tag != _TAG + "str":
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                raise self._fail(
                    key_node, path, f"mapping keys must be strings, got {shown!r} (quote it)"
                )
            key = key_node.value
            key_path = (*path, key)
            if key in first_seen:
                raise self._fail(
                    key_node,
                    key_path,
                    f"duplicate key (first defined at {self._where(first_seen[key])})",
                )
            first_seen[key] = key_node
            self.locations[key_path] = self._where(key_node)
            out[key] = self.build(value_node, key_path)
        return out


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def dump_yaml(data: Mapping[str, object]) -> str:
    """Write plain data (dicts, lists, scalars) as block-style YAML, keeping key order; the text
    reads back to equal data (non-ASCII characters are written as escapes)."""
    writer = YAML(typ="safe", pure=True)
    writer.default_flow_style = False
    # Escaped non-ASCII is the only form that always reads back: raw NEL/LS/PS characters are
    # YAML line breaks and get folded into spaces.
    writer.allow_unicode = False
    writer.sort_base_mapping_type_on_output = False
    stream = io.StringIO()
    writer.dump(_plain(data), stream)
    return stream.getvalue()


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
