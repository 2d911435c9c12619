"""Pipeline YAML surface: strict structuring, validation and resolution (spec 05 §5.2–§5.6).

``resolve_pipeline`` turns the authored ``<section>.pipeline`` mapping (or, when it is omitted,
the variant's default manifest with the flat knobs copied in) into a :class:`ResolvedPipeline`:
every module class loaded and checked, every config structured into its frozen ``Config``,
validated by the module, null-inheritance resolved. Every error is a :class:`ConfigError` whose
path is the full dotted YAML path (``stage2_ab.pipeline.objective[1].confg``), except broken or
incompatible plugins (:class:`PluginError`). Validation rules, in the numbering of §5.2:
(1) unknown keys, (2) unregistered names, (3) duplicate names, (4) channels, (5) config types and
keys, (6) module validation and inert settings, (7) every channel trained, (8) unique atoms.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import attrs
import cattrs
from cattrs.cols import (
    is_any_set,
    is_frozenset,
    is_mapping,
    is_sequence,
    list_structure_factory,
    mapping_structure_factory,
)
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    StructureHandlerNotFoundError,
)
from cattrs.gen import make_dict_structure_fn

from coordexp.core.errors import ConfigError, PluginError
from coordexp.core.pipeline.checksum import config_payload, pipeline_checksum
from coordexp.core.pipeline.manifests import default_manifest, flat_knob_targets
from coordexp.core.plugins.protocol import (
    DIAGNOSTIC,
    OBJECTIVE,
    Strategy,
    variant_channels,
)
from coordexp.core.plugins.registry import ModuleRegistry, UnknownModuleError

LEGACY_SPEC_KEYS: Mapping[str, str] = {
    "application": "`application` was removed; use `channels` (e.g. channels: [A, B])",
    "preset": "`preset` was removed; use `channels` and an explicit `config`",
}
LEGACY_CONFIG_KEYS: Mapping[str, str] = {
    "bbox_smoothl1_weight": "smoothl1_weight",
    "coord_soft_ce_weight": "soft_ce_weight",
    "coord_w1_weight": "w1_weight",
}


# --------------------------------------------------------------------------- strict structuring


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


class _FieldError(ValueError):
    """A validator failure that knows its field, so the error path can name it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _structure_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_describe(value)}")
    return float(value)


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_describe(value)}")
    return value


def _structure_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_describe(value)}")
    return value


def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_describe(value)}")
    return value


def _structure_literal(value: object, tp: Any) -> object:
    allowed = typing.get_args(tp)
    if not any(type(value) is type(a) and value == a for a in allowed):
        raise ValueError(f"expected one of {', '.join(repr(a) for a in allowed)}, got {_describe(value)}")
    return value


def _strict_sequence_factory(tp: Any, converter: cattrs.Converter) -> Callable[[object, Any], object]:
    inner = list_structure_factory(tp, converter)
    origin = typing.get_origin(tp)
    as_tuple = origin is tuple

    def structure(value: object, target: Any) -> object:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {_describe(value)}")
        items = inner(value, target)
        return tuple(items) if as_tuple else items

    return structure


def _strict_set_factory(tp: Any, converter: cattrs.Converter) -> Callable[[object, Any], object]:
    args = typing.get_args(tp)
    as_list = list_structure_factory(list[args[0]] if args else list, converter)
    build = frozenset if is_frozenset(tp) else set

    def structure(value: object, target: Any) -> object:
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise TypeError(f"expected a list, got {_describe(value)}")
        return build(as_list(list(value), target))

    return structure


def _strict_mapping_factory(tp: Any, converter: cattrs.Converter) -> Callable[[object, Any], object]:
    inner = mapping_structure_factory(tp, converter)

    def structure(value: object, target: Any) -> object:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {_describe(value)}")
        return inner(value, target)

    return structure


def _strict_attrs_factory(cls: type, converter: cattrs.Converter) -> Callable[[object, Any], object]:
    inner = make_dict_structure_fn(
        cls, converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
    )

    def structure(value: object, target: Any) -> object:
        if not isinstance(value, Mapping):
            keys = ", ".join(f.alias for f in attrs.fields(cls) if f.init)
            raise TypeError(f"expected a mapping with keys {keys}, got {_describe(value)}")
        return inner(value, target)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook_func(lambda t: typing.get_origin(t) is Literal, _structure_literal)
    converter.register_structure_hook_factory(is_sequence, _strict_sequence_factory)
    converter.register_structure_hook_factory(is_any_set, _strict_set_factory)
    converter.register_structure_hook_factory(is_mapping, _strict_mapping_factory)
    converter.register_structure_hook_factory(attrs.has, _strict_attrs_factory)
    return converter


STRICT_CONVERTER = _make_converter()
"""cattrs converter that never coerces: int accepted for float, nothing else converts; lists must be
lists, mappings mappings; attrs classes reject unknown keys."""


def _unknown_key_message(key: str, valid: Sequence[str], legacy: Mapping[str, str]) -> str:
    if key in legacy:
        return legacy[key]
    message = f"unknown key; valid keys: {', '.join(sorted(valid))}"
    close = difflib.get_close_matches(key, list(valid), n=1)
    return message + (f" (did you mean `{close[0]}`?)" if close else "")


def _flatten_errors(exc: BaseException, path: str) -> list[tuple[str, str]]:
    """cattrs' exception tree → ``[(dotted path, message)]`` in structuring order."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without_notes = exc.group_exceptions()
        found: list[tuple[str, str]] = []
        for sub in without_notes:
            found += _flatten_errors(sub, path)
        for sub, note in with_notes:
            if isinstance(exc, ClassValidationError):
                sub_path = f"{path}.{getattr(note, 'name', '?')}"
            else:
                sub_path = f"{path}[{getattr(note, 'index', '?')}]"
            if isinstance(sub, KeyError):
                found.append((sub_path, "required key is missing"))
            else:
                found += _flatten_errors(sub, sub_path)
        return found
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = [f.alias for f in attrs.fields(exc.cl) if f.init]
        legacy = LEGACY_SPEC_KEYS if exc.cl is ModuleSpec else {}
        return [(f"{path}.{k}", _unknown_key_message(k, valid, legacy)) for k in sorted(exc.extra_fields)]
    if isinstance(exc, _FieldError):
        return [(f"{path}.{exc.field}", exc.message)]
    return [(path, str(exc))]


def _structure(value: object, tp: Any, path: str, owner: str) -> Any:
    try:
        return STRICT_CONVERTER.structure(value, tp)
    except StructureHandlerNotFoundError as exc:
        raise PluginError(f"{owner}: type {tp!r} at {path} cannot be structured: {exc}") from exc
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        errors = _flatten_errors(exc, path)
        where, message = errors[0] if errors else (path, str(exc))
        raise ConfigError(where, message) from exc


# --------------------------------------------------------------------------- YAML spec


def _check_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise _FieldError(attribute.name, "must be a non-empty module name")


def _check_weight(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise _FieldError(attribute.name, f"must be a finite number >= 0, got {value!r}")


def _freeze_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class ModuleSpec:
    """One authored list entry. ``channels=None`` means the variant's channel set."""

    name: str = attrs.field(validator=_check_name)
    enabled: bool = True
    weight: float = attrs.field(default=1.0, validator=_check_weight)
    channels: tuple[str, ...] | None = None
    config: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


@attrs.frozen
class PipelineSpec:
    """The authored ``pipeline`` mapping: ``objective`` (required, execution order) and ``diagnostics``."""

    objective: tuple[ModuleSpec, ...]
    diagnostics: tuple[ModuleSpec, ...] = ()


def structure_pipeline_spec(raw: object, path: str) -> PipelineSpec:
    """Strictly structure a ``pipeline`` mapping; errors carry the full dotted path (rule 1)."""
    return _structure(raw, PipelineSpec, path, "pipeline")


# --------------------------------------------------------------------------- module configs


def _config_fields(config_cls: type) -> dict[str, attrs.Attribute]:
    attrs.resolve_types(config_cls)
    return {f.alias: f for f in attrs.fields(config_cls) if f.init}


def structure_config_field(config_cls: type, key: str, value: object, path: str) -> object:
    """Structure one config value by its schema type (int accepted for float; nothing coerced).

    ``path`` is the value's full dotted path. Unknown and legacy keys raise :class:`ConfigError`.
    """
    fields = _config_fields(config_cls)
    if key not in fields:
        raise ConfigError(path, _unknown_key_message(key, list(fields), _legacy_config_messages()))
    return _structure(value, fields[key].type, path, f"Config {config_cls.__qualname__}")


def _legacy_config_messages() -> dict[str, str]:
    return {old: f"`{old}` was renamed; use `{new}`" for old, new in LEGACY_CONFIG_KEYS.items()}


def structure_module_config(module_cls: type, raw: Mapping[str, object] | None, path: str) -> Any:
    """Build ``module_cls.Config`` from an authored mapping (missing keys take their defaults).

    Raises :class:`ConfigError` at ``<path>.<key>`` for an unknown key (listing the valid keys),
    a legacy key (naming its replacement), a type mismatch, or a failing field validator; at
    ``path`` for a cross-field failure.
    """
    config_cls = module_cls.Config
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"expected a mapping of config keys (or omit `config`), got {_describe(raw)}")
    fields = _config_fields(config_cls)
    values: dict[str, object] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}.{key}", "config keys must be strings")
        values[key] = structure_config_field(config_cls, key, value, f"{path}.{key}")
    try:
        return config_cls(**values)
    except Exception as exc:
        defaults = config_cls()
        for key, value in values.items():
            field = fields[key]
            if field.validator is None:
                continue
            try:
                field.validator(defaults, field, value)
            except Exception as field_exc:
                raise ConfigError(f"{path}.{key}", str(field_exc)) from exc
        raise ConfigError(path, f"{type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- resolution


@attrs.frozen
class ResolvedModule:
    """A validated list entry: spec fields, the module instance and its resolved config.

    ``channels`` is sorted; ``config`` is the resolved ``Config`` instance (null-inheritance
    applied; what ``denominators``/``compute`` receive and the checksum hashes);
    ``atom_weights`` is ``module.atom_weights(config)`` (empty for diagnostics);
    ``authored_keys`` are the config keys the YAML (or a flat knob) set.
    """

    kind: str
    path: str
    name: str
    enabled: bool
    weight: float
    channels: tuple[str, ...]
    config: Any
    module: Any = attrs.field(eq=False, repr=False)
    atom_weights: Mapping[str, float] = attrs.field(factory=dict, converter=_freeze_mapping)
    authored_keys: frozenset[str] = frozenset()

    @property
    def module_cls(self) -> type:
        return type(self.module)

    def runs_on(self, channel: str) -> bool:
        """Enabled and scoped to ``channel``."""
        return self.enabled and channel in self.channels

    def entry(self) -> dict[str, object]:
        """The checksum entry of spec 05 §5.5."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "weight": float(self.weight),
            "channels": list(self.channels),
            "config": config_payload(self.config),
        }

    def describe(self) -> str:
        parts = list(self.channels)
        if self.kind == OBJECTIVE:
            parts.append(f"w={self.weight!r}")
        if not self.enabled:
            parts.append("disabled")
        return f"{self.name}({','.join(parts)})"


@attrs.frozen
class ResolvedPipeline:
    """The resolved pipeline of one run; ``is_default`` when it came from the default manifest."""

    variant: str
    path: str
    objective: tuple[ResolvedModule, ...]
    diagnostics: tuple[ResolvedModule, ...]
    is_default: bool = False

    def payload(self) -> dict[str, object]:
        """``{"trainer_variant", "objective", "diagnostics"}`` of spec 05 §5.5 (declared order)."""
        return {
            "trainer_variant": self.variant,
            "objective": [m.entry() for m in self.objective],
            "diagnostics": [m.entry() for m in self.diagnostics],
        }

    @property
    def checksum(self) -> str:
        return pipeline_checksum(self.payload())

    def describe(self) -> str:
        """Init-log module list: ``[token_ce(A,B,w=1.0), coord_reg(A,B,w=1.0), coord_diag(A,B)]``."""
        return "[" + ", ".join(m.describe() for m in self.objective + self.diagnostics) + "]"


def _load_module(registry: ModuleRegistry, kind: str, name: str, path: str) -> type:
    try:
        return registry.load(kind, name)
    except UnknownModuleError as exc:
        raise ConfigError(path, str(exc)) from exc
    except PluginError as exc:
        raise PluginError(f"{path}: {exc}") from exc


def _resolve_channels(channels: tuple[str, ...] | None, variant: str, path: str) -> tuple[str, ...]:
    allowed = variant_channels(variant)
    if channels is None:
        return allowed
    if not channels:
        raise ConfigError(
            path, f"must list at least one channel; omit `channels` to use {variant}'s {list(allowed)}"
        )
    for i, channel in enumerate(channels):
        if channel not in allowed:
            raise ConfigError(
                f"{path}[{i}]",
                f"{channel!r} is not a channel of {variant} (its channels: {', '.join(allowed)})",
            )
        if channel in channels[:i]:
            raise ConfigError(f"{path}[{i}]", f"duplicate channel {channel!r}")
    return tuple(sorted(channels))


def _join(base: str, relative: str) -> str:
    return f"{base}.{relative}" if relative else base


def _relocated(
    exc: ConfigError, module: str, relative: str, config_path: str, origins: Mapping[tuple[str, str], str]
) -> ConfigError:
    """Re-root a config error at the YAML key the value came from (a flat knob, or the config)."""
    first_key = relative.split(".", 1)[0].split("[", 1)[0]
    flat_path = origins.get((module, first_key))
    if flat_path is not None:
        return ConfigError(flat_path + relative[len(first_key) :], exc.message)
    return ConfigError(_join(config_path, relative), exc.message)


def _checked_atom_weights(module: Any, cfg: Any, path: str) -> dict[str, float]:
    cls = type(module)
    try:
        weights = dict(module.atom_weights(cfg))
    except Exception as exc:
        raise PluginError(f"{path}: {cls.name}.atom_weights failed: {type(exc).__name__}: {exc}") from exc
    if set(weights) != set(cls.atoms):
        raise PluginError(
            f"{path}: {cls.name}.atom_weights returned {sorted(weights)}, expected atoms {list(cls.atoms)}"
        )
    for atom, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise PluginError(
                f"{path}: {cls.name}.atom_weights[{atom!r}] must be a finite number, got {weight!r}"
            )
    return {atom: float(weights[atom]) for atom in cls.atoms}


def _resolve_entry(
    spec: ModuleSpec,
    *,
    kind: str,
    path: str,
    variant: str,
    strategy: Strategy,
    registry: ModuleRegistry,
    origins: Mapping[tuple[str, str], str],
) -> ResolvedModule:
    cls = _load_module(registry, kind, spec.name, f"{path}.name")
    channels = _resolve_channels(spec.channels, variant, f"{path}.channels")
    if kind == DIAGNOSTIC and spec.weight != 1.0:
        raise ConfigError(f"{path}.weight", "diagnostics are not weighted; remove `weight`")
    config_path = f"{path}.config"
    try:
        cfg = structure_module_config(cls, spec.config, config_path)
    except ConfigError as exc:
        relative = exc.path[len(config_path) + 1 :] if exc.path.startswith(config_path + ".") else ""
        raise _relocated(exc, spec.name, relative, config_path, origins) from exc
    try:
        module = cls()
    except Exception as exc:
        raise PluginError(f"{path}: {spec.name}() failed: {type(exc).__name__}: {exc}") from exc
    try:
        module.validate(cfg, variant, strategy)
    except ConfigError as exc:
        raise _relocated(exc, spec.name, exc.path, config_path, origins) from exc
    except Exception as exc:
        raise PluginError(f"{path}: {spec.name}.validate failed: {type(exc).__name__}: {exc}") from exc
    resolved = module.resolve_config(cfg, variant)
    if not isinstance(resolved, cls.Config):
        raise PluginError(f"{path}: {spec.name}.resolve_config must return a {cls.Config.__qualname__}")
    weights: dict[str, float] = {}
    if kind == OBJECTIVE:
        weights = _checked_atom_weights(module, resolved, path)
        if spec.enabled and spec.weight == 0.0:
            raise ConfigError(
                f"{path}.weight", "an enabled objective with weight 0 is inert; set `enabled: false`"
            )
        if spec.enabled and all(w == 0.0 for w in weights.values()):
            raise ConfigError(
                config_path,
                f"every atom weight of enabled objective {spec.name!r} is 0 ({', '.join(weights)}); "
                f"set one > 0 or set `enabled: false`",
            )
    return ResolvedModule(
        kind=kind,
        path=path,
        name=spec.name,
        enabled=spec.enabled,
        weight=spec.weight,
        channels=channels,
        config=resolved,
        module=module,
        atom_weights=weights,
        authored_keys=frozenset(spec.config),
    )


def _resolve_list(
    specs: Sequence[ModuleSpec], kind: str, list_path: str, **kwargs: Any
) -> tuple[ResolvedModule, ...]:
    seen: dict[str, int] = {}
    resolved = []
    for i, spec in enumerate(specs):
        path = f"{list_path}[{i}]"
        if spec.name in seen:
            raise ConfigError(
                f"{path}.name",
                f"duplicate {kind} {spec.name!r} (already at index {seen[spec.name]}); list a module once",
            )
        seen[spec.name] = i
        resolved.append(_resolve_entry(spec, kind=kind, path=path, **kwargs))
    return tuple(resolved)


def _check_channels_trained(objective: Sequence[ResolvedModule], variant: str, path: str) -> None:
    for channel in variant_channels(variant):
        if not any(
            m.runs_on(channel) and any(m.weight * w > 0.0 for w in m.atom_weights.values()) for m in objective
        ):
            raise ConfigError(
                path,
                f"channel {channel} of {variant} has no enabled objective with a positive weight; "
                f"enable one or scope one to it with `channels`",
            )


def _check_unique_atoms(objective: Sequence[ResolvedModule]) -> None:
    owners: dict[str, ResolvedModule] = {}
    for module in objective:
        if not module.enabled:
            continue
        for atom in module.atom_weights:
            if atom in owners:
                first = owners[atom]
                raise ConfigError(
                    f"{module.path}.name",
                    f"atom {atom!r} is produced by both {first.name!r} ({first.path}) and {module.name!r}; "
                    f"atom names must be unique across enabled objectives",
                )
            owners[atom] = module


def _inject_flat_knobs(
    raw: dict[str, Any],
    flat_knobs: Mapping[str, object],
    *,
    variant: str,
    section: str,
    registry: ModuleRegistry,
) -> dict[tuple[str, str], str]:
    """Copy flat knob values into the default manifest's configs; returns (module, key) → flat path."""
    targets = flat_knob_targets(variant)
    origins: dict[tuple[str, str], str] = {}
    entries = {entry["name"]: entry for entry in raw["objective"]}
    for knob, value in flat_knobs.items():
        module_name, key = targets[knob]
        flat_path = f"{section}.{knob}"
        cls = _load_module(registry, OBJECTIVE, module_name, flat_path)
        structure_config_field(cls.Config, key, value, flat_path)
        entries[module_name].setdefault("config", {})[key] = value
        origins[(module_name, key)] = flat_path
    return origins


def _check_peers(objective: Sequence[ResolvedModule], path: str) -> None:
    """Let every enabled objective refuse the other enabled objectives' settings (protocol
    ``validate_peers``); errors get the module's YAML path."""
    enabled = [m for m in objective if m.enabled]
    for index, module in enumerate(objective):
        if not module.enabled:
            continue
        peers = MappingProxyType({m.name: m.config for m in enabled if m is not module})
        try:
            module.module.validate_peers(module.config, peers)
        except ConfigError as exc:
            raise ConfigError(f"{path}[{index}].config.{exc.path}" if exc.path else f"{path}[{index}]", exc.message) from exc


def resolve_pipeline(
    raw: Mapping[str, object] | None,
    *,
    variant: str,
    path: str,
    strategy: Strategy,
    registry: ModuleRegistry,
    flat_knobs: Mapping[str, object] | None = None,
) -> ResolvedPipeline:
    """Resolve the pipeline of ``variant`` authored at ``path`` (e.g. ``"stage2_ab.pipeline"``).

    ``raw=None`` (pipeline omitted) → the variant's default manifest (§5.4) with the authored
    ``flat_knobs`` (``{knob: value}`` as written under the section, §5.6) copied in. A pipeline
    together with any flat knob is an error naming where to move the knob. Only referenced modules
    are loaded.
    """
    try:
        variant_channels(variant)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
    if strategy.trainer_variant != variant:
        raise ConfigError(
            path, f"strategy is for {strategy.trainer_variant!r} but the pipeline is for {variant!r}"
        )
    section = path.rsplit(".", 1)[0] if "." in path else path
    flat = dict(flat_knobs or {})
    targets = flat_knob_targets(variant)
    for knob in flat:
        if knob not in targets:
            accepted = ", ".join(targets) or "none"
            raise ConfigError(
                f"{section}.{knob}",
                f"not a flat objective knob of {variant} (accepted: {accepted}); "
                f"configure modules under `{path}`",
            )
    if raw is not None and flat:
        knob = next(iter(flat))
        module_name, key = targets[knob]
        raise ConfigError(
            f"{section}.{knob}",
            f"move `{section}.{knob}` to `{path}.objective[{module_name}].config.{key}` "
            f"(flat knobs are only read when `{path}` is omitted)",
        )
    origins: dict[tuple[str, str], str] = {}
    is_default = raw is None
    if raw is None:
        raw = default_manifest(variant)
        origins = _inject_flat_knobs(raw, flat, variant=variant, section=section, registry=registry)
    spec = structure_pipeline_spec(raw, path)
    if not spec.objective:
        raise ConfigError(f"{path}.objective", "must list at least one objective module")
    common = dict(variant=variant, strategy=strategy, registry=registry, origins=origins)
    objective = _resolve_list(spec.objective, OBJECTIVE, f"{path}.objective", **common)
    diagnostics = _resolve_list(spec.diagnostics, DIAGNOSTIC, f"{path}.diagnostics", **common)
    _check_unique_atoms(objective)
    _check_channels_trained(objective, variant, f"{path}.objective")
    _check_peers(objective, f"{path}.objective")
    return ResolvedPipeline(
        variant=variant, path=path, objective=objective, diagnostics=diagnostics, is_default=is_default
    )
