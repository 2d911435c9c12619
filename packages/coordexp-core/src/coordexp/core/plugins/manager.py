"""The ``coordexp`` pluggy plugin manager (spec 05 §5.1).

Plugins come from the entry-point group ``coordexp``. Environment:

* ``COORDEXP_DISABLE_PLUGINS=dist1,dist2`` — distributions (names compared PEP 503-normalized)
  whose plugins and modules are ignored, in every entry-point group.
* ``COORDEXP_TRACE_HOOKS=1`` — pluggy tracing of every hook call to stderr.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pluggy

from coordexp.core.errors import PluginError
from coordexp.core.plugins import hookspecs

PLUGIN_GROUP = "coordexp"
DISABLE_ENV = "COORDEXP_DISABLE_PLUGINS"
TRACE_ENV = "COORDEXP_TRACE_HOOKS"
UNKNOWN_DISTRIBUTION = "<unknown distribution>"

EntryPointSource = Callable[[str], Iterable[Any]]
"""``source(group)`` → entry points of that group: objects with ``name``, ``value``, ``group``,
``dist`` (``name``/``version``, or ``None``) and ``load()``, like ``importlib.metadata.EntryPoint``."""


def installed_entry_points(group: str) -> Iterable[Any]:
    """The default :data:`EntryPointSource`: entry points of installed distributions."""
    return importlib.metadata.entry_points(group=group)


def normalize_distribution_name(name: str) -> str:
    """PEP 503 normalization (``Coordexp_Losses`` → ``coordexp-losses``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def disabled_distributions(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Normalized distribution names listed in ``COORDEXP_DISABLE_PLUGINS``."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return frozenset(normalize_distribution_name(p.strip()) for p in raw.split(",") if p.strip())


def entry_point_distribution(entry_point: Any) -> tuple[str, str]:
    """``(distribution name, version)`` providing ``entry_point``."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return UNKNOWN_DISTRIBUTION, ""
    return str(dist.name), str(dist.version)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class CoordexpPluginManager(pluggy.PluginManager):
    """A pluggy manager for the ``coordexp`` project that remembers each plugin's distribution."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self._distributions: dict[str, tuple[str, str]] = {}

    def register_distribution_plugin(
        self, plugin: object, name: str, distribution: str, version: str
    ) -> None:
        """Register ``plugin`` under ``name`` and record the distribution that provides it."""
        self.register(plugin, name=name)
        self._distributions[name] = (distribution, version)

    def distribution_of(self, plugin_name: str) -> tuple[str, str] | None:
        """``(distribution, version)`` of a plugin loaded from an entry point, else ``None``."""
        return self._distributions.get(plugin_name)

    def implemented_hooks(self, plugin: object) -> list[str]:
        """Sorted names of the ``coordexp_*`` hooks ``plugin`` implements."""
        return sorted(caller.name for caller in self.get_hookcallers(plugin) or ())

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call ``hook_name`` on each implementing plugin separately (so results and errors can be
        attributed); returns ``[(plugin_name, result)]``. Goes through pluggy, so tracing applies."""
        caller = getattr(self.hook, hook_name)
        plugins = self.get_plugins()
        results: list[tuple[str, Any]] = []
        for impl in caller.get_hookimpls():
            others = [p for p in plugins if p is not impl.plugin]
            outcome = self.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
            results.append((impl.plugin_name, outcome[0] if outcome else None))
        return results

    def run_manifest_fields(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Fields plugins add to the run manifest via ``coordexp_run_manifest`` (add only).

        A plugin returning a key that the manifest or another plugin already has raises.
        """
        view = MappingProxyType(dict(manifest))
        added: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for plugin_name, fields in self.call_each("coordexp_run_manifest", manifest=view):
            if fields is None:
                continue
            if not isinstance(fields, Mapping):
                raise PluginError(
                    f"plugin {plugin_name!r}: coordexp_run_manifest must return a mapping of new "
                    f"fields or None, got {type(fields).__name__}"
                )
            for key, value in fields.items():
                if key in view:
                    raise PluginError(
                        f"plugin {plugin_name!r} tried to overwrite run-manifest field {key!r}; "
                        f"coordexp_run_manifest may only add fields"
                    )
                if key in added:
                    raise PluginError(
                        f"run-manifest field {key!r} is added by both plugins {owner[key]!r} and "
                        f"{plugin_name!r}"
                    )
                added[key] = value
                owner[key] = plugin_name
        return added


def get_plugin_manager(
    *, source: EntryPointSource | None = None, environ: Mapping[str, str] | None = None
) -> CoordexpPluginManager:
    """A fresh manager with every ``coordexp`` entry-point plugin loaded.

    Plugins of distributions in ``COORDEXP_DISABLE_PLUGINS`` are skipped. A plugin that fails to
    import raises :class:`PluginError` naming its distribution (plugins are always active, so
    there is no "unreferenced" case). ``COORDEXP_TRACE_HOOKS=1`` traces hook calls to stderr.
    """
    environ = os.environ if environ is None else environ
    source = installed_entry_points if source is None else source
    disabled = disabled_distributions(environ)
    manager = CoordexpPluginManager()
    for entry_point in sorted(source(PLUGIN_GROUP), key=lambda ep: (ep.name, ep.value)):
        distribution, version = entry_point_distribution(entry_point)
        if normalize_distribution_name(distribution) in disabled:
            continue
        if manager.has_plugin(entry_point.name):
            previous = manager.distribution_of(entry_point.name)
            raise PluginError(
                f"plugin name {entry_point.name!r} is provided by both {previous[0]} and "
                f"{distribution}; disable one with {DISABLE_ENV}=<distribution>"
            )
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {entry_point.name!r} ({entry_point.value}) from {distribution} {version} failed "
                f"to load: {type(exc).__name__}: {exc}; fix or uninstall it, or set "
                f"{DISABLE_ENV}={distribution}"
            ) from exc
        try:
            manager.register_distribution_plugin(plugin, entry_point.name, distribution, version)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {entry_point.name!r} from {distribution} {version} does not match the "
                f"coordexp hookspecs: {exc}"
            ) from exc
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a coordexp plugin implements an unknown hook (typo?): {exc}") from exc
    if _truthy(environ.get(TRACE_ENV)):
        manager.trace.root.setwriter(lambda text: sys.stderr.write(text))
        manager.enable_tracing()
    return manager
