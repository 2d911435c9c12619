"""Lifecycle hookspecs of the ``coordexp`` pluggy project (spec 05 §5.1).

Plugins are objects or modules registered under the entry-point group ``coordexp`` whose functions
carry ``@hookimpl``. Every hook is called with keyword arguments. Hook order never decides loss
order; the pipeline YAML list does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pluggy

PROJECT_NAME = "coordexp"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def coordexp_register(register: Callable[[type], None]) -> None:
    """Call ``register(cls)`` for each module class this plugin provides.

    ``cls`` carries ``name`` (its YAML name), ``kind`` (``objective``, ``diagnostic``, ``prompt``
    or ``rollout_backend``) and ``api_version``; it is checked like an entry-point class when a
    pipeline references it. Entry-point groups are the lazy alternative to this hook.
    """


@hookspec
def coordexp_pipeline_built(manifest: Mapping[str, Any]) -> None:
    """The pipeline was resolved; ``manifest`` is its read-only payload plus ``checksum``."""


@hookspec
def coordexp_run_manifest(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return extra run-manifest fields (add only: existing keys cannot be overwritten)."""


@hookspec
def coordexp_step_start(step: int, kind: str) -> None:
    """Optimizer step ``step`` (0-indexed) starts; ``kind`` is the channel (``"A"``/``"B"``)."""


@hookspec
def coordexp_rollouts_ready(targets: Sequence[Any]) -> None:
    """The step's rollout targets are built (read-only; Channel B only)."""


@hookspec
def coordexp_step_end(step: int, metrics: Mapping[str, float]) -> None:
    """Optimizer step ``step`` finished with its reduced, logged metrics (read-only)."""
