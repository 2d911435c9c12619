"""`coordexp pipeline show CONFIG`: the resolved module list, configs and checksum."""

from __future__ import annotations

import argparse
import json


def _show(args: argparse.Namespace) -> int:
    from coordexp.train.config import load_config

    resolved = load_config(args.config, args.overrides)
    pipeline = resolved.pipeline
    if args.json:
        print(json.dumps({"checksum": pipeline.checksum, "payload": pipeline.payload()}, indent=2, sort_keys=True))
        return 0
    print(f"variant   {resolved.variant}")
    print(f"checksum  {pipeline.checksum}")
    print(f"default   {pipeline.is_default}")
    payload = pipeline.payload()
    for kind in ("objective", "diagnostics"):
        print(f"{kind}:")
        for entry in payload[kind]:
            state = "" if entry["enabled"] else "  (disabled)"
            print(f"  - {entry['name']}  channels={','.join(entry['channels'])}  weight={entry['weight']}{state}")
            for key, value in sorted(entry["config"].items()):
                print(f"      {key}: {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="inspect the resolved objective/diagnostics pipeline")
    psub = p.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    s = psub.add_parser("show", help="resolved modules with configs and the pipeline checksum")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=_show)
