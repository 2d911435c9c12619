"""Entry point of the `coordexp` command.

Each command group lives in its own module exposing `register(subparsers)`; a command's handler
receives the parsed namespace and returns the process exit code. Errors that a user caused
(`CoordexpError`) print one clear line on stderr and exit 2; anything else is a bug and keeps
its traceback. The namespace also carries `started_at`, the `time.time()` at which `main` began.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from coordexp.core.errors import CoordexpError

# Command groups, in the order `coordexp --help` lists them.
COMMAND_MODULES = (
    "coordexp.train.cli.cmd_train",
    "coordexp.train.cli.cmd_demo",
    "coordexp.train.cli.cmd_config",
    "coordexp.train.cli.cmd_pipeline",
    "coordexp.train.cli.cmd_plugins",
    "coordexp.train.cli.cmd_data",
    "coordexp.train.cli.cmd_model",
    "coordexp.train.cli.cmd_infer",
    "coordexp.train.cli.cmd_eval",
    "coordexp.train.cli.cmd_report",
    "coordexp.train.cli.cmd_env",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordexp",
        description="Train Qwen3-VL models to detect objects by writing CoordJSON with coordinate tokens.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    started_at = time.time()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started_at = started_at  # `coordexp demo`'s budget counts from here
    try:
        return int(args.handler(args) or 0)
    except CoordexpError as exc:
        print(f"coordexp: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
