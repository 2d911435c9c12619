"""`coordexp plugins [--json]`: every discoverable module and plugin, and why a broken one fails.

Lists the entries of the `coordexp.objectives`, `coordexp.diagnostics`, `coordexp.prompts` and
`coordexp.rollout_backends` entry-point groups and the pluggy plugins of the `coordexp` group:
name, kind, distribution and version, status (`ok`, `broken`, `duplicate`, `disabled` by
`COORDEXP_DISABLE_PLUGINS`), atoms and the config schema with defaults, hooks, and the error of a
broken entry. Listing imports every enabled entry (that is how a broken one is found); training
only imports the names a pipeline references. Exit code 0 when every entry is `ok` or `disabled`,
1 when at least one is broken or duplicated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


OK_STATUSES = frozenset({"ok", "disabled"})


def collect_plugins() -> list[dict[str, Any]]:
    """The `describe_all` listing of the installed modules and plugins (see the module docstring)."""
    # Imported here: the registry loads torch, which `coordexp --help` and the other commands'
    # parsers do not need.
    from coordexp.core.plugins.manager import get_plugin_manager
    from coordexp.core.plugins.registry import ModuleRegistry

    return ModuleRegistry(plugin_manager=get_plugin_manager()).describe_all()


def _config_text(schema: Sequence[Mapping[str, Any]]) -> str:
    if not schema:
        return "{}"
    return ", ".join(f"{field['key']}: {json.dumps(field['default'])} ({field['type']})" for field in schema)


def render_table(listing: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    """Human-readable listing: one line per entry, then its atoms, config, hooks or error."""
    if not listing:
        out.write("no coordexp modules or plugins are installed\n")
        return
    rows = [
        (
            str(item.get("kind", "")),
            str(item.get("name", item.get("object", ""))),
            f"{item.get('distribution', '')} {item.get('version', '')}".strip(),
            str(item.get("status", "")),
        )
        for item in listing
    ]
    widths = [
        max(len(header), *(len(row[i]) for row in rows))
        for i, header in enumerate(("kind", "name", "distribution", "status"))
    ]
    header = ("kind", "name", "distribution", "status")
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip() + "\n")
    for item, row in zip(listing, rows, strict=True):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
        indent = " " * 4
        if item.get("atoms"):
            out.write(f"{indent}atoms: {', '.join(item['atoms'])}\n")
        if "config" in item:
            out.write(f"{indent}config: {_config_text(item['config'])}\n")
        if item.get("hooks"):
            out.write(f"{indent}hooks: {', '.join(item['hooks'])}\n")
        if item.get("error"):
            out.write(f"{indent}error: {item['error']}\n")


def _run(args: argparse.Namespace) -> int:
    listing = collect_plugins()
    if args.json:
        json.dump(listing, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        render_table(listing, sys.stdout)
    return 0 if all(item.get("status") in OK_STATUSES for item in listing) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plugins",
        help="list installed objectives, diagnostics, prompts, backends and plugins",
        description=(__doc__ or "").split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (a JSON list)")
    p.set_defaults(handler=_run)
