"""The one place where the typed config meets the core: ``Strategy`` and ``resolve_pipeline``.

* :func:`build_strategy` maps the strategy keys (D25) of a validated config onto
  ``coordexp.core.plugins.protocol.Strategy``: two_channel reads ``stage2_ab.*``; rollout_aligned
  reads ``rollout_matching.coord_decode_mode``; packing is ``static`` / ``dynamic`` / ``none``.
* :func:`resolve_config_pipeline` hands the variant's raw pipeline section (``stage1.pipeline``,
  ``stage2_ab.pipeline`` or ``rollout_matching.pipeline``; None → default manifest) and, for
  two_channel, the authored flat knobs (05 §5.6) to ``coordexp.core.pipeline.spec.resolve_pipeline``.
  Its errors get the ``file:line`` of the offending key appended when the location is known.
"""

from __future__ import annotations

from coordexp.core.errors import ConfigError
from coordexp.core.pipeline.manifests import PIPELINE_PATHS
from coordexp.core.pipeline.spec import ResolvedPipeline, resolve_pipeline
from coordexp.core.plugins.protocol import Strategy
from coordexp.core.plugins.registry import ModuleRegistry

from .keypath import Provenance
from .overrides import parse_key_path
from .schema import CoordexpConfig
from .tree import thaw


def build_strategy(config: CoordexpConfig) -> Strategy:
    """The Strategy of a validated, normalized config (packing flags already defaulted)."""
    variant = config.variant
    training = config.training
    if variant == "stage1":
        packing = "static" if training.packing else "none"
    else:
        packing = "dynamic" if training.dynamic_packing else "none"
    if variant == "stage2_two_channel":
        section = config.stage2_ab
        assert section is not None
        return Strategy(
            trainer_variant=variant,
            packing=packing,
            max_length=config.template.max_length,
            n_softctx_iter=section.n_softctx_iter,
            softctx_grad_mode=section.softctx_grad_mode,
            softctx_temperature=section.softctx_temperature,
            coord_ctx_embed_mode=section.coord_ctx_embed_mode,
            coord_decode_mode=section.coord_decode_mode,
            b_ratio=section.schedule.b_ratio,
        )
    decode_mode = "exp"
    if variant == "stage2_rollout_aligned":
        assert config.rollout_matching is not None
        decode_mode = config.rollout_matching.coord_decode_mode
    return Strategy(
        trainer_variant=variant,
        packing=packing,
        max_length=config.template.max_length,
        coord_decode_mode=decode_mode,
    )


def raw_pipeline(config: CoordexpConfig) -> object:
    """The variant's authored pipeline section as plain data (None when omitted)."""
    section = {
        "stage1": config.stage1,
        "stage2_two_channel": config.stage2_ab,
        "stage2_rollout_aligned": config.rollout_matching,
    }[config.variant]
    raw = None if section is None else section.pipeline
    return None if raw is None else thaw(raw)


def resolve_config_pipeline(
    config: CoordexpConfig,
    strategy: Strategy,
    *,
    registry: ModuleRegistry | None = None,
    provenance: Provenance | None = None,
) -> ResolvedPipeline:
    """Resolve the variant's pipeline through the core (default registry: installed plugins)."""
    if registry is None:
        registry = ModuleRegistry()
    variant = config.variant
    flat_knobs = None
    if variant == "stage2_two_channel":
        assert config.stage2_ab is not None
        flat_knobs = config.stage2_ab.authored_flat_knobs()
    try:
        return resolve_pipeline(
            raw_pipeline(config),
            variant=variant,
            path=PIPELINE_PATHS[variant],
            strategy=strategy,
            registry=registry,
            flat_knobs=flat_knobs,
        )
    except ConfigError as exc:
        raise with_location(exc, provenance) from exc


def with_location(exc: ConfigError, provenance: Provenance | None) -> ConfigError:
    """``exc`` with ``(at file:line)`` appended when its dotted path has a known location."""
    if provenance is None or not exc.path or "(at " in exc.message:
        return exc
    try:
        key_path = parse_key_path(exc.path, exc.path)
    except ConfigError:
        return exc
    where = provenance.locate(key_path)
    if where is None:
        return exc
    return ConfigError(exc.path, f"{exc.message} (at {where})")
