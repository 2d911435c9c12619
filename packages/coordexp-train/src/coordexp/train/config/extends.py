"""`extends` resolution and the stage-2 profile-family leaf rule (spec 05 §5.9).

``extends`` (top level only) is a path or a non-empty list of paths, relative to the file that
names them. A file resolves depth-first as ``merge(merge(resolve(a), resolve(b)), self)``:

* mappings deep-merge; scalars **and lists** are replaced whole; an explicit ``null`` sets null
  (an empty mapping merges and therefore clears nothing);
* a cycle fails and shows the chain (``a.yaml -> b.yaml -> a.yaml``);
* single list ownership: when two sibling ancestors (distinct files) both author the same path and
  either value is a list, resolution fails instead of letting the list order decide silently. A
  file may always replace a list it inherited.

Profile families (D37): a directory holding ``base.yaml``, ``prod/`` and ``smoke/``. A leaf
``prod/*.yaml`` or ``smoke/*.yaml`` must contain exactly ``extends: ../base.yaml`` (one hop) and
``base.yaml`` must not use ``extends`` at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from coordexp.core.errors import ConfigError

from .keypath import KeyPath, Location, Provenance, located_error
from .tree import copy_tree, iter_paths
from .yaml_io import ConfigSource, display_name, load_yaml_file

EXTENDS_KEY = "extends"
PROFILE_LEAF_DIRS = ("prod", "smoke")
PROFILE_BASE = "base.yaml"
PROFILE_LEAF_EXTENDS = "../base.yaml"


def resolve_extends(path: str | os.PathLike[str]) -> ConfigSource:
    """Load ``path`` and merge its ``extends`` ancestors; the result has no ``extends`` key."""
    return _resolve(Path(path), chain=())


def _resolve(path: Path, chain: tuple[tuple[Path, str], ...]) -> ConfigSource:
    identity = path.resolve()
    name = display_name(path)
    if any(seen == identity for seen, _ in chain):
        shown = " -> ".join([shown_name for _, shown_name in chain] + [name])
        raise ConfigError(EXTENDS_KEY, f"cycle in extends: {shown}")
    own = load_yaml_file(path)
    parents = _parent_paths(own, path)
    body = ConfigSource(
        data={k: v for k, v in own.data.items() if k != EXTENDS_KEY},
        provenance=Provenance(
            {p: loc for p, loc in own.provenance.locations.items() if p[:1] != (EXTENDS_KEY,)}
        ),
        files=own.files,
    )
    if not parents:
        return body
    next_chain = (*chain, (identity, name))
    merged: ConfigSource | None = None
    for parent in parents:
        resolved = _resolve(parent, next_chain)
        merged = resolved if merged is None else merge_sources(merged, resolved, siblings=True)
    assert merged is not None
    return merge_sources(merged, body, siblings=False)


def _parent_paths(source: ConfigSource, path: Path) -> list[Path]:
    if EXTENDS_KEY not in source.data:
        return []
    raw = source.data[EXTENDS_KEY]
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(
        isinstance(item, str) and item.strip() for item in items
    ):
        raise located_error(
            (EXTENDS_KEY,),
            f"expected a path or a non-empty list of paths, got {raw!r}",
            source.provenance,
        )
    parents = []
    for index, item in enumerate(items):
        target = path.parent / item
        if not target.is_file():
            key: KeyPath = (EXTENDS_KEY,) if isinstance(raw, str) else (EXTENDS_KEY, index)
            raise located_error(
                key,
                f"extended file {display_name(target)} does not exist "
                f"(paths are relative to {display_name(path.parent) or '.'})",
                source.provenance,
            )
        parents.append(target)
    return parents


def merge_data(base: object, over: object) -> object:
    """Deep-merge ``over`` onto ``base``: mappings merge key-wise, anything else replaces whole."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = {key: copy_tree(value) for key, value in base.items()}
        for key, value in over.items():
            out[key] = merge_data(base[key], value) if key in base else copy_tree(value)
        return out
    return copy_tree(over)


def merge_sources(base: ConfigSource, over: ConfigSource, *, siblings: bool) -> ConfigSource:
    """Merge two documents; with ``siblings=True`` enforce single list ownership first."""
    if siblings:
        _check_list_ownership(base, over)
    data = merge_data(base.data, over.data)
    assert isinstance(data, dict)
    locations: dict[KeyPath, Location] = {}
    for path in iter_paths(data):
        found = over.provenance.author(path) or base.provenance.author(path)
        if found is not None:
            locations[path] = found
    files = tuple(dict.fromkeys((*base.files, *over.files)))
    return ConfigSource(data=data, provenance=Provenance(locations), files=files)


def _check_list_ownership(base: ConfigSource, over: ConfigSource) -> None:
    """Fail when sibling ancestors from different files both author a path holding a list."""

    def walk(left: object, right: object, path: KeyPath) -> None:
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            for key in right:
                if key in left:
                    walk(left[key], right[key], (*path, key))
            return
        if not (isinstance(left, list) or isinstance(right, list)):
            return
        left_loc = base.provenance.author(path)
        right_loc = over.provenance.author(path)
        if left_loc is None or right_loc is None or left_loc.file == right_loc.file:
            return
        raise located_error(
            path,
            f"list authored by two ancestors ({left_loc} and {right_loc}); a list has a single "
            "owner: keep it in one file, or set it in the extending file",
            None,
        )

    walk(base.data, over.data, ())


def profile_family_of(path: str | os.PathLike[str]) -> Path | None:
    """The family directory when ``path`` is a profile leaf (``<family>/{prod,smoke}/*.yaml``)."""
    leaf = Path(path)
    if leaf.parent.name not in PROFILE_LEAF_DIRS:
        return None
    family = leaf.parent.parent
    return family if (family / PROFILE_BASE).is_file() else None


def check_profile_leaf(path: str | os.PathLike[str]) -> None:
    """Enforce the one-hop leaf rule when ``path`` is a profile-family leaf; no-op otherwise."""
    family = profile_family_of(path)
    if family is None:
        return
    leaf = load_yaml_file(path)
    raw = leaf.data.get(EXTENDS_KEY)
    if raw != PROFILE_LEAF_EXTENDS:
        raise located_error(
            (EXTENDS_KEY,),
            f"a profile leaf must contain exactly `extends: {PROFILE_LEAF_EXTENDS}` (one hop; "
            f"inline smoke overrides in the leaf), got {raw!r} in {display_name(path)}",
            leaf.provenance,
        )
    base = load_yaml_file(family / PROFILE_BASE)
    if EXTENDS_KEY in base.data:
        raise located_error(
            (EXTENDS_KEY,),
            f"the family base {display_name(family / PROFILE_BASE)} must be flat (no extends)",
            base.provenance,
        )
