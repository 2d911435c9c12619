"""`coordexp config {show, preflight, validate-profiles}` (spec 05 §5.9, §5.11)."""

from __future__ import annotations

import argparse


def _show(args: argparse.Namespace) -> int:
    from coordexp.train.config import load_config, to_yaml

    print(to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _preflight(args: argparse.Namespace) -> int:
    from coordexp.train.config import cmd_preflight

    return cmd_preflight([args.config, *args.overrides])


def _profiles(args: argparse.Namespace) -> int:
    from coordexp.train.config import validate_profiles

    loaded = validate_profiles(args.family)
    for path, resolved in loaded.items():
        print(f"ok  {path}  checksum={resolved.pipeline.checksum[:16]}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show, preflight and validate configs")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for name, handler, help_text in (
        ("show", _show, "print the resolved config as YAML"),
        ("resolve", _show, "alias of show"),
        ("preflight", _preflight, "one line of canonical JSON for launchers (exit 2 on errors)"),
    ):
        c = csub.add_parser(name, help=help_text)
        c.add_argument("config")
        c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
        c.set_defaults(handler=handler)
    v = csub.add_parser("validate-profiles", help="load every prod/ and smoke/ leaf of a stage-2 family")
    v.add_argument("family", help="family directory holding base.yaml, prod/, smoke/")
    v.set_defaults(handler=_profiles)
