"""The training config loader (spec 05 §5.9): YAML → validated, immutable typed sections.

Order of operations (each step fails fast with a dotted path and, where known, ``file:line``):

1. profile-family leaf rule (one hop to ``../base.yaml``) when the file is a family leaf;
2. ``extends`` resolution (:mod:`.extends`), then CLI overrides (:mod:`.overrides`);
3. legacy names (§5.8) — before anything else looks at keys, so the message names the replacement;
4. the §5.7 variant table and the required leaf knobs (§5.9, all reported together);
5. strict schema structuring (unknown keys at any depth, types, bounds);
6. normalization (stage1 gets an empty ``stage1`` section; ``training.packing`` /
   ``training.dynamic_packing`` default to true for their variant) and typed guardrails;
7. batch shape for a given world size (GAS = E / (d·W));
8. (:func:`load_config` only) ``Strategy`` and pipeline resolution through the core.

The resolved config is the normalized typed config with every default filled in, as plain data,
minus the keys that take no effect for the variant (which the guardrails forbid authoring), so
``to_yaml`` output reloads to the same config. Its canonical JSON (core ``canonical``) and sha256
go into the run manifest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import attrs

from coordexp.core.pipeline.checksum import canonical, sha256_hex
from coordexp.core.pipeline.spec import ResolvedPipeline
from coordexp.core.plugins.protocol import Strategy
from coordexp.core.plugins.registry import ModuleRegistry

from .extends import check_profile_leaf, resolve_extends
from .guardrails import (
    check_required_leaf_knobs,
    check_typed,
    check_variant_sections,
    gradient_accumulation_steps,
    inapplicable_paths,
)
from .keypath import Provenance
from .legacy import check_legacy
from .overrides import apply_overrides, override_origin
from .resolve import build_strategy, resolve_config_pipeline
from .schema import CoordexpConfig, Stage1Section
from .structure import structure_config, unstructure_config
from .tree import freeze
from .yaml_io import display_name, dump_yaml


@attrs.frozen
class ValidatedConfig:
    """A fully validated config, before pipeline resolution.

    ``config``: the typed sections; ``plain``: the resolved config as deep-frozen plain data
    (defaults filled, absent sections omitted); ``canonical_json``/``sha256``: its canonical
    form and digest; ``provenance``: where every authored key came from; ``files``: the config
    files that contributed (entry file last); ``gradient_accumulation_steps``: GAS when a world
    size was given, else None.
    """

    source_path: str
    config: CoordexpConfig
    plain: Mapping[str, object]
    canonical_json: str
    sha256: str
    provenance: Provenance
    files: tuple[str, ...]
    gradient_accumulation_steps: int | None

    @property
    def variant(self) -> str:
        return self.config.variant


@attrs.frozen
class ResolvedConfig:
    """A validated config plus its ``Strategy`` and resolved pipeline."""

    validated: ValidatedConfig
    strategy: Strategy
    pipeline: ResolvedPipeline

    @property
    def config(self) -> CoordexpConfig:
        return self.validated.config

    @property
    def plain(self) -> Mapping[str, object]:
        return self.validated.plain

    @property
    def canonical_json(self) -> str:
        return self.validated.canonical_json

    @property
    def sha256(self) -> str:
        return self.validated.sha256

    @property
    def source_path(self) -> str:
        return self.validated.source_path

    @property
    def variant(self) -> str:
        return self.validated.variant

    @property
    def gradient_accumulation_steps(self) -> int | None:
        return self.validated.gradient_accumulation_steps


def validate_config(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    world_size: int | None = None,
) -> ValidatedConfig:
    """Steps 1–7 of the module docstring; no plugin or pipeline code runs."""
    leaf_name = display_name(path)
    check_profile_leaf(path)
    source = apply_overrides(resolve_extends(path), overrides)
    data, provenance = source.data, source.provenance
    check_legacy(data, provenance)
    variant = check_variant_sections(data, provenance)
    leaf_origins = {leaf_name, *(override_origin(text) for text in overrides)}
    check_required_leaf_knobs(data, provenance, variant, leaf_origins, leaf_name)
    config = normalize(structure_config(data, provenance))
    check_typed(config, data, provenance)
    gas = None if world_size is None else gradient_accumulation_steps(config.training, world_size)
    plain = unstructure_config(config)
    for section, key in inapplicable_paths(config):
        plain[section].pop(key, None)  # type: ignore[attr-defined]
    return ValidatedConfig(
        source_path=leaf_name,
        config=config,
        plain=freeze(plain),  # type: ignore[arg-type]
        canonical_json=canonical(plain),
        sha256=sha256_hex(plain),
        provenance=provenance,
        files=source.files,
        gradient_accumulation_steps=gas,
    )


def normalize(config: CoordexpConfig) -> CoordexpConfig:
    """Fill variant-dependent defaults: the stage1 section and the packing flag (default true)."""
    training = config.training
    if config.variant == "stage1":
        training = attrs.evolve(training, packing=training.packing is not False)
        stage1 = config.stage1 if config.stage1 is not None else Stage1Section()
        return attrs.evolve(config, training=training, stage1=stage1)
    training = attrs.evolve(training, dynamic_packing=training.dynamic_packing is not False)
    return attrs.evolve(config, training=training)


def load_config(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    world_size: int | None = None,
    registry: ModuleRegistry | None = None,
) -> ResolvedConfig:
    """The training loader: :func:`validate_config` plus Strategy and pipeline resolution.

    ``registry`` defaults to a ``ModuleRegistry`` over the installed entry points.
    """
    validated = validate_config(path, overrides, world_size=world_size)
    strategy = build_strategy(validated.config)
    pipeline = resolve_config_pipeline(
        validated.config, strategy, registry=registry, provenance=validated.provenance
    )
    return ResolvedConfig(validated=validated, strategy=strategy, pipeline=pipeline)


def to_yaml(resolved: ResolvedConfig | ValidatedConfig) -> str:
    """The resolved config as YAML (``coordexp config show``): defaults filled, sections in
    reference order, keys in schema order."""
    return dump_yaml(resolved.plain)
