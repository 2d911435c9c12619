"""``coordexp config validate-profiles <family>`` (spec 05 §5.9, D37).

A stage-2 profile family is a directory with a flat ``base.yaml`` and the leaf directories
``prod/`` and ``smoke/``; runs are discovered only as ``prod/*.yaml`` and ``smoke/*.yaml``, each
extending exactly ``../base.yaml``. Validation loads every leaf with the training loader and
reports every failing leaf in one error.
"""

from __future__ import annotations

import os
from pathlib import Path

from coordexp.core.errors import ConfigError, CoordexpError

from .extends import EXTENDS_KEY, PROFILE_BASE, PROFILE_LEAF_DIRS
from .loader import ResolvedConfig, load_config
from .yaml_io import display_name, load_yaml_file


def family_leaves(family_dir: str | os.PathLike[str]) -> list[Path]:
    """The family's leaves (``prod/*.yaml`` then ``smoke/*.yaml``, sorted); checks the layout."""
    family = Path(family_dir)
    name = display_name(family)
    problems: list[str] = []
    if not (family / PROFILE_BASE).is_file():
        problems.append(f"missing {PROFILE_BASE}")
    leaves: list[Path] = []
    for leaf_dir in PROFILE_LEAF_DIRS:
        folder = family / leaf_dir
        if not folder.is_dir():
            problems.append(f"missing {leaf_dir}/")
            continue
        found = sorted(folder.glob("*.yaml"))
        strays = sorted(folder.glob("*.yml"))
        if strays:
            problems.append(
                "leaves must end in .yaml (tooling ignores others): "
                + ", ".join(display_name(p) for p in strays)
            )
        if not found:
            problems.append(f"{leaf_dir}/ has no *.yaml leaves")
        leaves.extend(found)
    if problems:
        raise ConfigError("", f"profile family {name}: " + "; ".join(problems))
    return leaves


def validate_profiles(family_dir: str | os.PathLike[str]) -> dict[str, ResolvedConfig]:
    """Load every leaf of the family; returns ``{leaf path: ResolvedConfig}`` in leaf order.

    Raises one ConfigError listing every failing leaf with its error.
    """
    leaves = family_leaves(family_dir)
    base = load_yaml_file(Path(family_dir) / PROFILE_BASE)
    failures: list[str] = []
    if EXTENDS_KEY in base.data:
        failures.append(f"{display_name(Path(family_dir) / PROFILE_BASE)}: must be flat (no extends)")
    loaded: dict[str, ResolvedConfig] = {}
    for leaf in leaves:
        try:
            loaded[display_name(leaf)] = load_config(leaf)
        except CoordexpError as exc:
            failures.append(f"{display_name(leaf)}: {exc}")
    if failures:
        raise ConfigError(
            "",
            f"profile family {display_name(family_dir)}: {len(failures)} failing:\n  "
            + "\n  ".join(failures),
        )
    return loaded
