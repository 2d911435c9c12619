"""``coordexp config preflight <yaml>`` (spec 05 §5.11).

Loads the config with the training loader and prints exactly one newline-terminated line of
canonical JSON with the keys ``rollout_backend``, ``server_base_urls`` and ``vllm_mode``:
``vllm_mode`` is ``"server"`` iff the backend is vllm, else null; ``server_base_urls`` is the
non-empty server list iff vllm, else ``[]``. stage1 has no rollouts and reports ``hf`` (no servers
to launch). Any error: nothing on stdout, the message on stderr, exit status 2. Launchers consume
only this output.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from coordexp.core.errors import CoordexpError
from coordexp.core.pipeline.checksum import canonical

from .loader import load_config

EXIT_ERROR = 2


def preflight_payload(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> dict[str, object]:
    """The §5.11 object for a config (raises on any config error)."""
    resolved = load_config(path, overrides)
    section = resolved.config.rollout_matching
    if section is None or section.rollout_backend == "hf":
        return {"rollout_backend": "hf", "server_base_urls": [], "vllm_mode": None}
    assert section.vllm is not None
    return {
        "rollout_backend": "vllm",
        "server_base_urls": [server.base_url for server in section.vllm.servers],
        "vllm_mode": section.vllm.mode,
    }


def preflight(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> str:
    """The preflight line: canonical JSON of :func:`preflight_payload`, without the newline."""
    return canonical(preflight_payload(path, overrides))


class _UsageError(Exception):
    """Bad command-line arguments (reported like any other preflight error)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coordexp config preflight",
        description="Print the launcher preflight line (one line of canonical JSON).",
    )
    parser.add_argument("config", help="training config YAML")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.seed=3"
    )
    return parser


def cmd_preflight(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """CLI entry: 0 and the line on stdout, or 2 with an empty stdout and the error on stderr."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        line = preflight(args.config, args.overrides)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except Exception as exc:  # the launcher contract: any failure is exit 2 with a message
        err.write(f"preflight error: {_describe(exc)}\n")
        return EXIT_ERROR
    out.write(line + "\n")
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (CoordexpError, _UsageError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
