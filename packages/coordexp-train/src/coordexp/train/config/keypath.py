"""Key paths, source locations and located config errors.

A key path addresses one value in a nested YAML document: a tuple of mapping keys (``str``) and
list indices (``int``), e.g. ``("rollout_matching", "vllm", "servers", 0, "base_url")``, rendered
as the dotted form ``rollout_matching.vllm.servers[0].base_url`` used in every error message
(spec 05 §5.9).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Union

import attrs

from coordexp.core.errors import ConfigError

KeyPath = tuple[Union[str, int], ...]


def format_path(path: KeyPath) -> str:
    """Render a key path in dotted form: ``("a", "b", 0, "c")`` → ``"a.b[0].c"``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out:
            out.append(f".{part}")
        else:
            out.append(part)
    return "".join(out)


@attrs.frozen
class Location:
    """Where a key was authored: a file (or an origin such as a CLI override) and a 1-based line."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@attrs.frozen
class Provenance:
    """Read-only map from key path to the location that authored it."""

    locations: Mapping[KeyPath, Location] = attrs.field(
        factory=dict, converter=lambda m: MappingProxyType(dict(m))
    )

    def locate(self, path: KeyPath) -> Location | None:
        """Location of ``path``, else of its nearest authored ancestor, else ``None``."""
        for end in range(len(path), 0, -1):
            found = self.locations.get(path[:end])
            if found is not None:
                return found
        return None

    def author(self, path: KeyPath) -> Location | None:
        """Location of exactly ``path`` (no ancestor fallback)."""
        return self.locations.get(path)


def located_error(
    path: KeyPath, message: str, provenance: Provenance | None = None
) -> ConfigError:
    """Build a ConfigError for ``path``, appending ``(at file:line)`` when the location is known."""
    where = provenance.locate(path) if provenance is not None else None
    text = f"{message} (at {where})" if where is not None else message
    return ConfigError(format_path(path), text)
