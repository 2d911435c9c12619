"""Entry-point discovery of pipeline modules, prompts and rollout backends (spec 05 §5.1).

Entry-point groups (entry name = YAML name): ``coordexp.objectives``, ``coordexp.diagnostics``,
``coordexp.prompts``, ``coordexp.rollout_backends``. Pluggy plugins may also contribute classes
through the ``coordexp_register`` hook. Listing never imports anything; :meth:`ModuleRegistry.load`
imports only the referenced entry, so a broken plugin that no pipeline references is ignored.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from coordexp.core.errors import PluginError
from coordexp.core.pipeline.checksum import schema_typed
from coordexp.core.plugins.manager import (
    DISABLE_ENV,
    CoordexpPluginManager,
    EntryPointSource,
    disabled_distributions,
    entry_point_distribution,
    installed_entry_points,
    normalize_distribution_name,
)
from coordexp.core.plugins.protocol import API_VERSION, DIAGNOSTIC, OBJECTIVE

KIND_GROUPS: Mapping[str, str] = {
    OBJECTIVE: "coordexp.objectives",
    DIAGNOSTIC: "coordexp.diagnostics",
    "prompt": "coordexp.prompts",
    "rollout_backend": "coordexp.rollout_backends",
}
MODULE_KINDS = (OBJECTIVE, DIAGNOSTIC)
_OBJECTIVE_METHODS = ("validate", "resolve_config", "metric_keys", "compute", "atom_weights", "denominators")
_DIAGNOSTIC_METHODS = ("validate", "resolve_config", "metric_keys", "compute")
HOOK_VALUE_PREFIX = "coordexp_register:"


class UnknownModuleError(PluginError):
    """No enabled distribution provides ``name`` in ``kind``'s group."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(message)


@attrs.frozen
class RegistryEntry:
    """One discovered provider of ``name`` in ``kind``'s group, not yet imported.

    ``value`` is the entry-point value (``"module:attr"``), or ``"coordexp_register:<module:qualname>"``
    for a class contributed by a pluggy plugin.
    """

    name: str
    kind: str
    distribution: str
    version: str
    value: str
    load_object: Callable[[], object] = attrs.field(eq=False, repr=False)

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version}".strip()


def check_module_class(obj: object, kind: str, name: str, provider: str) -> None:
    """Raise :class:`PluginError` unless ``obj`` satisfies the protocol of ``kind`` under ``name``.

    Every kind: a class with ``name == name``, ``kind == kind``, ``api_version == API_VERSION``.
    Objectives and diagnostics also: a frozen attrs ``Config`` constructible with defaults and
    with resolvable field types, the protocol methods, no abstract methods left, and ``atoms``
    (objectives: a non-empty tuple of unique names; diagnostics: empty).
    """
    where = f"{kind} {name!r} from {provider}"
    if not isinstance(obj, type):
        raise PluginError(f"{where}: the entry point must name a class, got {type(obj).__name__}")
    if getattr(obj, "name", None) != name:
        raise PluginError(
            f"{where}: class {obj.__qualname__} has name={getattr(obj, 'name', None)!r}; the entry-point "
            f"name and the class attribute `name` must be equal"
        )
    if getattr(obj, "kind", None) != kind:
        raise PluginError(
            f"{where}: class {obj.__qualname__} has kind={getattr(obj, 'kind', None)!r}, expected {kind!r}"
        )
    api = getattr(obj, "api_version", None)
    if isinstance(api, bool) or api != API_VERSION:
        raise PluginError(
            f"{where}: api_version {api!r} is not supported; this coordexp-core implements module "
            f"API v{API_VERSION}. Install a version of {provider.split(' ')[0]} built for API v{API_VERSION}"
        )
    if kind not in MODULE_KINDS:
        return
    _check_config_class(obj, where)
    methods = _OBJECTIVE_METHODS if kind == OBJECTIVE else _DIAGNOSTIC_METHODS
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if missing:
        raise PluginError(f"{where}: missing protocol methods {missing}")
    if inspect.isabstract(obj):
        raise PluginError(f"{where}: abstract methods not implemented: {sorted(obj.__abstractmethods__)}")
    atoms = getattr(obj, "atoms", None)
    if kind == OBJECTIVE:
        if (
            not isinstance(atoms, tuple)
            or not atoms
            or not all(isinstance(a, str) and a and "/" not in a for a in atoms)
            or len(set(atoms)) != len(atoms)
        ):
            raise PluginError(
                f"{where}: `atoms` must be a non-empty tuple of unique names without '/', got {atoms!r}"
            )
    elif atoms not in ((), None):
        raise PluginError(f"{where}: diagnostics produce no atoms, got atoms={atoms!r}")


def _check_config_class(obj: type, where: str) -> None:
    config_cls = getattr(obj, "Config", None)
    if not (isinstance(config_cls, type) and attrs.has(config_cls)):
        raise PluginError(f"{where}: `Config` must be an attrs class, got {config_cls!r}")
    try:
        attrs.resolve_types(config_cls)
    except Exception as exc:
        raise PluginError(
            f"{where}: Config field types cannot be resolved: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        instance = config_cls()
    except Exception as exc:
        raise PluginError(
            f"{where}: Config() must construct from defaults (every field defaulted): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    fields = attrs.fields(config_cls)
    probe = fields[0].name if fields else "__coordexp_probe__"
    try:
        setattr(instance, probe, getattr(instance, probe, None))
    except attrs.exceptions.FrozenInstanceError:
        return
    except AttributeError:
        pass
    raise PluginError(f"{where}: Config must be frozen (use @attrs.frozen)")


def _article(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _type_name(tp: object) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def config_schema(config_cls: type) -> list[dict[str, object]]:
    """``[{key, type, default}]`` of a module Config (defaults from a default instance)."""
    attrs.resolve_types(config_cls)
    defaults = config_cls()
    return [
        {
            "key": field.alias,
            "type": _type_name(field.type),
            "default": schema_typed(field.type, getattr(defaults, field.name)),
        }
        for field in attrs.fields(config_cls)
        if field.init
    ]


class ModuleRegistry:
    """Modules discoverable by kind and YAML name.

    ``source`` feeds entry points (default: installed distributions); ``plugin_manager``
    contributes classes via ``coordexp_register``; ``environ`` supplies
    ``COORDEXP_DISABLE_PLUGINS`` (default: ``os.environ``).
    """

    def __init__(
        self,
        source: EntryPointSource | None = None,
        *,
        plugin_manager: CoordexpPluginManager | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        source = installed_entry_points if source is None else source
        self._disabled_names = disabled_distributions(os.environ if environ is None else environ)
        self._entries: list[RegistryEntry] = []
        self._disabled: list[RegistryEntry] = []
        self._rejected: list[dict[str, str]] = []
        self._loaded: dict[tuple[str, str], type] = {}
        self._plugin_manager = plugin_manager
        for kind, group in KIND_GROUPS.items():
            for entry_point in source(group):
                distribution, version = entry_point_distribution(entry_point)
                self._add(
                    RegistryEntry(
                        name=entry_point.name,
                        kind=kind,
                        distribution=distribution,
                        version=version,
                        value=entry_point.value,
                        load_object=entry_point.load,
                    )
                )
        if plugin_manager is not None:
            self._collect_registered(plugin_manager)

    def _add(self, entry: RegistryEntry) -> None:
        if normalize_distribution_name(entry.distribution) in self._disabled_names:
            target = self._disabled
        else:
            target = self._entries
        if entry not in target:  # one distribution visible twice on sys.path
            target.append(entry)

    def _collect_registered(self, manager: CoordexpPluginManager) -> None:
        for impl in manager.hook.coordexp_register.get_hookimpls():
            plugin_name = impl.plugin_name
            distribution, version = manager.distribution_of(plugin_name) or (f"<plugin {plugin_name}>", "")

            def register(
                cls: type, _dist: str = distribution, _ver: str = version, _plugin: str = plugin_name
            ) -> None:
                kind = getattr(cls, "kind", None)
                name = getattr(cls, "name", None)
                if kind not in KIND_GROUPS or not isinstance(name, str) or not name:
                    self._rejected.append(
                        {
                            "plugin": _plugin,
                            "distribution": _dist,
                            "object": repr(cls),
                            "error": "registered object needs a str `name` and a `kind` in "
                            f"{sorted(KIND_GROUPS)}",
                        }
                    )
                    return
                value = f"{HOOK_VALUE_PREFIX}{cls.__module__}:{getattr(cls, '__qualname__', name)}"
                self._add(RegistryEntry(name, kind, _dist, _ver, value, load_object=lambda: cls))

            others = [p for p in manager.get_plugins() if p is not impl.plugin]
            manager.subset_hook_caller("coordexp_register", remove_plugins=others)(register=register)

    def _kind_group(self, kind: str) -> str:
        try:
            return KIND_GROUPS[kind]
        except KeyError:
            raise PluginError(
                f"unknown module kind {kind!r}; expected one of {sorted(KIND_GROUPS)}"
            ) from None

    def list_entries(self, kind: str | None = None) -> list[RegistryEntry]:
        """Enabled entries (of one kind or all), sorted by kind, name, distribution; imports nothing."""
        if kind is not None:
            self._kind_group(kind)
        entries = [e for e in self._entries if kind is None or e.kind == kind]
        return sorted(entries, key=lambda e: (e.kind, e.name, e.distribution))

    def _unknown(self, kind: str, name: str) -> UnknownModuleError:
        available = self.list_entries(kind)
        listing = ", ".join(f"{e.name} ({e.provider})" for e in available) or "none installed"
        message = f"no {kind} named {name!r} is registered in {KIND_GROUPS[kind]}; available: {listing}"
        close = difflib.get_close_matches(name, sorted({e.name for e in available}), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        blocked = [e for e in self._disabled if e.kind == kind and e.name == name]
        if blocked:
            providers = ", ".join(e.provider for e in blocked)
            message += f"; {name!r} is provided by {providers}, disabled by {DISABLE_ENV}"
        elsewhere = [e for e in self._entries if e.kind != kind and e.name == name]
        if elsewhere:
            message += f"; {name!r} is registered as {_article(elsewhere[0].kind)}, not as {_article(kind)}"
        return UnknownModuleError(kind, name, message)

    def entry(self, kind: str, name: str) -> RegistryEntry:
        """The single enabled provider of ``name``; missing or duplicated names raise."""
        self._kind_group(kind)
        candidates = [e for e in self._entries if e.kind == kind and e.name == name]
        if not candidates:
            raise self._unknown(kind, name)
        if len(candidates) > 1:
            providers = " and ".join(f"{e.provider} ({e.value})" for e in candidates)
            raise PluginError(
                f"{kind} {name!r} is provided by more than one distribution: {providers}; uninstall one "
                f"or disable it with {DISABLE_ENV}=<distribution>"
            )
        return candidates[0]

    def load(self, kind: str, name: str) -> type:
        """Import and check exactly one entry (cached). Raises :class:`PluginError` (or its
        subclass :class:`UnknownModuleError`) with the providers and the underlying error."""
        key = (kind, name)
        if key in self._loaded:
            return self._loaded[key]
        entry = self.entry(kind, name)
        try:
            obj = entry.load_object()
        except Exception as exc:
            raise PluginError(
                f"{kind} {name!r} from {entry.provider} ({entry.value}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        check_module_class(obj, kind, name, entry.provider)
        self._loaded[key] = obj
        return obj

    def describe_all(self) -> list[dict[str, Any]]:
        """The ``coordexp plugins --json`` listing: every module entry (``status`` ok, broken,
        duplicate or disabled; config schema with defaults for loadable modules) and every pluggy
        plugin with its hooks. Imports every enabled entry."""
        listing: list[dict[str, Any]] = []
        for entry in sorted(self._entries + self._disabled, key=lambda e: (e.kind, e.name, e.distribution)):
            item: dict[str, Any] = {
                "name": entry.name,
                "kind": entry.kind,
                "distribution": entry.distribution,
                "version": entry.version,
                "value": entry.value,
            }
            if entry in self._disabled:
                item["status"] = "disabled"
            else:
                item.update(self._describe_loadable(entry))
            listing.append(item)
        for rejected in self._rejected:
            listing.append({"kind": "invalid", "status": "broken", **rejected})
        if self._plugin_manager is not None:
            manager = self._plugin_manager
            for plugin_name, plugin in sorted(manager.list_name_plugin(), key=lambda p: p[0]):
                distribution, version = manager.distribution_of(plugin_name) or (
                    f"<plugin {plugin_name}>",
                    "",
                )
                listing.append(
                    {
                        "name": plugin_name,
                        "kind": "plugin",
                        "distribution": distribution,
                        "version": version,
                        "status": "ok",
                        "hooks": manager.implemented_hooks(plugin),
                    }
                )
        return listing

    def _describe_loadable(self, entry: RegistryEntry) -> dict[str, Any]:
        providers = [e for e in self._entries if e.kind == entry.kind and e.name == entry.name]
        try:
            cls = self.load(entry.kind, entry.name)
        except PluginError as exc:
            return {"status": "duplicate" if len(providers) > 1 else "broken", "error": str(exc)}
        item: dict[str, Any] = {"status": "ok", "api_version": cls.api_version}
        if entry.kind in MODULE_KINDS:
            item["atoms"] = list(getattr(cls, "atoms", ()) or ())
            item["config"] = config_schema(cls.Config)
        return item
