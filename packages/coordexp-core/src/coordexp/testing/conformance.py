"""Conformance suite for objective and diagnostic modules (spec 05 §5.1, 07 C4, L7, G10, G11).

A plugin author checks a module in a few lines, either as a function::

    from coordexp.testing.conformance import check_module
    report = check_module(CoordFocal, configs=[CoordFocal.Config(), CoordFocal.Config(gamma=0.0)])

or as a pytest class (every ``test_*`` method is one check; the base class is not collected)::

    from coordexp.testing.conformance import ModuleConformance

    class TestCoordFocal(ModuleConformance):
        module = CoordFocal
        configs = (CoordFocal.Config(), CoordFocal.Config(gamma=0.0))

Each check raises ``AssertionError`` naming the module, config, scenario and what was expected.
Checks run on random contexts from :mod:`coordexp.testing.factory` (small vocabulary, CPU) in
every :class:`Scenario` (variant × channel × ``n_softctx_iter`` × decode mode) whose
``validate`` accepts the config; a scenario the module rejects with ``ConfigError`` is skipped
and listed in the :class:`ConformanceReport`.

What is checked:

* **protocol**: the registry's class checks (name, kind, api_version, frozen attrs ``Config``
  constructible from defaults, methods, atoms).
* **config schema**: strict structuring: ``{}`` gives the defaults, unknown keys and wrong types
  raise ``ConfigError`` at their dotted path, bools are never numbers, every config round-trips
  through its checksum payload (finite, canonical JSON).
* **metric keys**: static ``(key, reduction)`` pairs that obey the naming table (02 §2.10), no
  ``loss/*`` keys; every emitted metric is declared with its reduction.
* **output contract**: atoms are declared, name a context of the set, have finite 0-dim
  numerators and the denominator ``denominators`` returned on the metadata-only set; group names
  are ``<module>/<context>/<what>`` and the group key set does not depend on the data.
* **finite on empty selections and degenerate boxes**: no objects, padding packs
  (``row_mult = 0``: zero numerators, denominators and gradients), degenerate target and
  predicted boxes, extreme logits.
* **gradients reach logits**: each active atom's numerator has a finite, non-zero gradient on its
  own context's logits and none on the others.
* **determinism**: the same inputs give bitwise-equal numerators, denominators and metrics.
* **FP-neutrality** (C4): arbitrary logits at the positions that predict ``prefix_fp`` tokens
  change nothing.
* **mean-like scale invariance** (L7): the step loss ``Σ w·num / Σ den`` and its gradients do not
  change when the same samples are re-split into other packs, nor when every sample is duplicated.
* **pipeline**: the module resolves and runs through the real ``PipelineRunner`` (diagnostics
  under ``torch.no_grad``, next to a probe objective), metrics reduce, ``loss/total`` is the sum.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np
import torch

from coordexp.core.context import ContextSet
from coordexp.core.errors import ConfigError, PluginError
from coordexp.core.metrics import LOSS_PREFIX, MEAN, Metric, StepAggregator, check_key_reduction
from coordexp.core.pipeline.checksum import canonical, config_payload
from coordexp.core.pipeline.runner import PipelineRunner
from coordexp.core.pipeline.spec import ResolvedPipeline, resolve_pipeline, structure_module_config
from coordexp.core.plugins.protocol import (
    DIAGNOSTIC,
    OBJECTIVE,
    AtomTerm,
    DiagnosticModule,
    ModuleOutput,
    ObjectiveModule,
    Strategy,
    variant_channels,
)
from coordexp.core.plugins.registry import KIND_GROUPS, ModuleRegistry, check_module_class
from coordexp.core.tokens import ContextName, SpanKind
from coordexp.testing.factory import (
    SyntheticSample,
    make_samples,
    pack_samples,
    random_packing,
    resample_logits,
)

__all__ = [
    "DEFAULT_SCENARIOS",
    "ConformanceReport",
    "ModuleConformance",
    "Scenario",
    "check_config_schema",
    "check_deterministic",
    "check_empty_and_padding",
    "check_degenerate_and_extreme",
    "check_fp_neutral",
    "check_gradients_reach_logits",
    "check_metric_keys",
    "check_module",
    "check_output_contract",
    "check_packing_invariance",
    "check_protocol",
    "check_runs_in_pipeline",
    "context_sets",
    "strategy_for",
]

_REL_TOL = 1e-4
_ABS_TOL = 1e-5


# ------------------------------------------------------------------------------------- scenarios


@attrs.frozen
class Scenario:
    """One way a module is run: trainer variant, channel, soft-context iterations, decode mode."""

    variant: str
    channel: str
    n_softctx_iter: int = 1
    coord_decode_mode: str = "exp"

    def __str__(self) -> str:
        return f"{self.variant}/{self.channel}/N={self.n_softctx_iter}/{self.coord_decode_mode}"

    @property
    def context_names(self) -> tuple[ContextName, ...]:
        if self.channel == "B":
            return (ContextName.ROLLOUT,)
        if self.n_softctx_iter >= 2:
            return (ContextName.GT, ContextName.SELF_CONTEXT)
        return (ContextName.GT,)


DEFAULT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("stage1", "A"),
    Scenario("stage2_two_channel", "A"),
    Scenario("stage2_two_channel", "A", n_softctx_iter=2),
    Scenario("stage2_two_channel", "A", n_softctx_iter=2, coord_decode_mode="st"),
    Scenario("stage2_two_channel", "B"),
    Scenario("stage2_rollout_aligned", "B"),
    Scenario("stage2_rollout_aligned", "B", coord_decode_mode="st"),
)
"""Every channel/context routing of spec 02 §2.2, with both decode modes."""


def strategy_for(scenario: Scenario) -> Strategy:
    """A ``Strategy`` matching ``scenario`` (packing ``none``, max_length 4096)."""
    two_channel = scenario.variant == "stage2_two_channel"
    return Strategy(
        trainer_variant=scenario.variant,
        packing="none",
        max_length=4096,
        n_softctx_iter=scenario.n_softctx_iter,
        coord_decode_mode=scenario.coord_decode_mode,
        b_ratio=0.5 if two_channel else None,
    )


@attrs.frozen
class _Samples:
    """Samples of one scenario: the text/coord samples and, for N ≥ 2, their self_context twin."""

    scenario: Scenario
    primary: tuple[SyntheticSample, ...]
    second: tuple[SyntheticSample, ...] | None

    def sets(
        self,
        packs: Sequence[Sequence[int]] | None = None,
        row_mult: Sequence[float] | None = None,
    ) -> list[ContextSet]:
        """One context set per pack (default: one pack of every sample)."""
        packs = [list(range(len(self.primary)))] if packs is None else [list(p) for p in packs if p]
        out = []
        for pack in packs:
            mult = None if row_mult is None else [row_mult[i] for i in pack]
            contexts = {}
            sources = [(self.scenario.context_names[0], self.primary)]
            if self.second is not None:
                sources.append((ContextName.SELF_CONTEXT, self.second))
            for name, samples in sources:
                contexts[name] = pack_samples(
                    [samples[i] for i in pack],
                    context=name,
                    trainer_variant=self.scenario.variant,
                    coord_decode_mode=self.scenario.coord_decode_mode,
                    row_mult=mult,
                )
            out.append(
                ContextSet.for_channel(
                    self.scenario.channel, contexts, n_softctx_iter=self.scenario.n_softctx_iter
                )
            )
        return out

    def leaves(self) -> list[torch.Tensor]:
        """The leaf logits of every sample (what gradients are compared on)."""
        return [s.seq_logits for s in self.primary + (self.second or ())]

    def evolve(self, fn: Callable[[SyntheticSample], SyntheticSample]) -> _Samples:
        return _Samples(
            self.scenario,
            tuple(fn(s) for s in self.primary),
            None if self.second is None else tuple(fn(s) for s in self.second),
        )


def _make_samples(scenario: Scenario, seed: int, **kwargs: Any) -> _Samples:
    context = ContextName.ROLLOUT if scenario.channel == "B" else ContextName.GT
    kwargs.setdefault("n_samples", 3)
    primary = make_samples(seed, context=context, **kwargs)
    second = None
    if scenario.n_softctx_iter >= 2:
        second = resample_logits(primary, seed + 7919)
    return _Samples(scenario, tuple(primary), None if second is None else tuple(second))


def context_sets(scenario: Scenario, seed: int, **sample_kwargs: Any) -> list[ContextSet]:
    """Random context sets for ``scenario``: one set of ``n_samples`` packed samples.

    ``sample_kwargs`` go to :func:`coordexp.testing.factory.make_samples` (``n_samples``,
    ``max_objects``, ``max_fp``, ``vocab``, ...).
    """
    return _make_samples(scenario, seed, **sample_kwargs).sets()


def _meta(ctxset: ContextSet) -> ContextSet:
    contexts = {name: ctx.without_logits() for name, ctx in ctxset.contexts.items()}
    return ContextSet(
        channel=ctxset.channel,
        contexts=contexts,
        text_context=contexts[ctxset.text_context.name],
        coord_context=contexts[ctxset.coord_context.name],
    )


# ------------------------------------------------------------------------------------- helpers


def _fail(where: str, message: str) -> AssertionError:
    return AssertionError(f"{where}: {message}")


def _where(
    module_cls: type, cfg: Any = None, scenario: Scenario | None = None, seed: int | None = None
) -> str:
    parts = [f"{getattr(module_cls, 'kind', '?')} {getattr(module_cls, 'name', module_cls.__qualname__)!r}"]
    if cfg is not None:
        parts.append(f"config {cfg!r}")
    if scenario is not None:
        parts.append(f"scenario {scenario}")
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


def _configs(module_cls: type, configs: Sequence[Any] | None) -> list[Any]:
    chosen = list(configs) if configs else [module_cls.Config()]
    for cfg in chosen:
        if not isinstance(cfg, module_cls.Config):
            raise TypeError(f"configs must be {module_cls.Config.__qualname__} instances, got {cfg!r}")
    return chosen


def _accepted(module: Any, cfg: Any, scenario: Scenario) -> Any | None:
    """The resolved config when ``validate`` accepts ``cfg`` in ``scenario``, else ``None``."""
    try:
        module.validate(cfg, scenario.variant, strategy_for(scenario))
    except ConfigError:
        return None
    return module.resolve_config(cfg, scenario.variant)


def _runs(
    module_cls: type, configs: Sequence[Any] | None, scenarios: Sequence[Scenario]
) -> Iterator[tuple[Any, Any, Scenario]]:
    """``(module, resolved config, scenario)`` for every accepted combination."""
    module = module_cls()
    for cfg in _configs(module_cls, configs):
        for scenario in scenarios:
            resolved = _accepted(module, cfg, scenario)
            if resolved is not None:
                yield module, resolved, scenario


def _compute(module: Any, ctxset: ContextSet, cfg: Any) -> ModuleOutput:
    if module.kind == DIAGNOSTIC:
        with torch.no_grad():
            return module.compute(ctxset, cfg)
    return module.compute(ctxset, cfg)


def _active_terms(module: Any, cfg: Any, output: ModuleOutput) -> list[tuple[str, float, AtomTerm]]:
    weights = module.atom_weights(cfg) if module.kind == OBJECTIVE else {}
    return [
        (atom, float(weights[atom]), term)
        for atom, terms in output.atoms.items()
        for term in terms
        if weights.get(atom, 0.0) != 0.0
    ]


def _step_loss(
    module: Any, cfg: Any, ctxsets: Sequence[ContextSet]
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """``Σ_packs Σ_atoms w·num / D_g`` with step-global ``D_g`` (the runner's normalization)."""
    totals: dict[str, float] = {}
    for ctxset in ctxsets:
        for group, value in module.denominators(_meta(ctxset), cfg).items():
            totals[group] = totals.get(group, 0.0) + float(value)
    loss: torch.Tensor | None = None
    for ctxset in ctxsets:
        for atom, weight, term in _active_terms(module, cfg, module.compute(ctxset, cfg)):
            if term.group not in totals:
                raise AssertionError(
                    f"atom {atom!r} uses group {term.group!r}, which denominators() does not return"
                )
            if totals[term.group] == 0.0:
                continue
            part = term.num * (weight / totals[term.group])
            loss = part if loss is None else loss + part
    return loss, totals


def _grads(loss: torch.Tensor | None, leaves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if loss is None or not loss.requires_grad:
        return [torch.zeros_like(leaf) for leaf in leaves]
    grads = torch.autograd.grad(loss, list(leaves), allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves, strict=True)]


def _value(loss: torch.Tensor | None) -> float:
    return 0.0 if loss is None else float(loss.detach())


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _metric_values(
    metrics: Sequence[Metric],
) -> list[tuple[str, str, float | None, float | None, float | None]]:
    def f(x: Any) -> float | None:
        return None if x is None else float(x)

    return [(m.key, m.reduction, f(m.value), f(m.num), f(m.den)) for m in metrics]


# ------------------------------------------------------------------------------------- checks


def check_protocol(module_cls: type) -> None:
    """The registry's class checks (name, kind, api_version, Config, methods, atoms)."""
    kind = getattr(module_cls, "kind", None)
    if kind not in (OBJECTIVE, DIAGNOSTIC):
        raise _fail(_where(module_cls), f"kind must be {OBJECTIVE!r} or {DIAGNOSTIC!r}, got {kind!r}")
    try:
        check_module_class(module_cls, kind, getattr(module_cls, "name", ""), "conformance")
    except PluginError as exc:
        raise _fail(_where(module_cls), str(exc)) from exc
    base = ObjectiveModule if kind == OBJECTIVE else DiagnosticModule
    if not issubclass(module_cls, base):
        raise _fail(_where(module_cls), f"should subclass coordexp.core.plugins.protocol.{base.__name__}")


def _wrong_type_probe(tp: Any) -> object | None:
    """A value no strict structuring of ``tp`` may accept (``None`` when ``tp`` accepts anything)."""
    if tp is Any:
        return None
    is_union = typing.get_origin(tp) is typing.Union or isinstance(tp, types.UnionType)
    members = typing.get_args(tp) if is_union else (tp,)
    accepts_str = any(m is str or typing.get_origin(m) is typing.Literal for m in members)
    return [["not", "a", "value"]] if accepts_str else "not-a-number"


def check_config_schema(module_cls: type, configs: Sequence[Any] | None = None) -> None:
    """Strict config structuring and checksum-payload round trips (spec 05 §5.2 rules 1, 5)."""
    where = _where(module_cls)
    config_cls = module_cls.Config
    attrs.resolve_types(config_cls)
    fields = [f for f in attrs.fields(config_cls) if f.init]
    for field in fields:
        if field.default is attrs.NOTHING:
            raise _fail(where, f"Config field {field.alias!r} has no default")
    if structure_module_config(module_cls, {}, "config") != config_cls():
        raise _fail(where, "structuring {} must give Config() (every key defaulted)")
    try:
        structure_module_config(module_cls, {"__conformance_unknown__": 1}, "config")
    except ConfigError as exc:
        if exc.path != "config.__conformance_unknown__":
            raise _fail(where, f"an unknown key must fail at its path, got {exc.path!r}") from exc
    else:
        raise _fail(where, "an unknown config key was accepted")
    defaults = config_cls()
    for field in fields:
        default = getattr(defaults, field.name)
        probes = [_wrong_type_probe(field.type)]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            probes.append(True)
        for probe in probes:
            if probe is None:
                continue
            try:
                structure_module_config(module_cls, {field.alias: probe}, "config")
            except ConfigError as exc:
                if exc.path != f"config.{field.alias}":
                    raise _fail(
                        where, f"{field.alias}={probe!r} failed at {exc.path!r}, not at its key"
                    ) from exc
            else:
                raise _fail(where, f"{field.alias}={probe!r} was accepted; types must never be coerced")
    for cfg in _configs(module_cls, configs):
        payload = config_payload(cfg)
        canonical(payload)  # finite and JSON-serializable
        rebuilt = structure_module_config(module_cls, payload, "config")
        if config_payload(rebuilt) != payload:
            raise _fail(where, f"config {cfg!r} does not round-trip through its payload {payload}")
        if not fields:
            continue
        try:
            setattr(cfg, fields[0].name, getattr(cfg, fields[0].name))
        except attrs.exceptions.FrozenInstanceError:
            continue
        raise _fail(where, "Config instances must be frozen")


def check_metric_keys(module_cls: type) -> None:
    """Static, well-named ``(key, reduction)`` declarations for every channel and context."""
    module = module_cls()
    for channel, context in (("A", "gt"), ("A", "self_context"), ("B", "rollout")):
        where = f"{_where(module_cls)}, metric_keys({channel!r}, {context!r})"
        first = module.metric_keys(channel, context)
        if list(first) != list(module.metric_keys(channel, context)):
            raise _fail(where, "must return the same list on every call (keys are declared statically)")
        for item in first:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise _fail(where, f"items must be (key, reduction) tuples, got {item!r}")
            key, reduction = item
            try:
                check_key_reduction(key, reduction)
            except Exception as exc:
                raise _fail(where, str(exc)) from exc
            if key.startswith(LOSS_PREFIX):
                raise _fail(where, f"{key!r}: loss/* keys are emitted by the pipeline, not by modules")


def _check_output(module: Any, cfg: Any, ctxset: ContextSet, output: ModuleOutput, where: str) -> None:
    if not isinstance(output, ModuleOutput):
        raise _fail(where, f"compute must return a ModuleOutput, got {type(output).__name__}")
    names = {name.value for name in ctxset.contexts}
    channel = ctxset.channel.value
    declared = {item for context in names for item in module.metric_keys(channel, context)}
    for metric in output.metrics:
        if (metric.key, metric.reduction) not in declared:
            raise _fail(where, f"metric {metric.key!r} ({metric.reduction}) is not declared by metric_keys")
        for part in (metric.value, metric.num, metric.den):
            if part is not None and not math.isfinite(float(part)):
                raise _fail(where, f"metric {metric.key!r} is not finite: {metric}")
        if metric.reduction == MEAN and float(metric.den) < 0:
            raise _fail(where, f"metric {metric.key!r} has a negative denominator")
    if module.kind == DIAGNOSTIC:
        if output.atoms:
            raise _fail(where, f"diagnostics produce no atoms, got {sorted(output.atoms)}")
        return
    pre = module.denominators(_meta(ctxset), cfg)
    prefix = f"{module.name}/"
    for group, value in pre.items():
        parts = group.split("/")
        if not (group.startswith(prefix) and len(parts) >= 3 and parts[1] in {c.value for c in ContextName}):
            raise _fail(where, f"denominator group {group!r} must be named '<module>/<context>/<what>'")
        if isinstance(value, bool) or not math.isfinite(float(value)) or float(value) < 0:
            raise _fail(where, f"denominator {group!r} must be a finite number >= 0, got {value!r}")
    for atom, terms in output.atoms.items():
        if atom not in module.atoms:
            raise _fail(where, f"atom {atom!r} is not in the declared atoms {module.atoms}")
        for term in terms:
            if term.context not in names:
                raise _fail(
                    where, f"atom {atom!r} names context {term.context!r}, not one of {sorted(names)}"
                )
            if term.group not in pre:
                raise _fail(
                    where, f"atom {atom!r} uses group {term.group!r} that denominators() does not return"
                )
            if not _close(term.den, float(pre[term.group])):
                raise _fail(
                    where, f"atom {atom!r}: compute den {term.den} != pre-forward den {pre[term.group]}"
                )
            if not torch.isfinite(term.num).all():
                raise _fail(where, f"atom {atom!r} numerator is not finite: {term.num}")


def check_output_contract(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0, 1),
) -> None:
    """Atoms, denominators and metrics of ``compute`` obey the protocol; group keys are static."""
    for module, cfg, scenario in _runs(module_cls, configs, scenarios):
        static_keys: set[str] | None = None
        for seed in seeds:
            for sample_kwargs in ({}, {"max_objects": 0}):
                where = _where(module_cls, cfg, scenario, seed)
                ctxset = context_sets(scenario, seed, **sample_kwargs)[0]
                output = _compute(module, ctxset, cfg)
                _check_output(module, cfg, ctxset, output, where)
                if module.kind == OBJECTIVE:
                    keys = set(module.denominators(_meta(ctxset), cfg))
                    if static_keys is not None and keys != static_keys:
                        raise _fail(
                            where,
                            f"denominator groups changed with the data ({sorted(static_keys)} vs {sorted(keys)}); "
                            "return every group of the channel's contexts, with 0 when empty",
                        )
                    static_keys = keys


def check_empty_and_padding(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0,),
) -> None:
    """Finite outputs with no objects; a padding pack (row_mult 0) has zero num, den and gradient."""
    for module, cfg, scenario in _runs(module_cls, configs, scenarios):
        for seed in seeds:
            where = _where(module_cls, cfg, scenario, seed)
            empty = _make_samples(scenario, seed, max_objects=0)
            ctxset = empty.sets()[0]
            output = _compute(module, ctxset, cfg)
            _check_output(module, cfg, ctxset, output, where + " (no objects)")
            if module.kind == DIAGNOSTIC:
                continue
            loss, _ = _step_loss(module, cfg, [ctxset])
            for grad in _grads(loss, empty.leaves()):
                if not torch.isfinite(grad).all():
                    raise _fail(where, "non-finite gradient with no objects")
            padded = _make_samples(scenario, seed)
            pad_set = padded.sets(row_mult=[0.0] * len(padded.primary))[0]
            for group, value in module.denominators(_meta(pad_set), cfg).items():
                if float(value) != 0.0:
                    raise _fail(
                        where, f"padding pack (row_mult = 0) has denominator {group!r} = {value}, not 0"
                    )
            pad_out = module.compute(pad_set, cfg)
            _check_output(module, cfg, pad_set, pad_out, where + " (padding)")
            total = None
            for _, weight, term in _active_terms(module, cfg, pad_out):
                if float(term.num.detach()) != 0.0:
                    raise _fail(
                        where,
                        f"padding pack: numerator of a {term.group!r} atom is {float(term.num.detach())}",
                    )
                total = term.num * weight if total is None else total + term.num * weight
            for grad in _grads(total, padded.leaves()):
                if torch.count_nonzero(grad):
                    raise _fail(where, "padding pack (row_mult = 0) produced a non-zero gradient")


def _degenerate(sample: SyntheticSample, rng: np.random.Generator) -> SyntheticSample:
    """The sample with degenerate target boxes and sharply peaked, degenerate predicted boxes."""
    rows = sample.rows
    if rows.n_groups == 0:
        return sample
    targets = rows.group_target.copy()
    kinds = rng.integers(0, 3, size=targets.shape[0])
    targets[:, 2] = np.where(kinds != 1, targets[:, 0], targets[:, 2])  # zero width
    targets[:, 3] = np.where(kinds != 0, targets[:, 1], targets[:, 3])  # zero height
    coord_target = rows.coord_target.copy()
    coord_target[rows.group_rows.reshape(-1)] = targets.reshape(-1)
    logits = sample.seq_logits.detach().clone()
    vocab = sample.vocab
    predicted = targets.copy()
    predicted[:, 2] = predicted[:, 0]
    predicted[:, 3] = predicted[:, 1]
    positions = rows.positions[rows.group_rows.reshape(-1)] - 1
    columns = vocab.coord_ids[predicted.reshape(-1)]
    logits[torch.as_tensor(positions), torch.as_tensor(columns)] += 60.0
    new_rows = attrs.evolve(rows, group_target=targets, coord_target=coord_target)
    return attrs.evolve(sample, rows=new_rows, seq_logits=logits.requires_grad_(True))


def _extreme(sample: SyntheticSample) -> SyntheticSample:
    logits = sample.seq_logits.detach() * 1000.0
    return attrs.evolve(sample, seq_logits=logits.requires_grad_(True))


def check_degenerate_and_extreme(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0, 1),
) -> None:
    """Degenerate boxes (zero width/height, predicted and target) and ×1000 logits stay finite."""
    for module, cfg, scenario in _runs(module_cls, configs, scenarios):
        for seed in seeds:
            rng = np.random.default_rng(seed)
            base = _make_samples(scenario, seed, max_objects=3)
            for label, samples in (
                ("degenerate boxes", base.evolve(lambda s, rng=rng: _degenerate(s, rng))),
                ("extreme logits", base.evolve(_extreme)),
            ):
                where = f"{_where(module_cls, cfg, scenario, seed)} ({label})"
                ctxset = samples.sets()[0]
                output = _compute(module, ctxset, cfg)
                _check_output(module, cfg, ctxset, output, where)
                if module.kind == OBJECTIVE:
                    loss, _ = _step_loss(module, cfg, samples.sets())
                    if loss is not None and not torch.isfinite(loss):
                        raise _fail(where, f"non-finite loss {float(loss)}")
                    for grad in _grads(loss, samples.leaves()):
                        if not torch.isfinite(grad).all():
                            raise _fail(where, "non-finite gradient")


def check_gradients_reach_logits(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0, 1),
) -> None:
    """Every active atom has a finite gradient on its own context's logits and none elsewhere;
    the active atoms of a context with a non-empty denominator move that context's logits.

    (A single atom may be empty in one context, e.g. ``desc_ce`` with ``desc_ce_weight = 0`` in gt.)
    """
    if getattr(module_cls, "kind", None) != OBJECTIVE:
        return
    for module, cfg, scenario in _runs(module_cls, configs, scenarios):
        for seed in seeds:
            where = _where(module_cls, cfg, scenario, seed)
            ctxset = context_sets(scenario, seed, max_objects=4)[0]
            names = list(ctxset.contexts)
            logits = [ctxset.contexts[name].logits for name in names]
            reached: dict[str, bool] = {}
            for atom, _, term in _active_terms(module, cfg, module.compute(ctxset, cfg)):
                if not term.num.requires_grad:
                    raise _fail(where, f"atom {atom!r} ({term.context}) has no gradient path to the logits")
                grads = torch.autograd.grad(term.num, logits, allow_unused=True, retain_graph=True)
                for name, grad in zip(names, grads, strict=True):
                    if grad is None:
                        continue
                    if not torch.isfinite(grad).all():
                        raise _fail(where, f"atom {atom!r}: non-finite gradient on the {name.value} logits")
                    moved = bool(torch.count_nonzero(grad))
                    if name.value != term.context and moved:
                        raise _fail(
                            where, f"atom {atom!r} of context {term.context} leaks gradient into {name.value}"
                        )
                    if name.value == term.context and term.den > 0:
                        reached[term.context] = reached.get(term.context, False) or moved
            for context, moved in reached.items():
                if not moved:
                    raise _fail(
                        where, f"no active atom moves the {context} logits although its denominator is > 0"
                    )


def check_deterministic(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0,),
) -> None:
    """Two runs on identical, independently built inputs agree bitwise."""
    for module, cfg, scenario in _runs(module_cls, configs, scenarios):
        for seed in seeds:
            where = _where(module_cls, cfg, scenario, seed)
            runs = []
            for _ in range(2):
                ctxset = context_sets(scenario, seed)[0]
                output = _compute(module, ctxset, cfg)
                atoms = {
                    (atom, t.context): (t.num.detach().clone(), t.den, t.group)
                    for atom, terms in output.atoms.items()
                    for t in terms
                }
                runs.append((atoms, _metric_values(output.metrics)))
            (atoms_a, metrics_a), (atoms_b, metrics_b) = runs
            if atoms_a.keys() != atoms_b.keys() or any(
                not torch.equal(atoms_a[k][0], atoms_b[k][0]) or atoms_a[k][1:] != atoms_b[k][1:]
                for k in atoms_a
            ):
                raise _fail(where, "atoms differ between two identical runs")
            if metrics_a != metrics_b:
                raise _fail(where, "metrics differ between two identical runs")


def _perturb_fp_positions(sample: SyntheticSample, seed: int) -> SyntheticSample:
    rows = sample.rows
    fp = rows.positions[rows.span_kind == int(SpanKind.PREFIX_FP)] - 1
    if fp.size == 0:
        return sample
    logits = sample.seq_logits.detach().clone()
    noise = torch.randn(
        (fp.size, logits.shape[1]), generator=torch.Generator().manual_seed(seed), dtype=logits.dtype
    )
    logits[torch.as_tensor(fp)] = noise * 50.0
    return attrs.evolve(sample, seq_logits=logits.requires_grad_(True))


def check_fp_neutral(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0, 1),
) -> None:
    """C4: arbitrary logits at the positions that predict FP tokens change no output."""
    rollout = [s for s in scenarios if s.channel == "B"]
    for module, cfg, scenario in _runs(module_cls, configs, rollout):
        for seed in seeds:
            where = _where(module_cls, cfg, scenario, seed)
            base = _make_samples(scenario, seed, max_fp=3)
            changed = base.evolve(lambda s, seed=seed: _perturb_fp_positions(s, seed))
            outputs = []
            for samples in (base, changed):
                ctxset = samples.sets()[0]
                output = _compute(module, ctxset, cfg)
                outputs.append(
                    (
                        {
                            (a, t.context): (float(t.num.detach()), t.den)
                            for a, terms in output.atoms.items()
                            for t in terms
                        },
                        _metric_values(output.metrics),
                        module.denominators(_meta(ctxset), cfg) if module.kind == OBJECTIVE else {},
                    )
                )
            if outputs[0] != outputs[1]:
                raise _fail(
                    where, "changing the logits at FP positions changed an output (FP-neutrality, C4)"
                )


def _compare_grads(where: str, what: str, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> None:
    for index, (ga, gb) in enumerate(zip(a, b, strict=True)):
        if not torch.allclose(ga, gb, rtol=_REL_TOL, atol=_ABS_TOL):
            diff = float((ga - gb).abs().max())
            raise _fail(where, f"{what}: gradient of sample leaf {index} differs (max |Δ| = {diff:.3g})")


def check_packing_invariance(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0, 1),
) -> None:
    """L7 and mean-likeness: re-splitting samples into other packs, or duplicating every sample,
    leaves the step loss ``Σ w·num/D_g`` and its gradients unchanged."""
    if getattr(module_cls, "kind", None) != OBJECTIVE:
        return
    for module, cfg, scenario in _runs(module_cls, configs, scenarios):
        for seed in seeds:
            where = _where(module_cls, cfg, scenario, seed)
            samples = _make_samples(scenario, seed, n_samples=5)
            leaves = samples.leaves()
            whole, whole_den = _step_loss(module, cfg, samples.sets())
            split, split_den = _step_loss(module, cfg, samples.sets(random_packing(5, seed + 1)))
            if whole_den.keys() != split_den.keys() or not all(
                _close(whole_den[g], split_den[g]) for g in whole_den
            ):
                raise _fail(where, f"step denominators depend on packing: {whole_den} vs {split_den}")
            value, split_value = _value(whole), _value(split)
            if not _close(value, split_value):
                raise _fail(where, f"re-split changed the step loss: {value} vs {split_value}")
            _compare_grads(where, "re-split", _grads(whole, leaves), _grads(split, leaves))
            n = len(samples.primary)
            doubled = _Samples(
                scenario,
                samples.primary + samples.primary,
                None if samples.second is None else samples.second + samples.second,
            )
            twice, _ = _step_loss(module, cfg, doubled.sets([list(range(n)), list(range(n, 2 * n))]))
            if not _close(value, _value(twice)):
                raise _fail(
                    where,
                    f"duplicating every sample changed the step loss ({value} vs {_value(twice)}); "
                    "atoms must be means (numerator sums over step-global denominators)",
                )


# ------------------------------------------------------------------------------------- pipeline


@attrs.frozen
class _Dist:
    name: str
    version: str = "0+conformance"


@attrs.frozen
class _EntryPoint:
    name: str
    group: str
    target: type
    dist: _Dist = _Dist("conformance")

    @property
    def value(self) -> str:
        return f"{self.target.__module__}:{self.target.__qualname__}"

    def load(self) -> type:
        return self.target


@attrs.frozen(kw_only=True)
class _ProbeConfig:
    """The probe objective has no settings."""


class _ProbeObjective(ObjectiveModule):
    """Mean squared coord logit: a minimal objective that lets a diagnostic run in a pipeline."""

    name: ClassVar[str] = "conformance_probe"
    atoms: ClassVar[tuple[str, ...]] = ("conformance_probe",)
    Config: ClassVar[type] = _ProbeConfig

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"conformance_probe": 1.0}

    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        ctx = ctxset.coord_context
        return {f"conformance_probe/{ctx.name.value}/rows": float(ctx.coord_row_index.numel())}

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        ctx = ctxset.coord_context
        num = ctx.coord_logits.square().mean(dim=-1).sum()
        group = f"conformance_probe/{ctx.name.value}/rows"
        return ModuleOutput(
            atoms={"conformance_probe": AtomTerm(ctx.name.value, num, group, ctx.coord_row_index.numel())}
        )


def pipeline_for(module_cls: type, cfg: Any, scenario: Scenario) -> ResolvedPipeline:
    """Resolve a one-module pipeline (plus a probe objective for a diagnostic) for ``scenario``."""
    entries = [_EntryPoint(module_cls.name, KIND_GROUPS[module_cls.kind], module_cls)]
    raw: dict[str, Any] = {"objective": [], "diagnostics": []}
    spec = {"name": module_cls.name, "config": config_payload(cfg)}
    if module_cls.kind == OBJECTIVE:
        raw["objective"].append(spec)
    else:
        entries.append(_EntryPoint(_ProbeObjective.name, KIND_GROUPS[OBJECTIVE], _ProbeObjective))
        raw["objective"].append({"name": _ProbeObjective.name})
        raw["diagnostics"].append(spec)
    registry = ModuleRegistry(lambda group: [e for e in entries if e.group == group], environ={})
    return resolve_pipeline(
        raw,
        variant=scenario.variant,
        path="conformance.pipeline",
        strategy=strategy_for(scenario),
        registry=registry,
    )


def check_runs_in_pipeline(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0,),
) -> None:
    """The module resolves and runs through the real runner; its keys reduce; the loss is finite.

    Only configs whose every acting setting is accepted are run (``resolve_pipeline`` applies the
    pipeline-level rules, e.g. all weights 0 → error, on top of ``validate``).
    """
    for _, cfg, scenario in _runs(module_cls, configs, scenarios):
        for seed in seeds:
            where = _where(module_cls, cfg, scenario, seed)
            try:
                resolved = pipeline_for(module_cls, cfg, scenario)
            except ConfigError:
                continue
            channels = variant_channels(scenario.variant)
            if scenario.channel not in channels:
                raise _fail(
                    where, f"scenario channel {scenario.channel} is not a channel of {scenario.variant}"
                )
            runner = PipelineRunner(resolved, warn=lambda message: None)
            samples = _make_samples(scenario, seed, n_samples=4)
            ctxsets = samples.sets([[0, 1], [2, 3]])
            names = [name.value for name in scenario.context_names]
            aggregator = StepAggregator(runner.step_keys(scenario.channel, names))
            denominators = runner.denominators([_meta(c) for c in ctxsets])
            for ctxset in ctxsets:
                loss, metrics = runner.run(ctxset, denominators)
                if not torch.isfinite(loss):
                    raise _fail(where, f"pipeline loss is not finite: {float(loss)}")
                if loss.requires_grad:
                    loss.backward()
                aggregator.add(metrics)
            if runner.failed_diagnostics():
                raise _fail(
                    where, f"the diagnostic failed inside the pipeline: {runner.failed_diagnostics()}"
                )
            reduced = aggregator.reduce()
            atoms = [v for k, v in reduced.items() if k.startswith(LOSS_PREFIX) and k.count("/") == 2]
            if atoms and not _close(reduced["loss/total"], math.fsum(atoms)):
                raise _fail(where, "loss/total is not the sum of the loss/<ctx>/<atom> keys")
            if any(not math.isfinite(v) for v in reduced.values()):
                raise _fail(where, f"a reduced metric is not finite: {reduced}")


# ------------------------------------------------------------------------------------- entry points


@attrs.frozen
class ConformanceReport:
    """What :func:`check_module` ran: accepted (config, scenario) pairs and the skipped ones."""

    module: str
    checks: tuple[str, ...]
    ran: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, str], ...]


_CHECKS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("output_contract", check_output_contract),
    ("empty_and_padding", check_empty_and_padding),
    ("degenerate_and_extreme", check_degenerate_and_extreme),
    ("gradients_reach_logits", check_gradients_reach_logits),
    ("deterministic", check_deterministic),
    ("fp_neutral", check_fp_neutral),
    ("packing_invariance", check_packing_invariance),
    ("runs_in_pipeline", check_runs_in_pipeline),
)


def check_module(
    module_cls: type,
    configs: Sequence[Any] | None = None,
    *,
    scenarios: Sequence[Scenario] = DEFAULT_SCENARIOS,
    seeds: Sequence[int] = (0, 1),
) -> ConformanceReport:
    """Run every check on ``module_cls`` (default config when ``configs`` is empty).

    Raises ``AssertionError`` at the first violation; returns what was covered. A config that
    ``validate`` rejects in every scenario is itself a failure (nothing would be checked).
    """
    check_protocol(module_cls)
    check_config_schema(module_cls, configs)
    check_metric_keys(module_cls)
    module = module_cls()
    ran, skipped = [], []
    for cfg in _configs(module_cls, configs):
        accepted = [s for s in scenarios if _accepted(module, cfg, s) is not None]
        if not accepted:
            raise _fail(_where(module_cls, cfg), "validate() rejects this config in every scenario")
        ran += [(repr(cfg), str(s)) for s in accepted]
        skipped += [(repr(cfg), str(s)) for s in scenarios if s not in accepted]
    for _, check in _CHECKS:
        check(module_cls, configs, scenarios, seeds)
    return ConformanceReport(
        module=module_cls.name,
        checks=("protocol", "config_schema", "metric_keys") + tuple(name for name, _ in _CHECKS),
        ran=tuple(ran),
        skipped=tuple(skipped),
    )


class ModuleConformance:
    """pytest base class: subclass it as ``Test<Something>`` and set ``module`` (and ``configs``).

    ``scenarios`` and ``seeds`` narrow or widen the coverage.
    """

    module: ClassVar[type]
    configs: ClassVar[Sequence[Any]] = ()
    scenarios: ClassVar[Sequence[Scenario]] = DEFAULT_SCENARIOS
    seeds: ClassVar[Sequence[int]] = (0, 1)

    def _args(self) -> tuple[Any, ...]:
        return (type(self).module, tuple(self.configs) or None, tuple(self.scenarios), tuple(self.seeds))

    def test_protocol(self) -> None:
        check_protocol(type(self).module)

    def test_config_schema(self) -> None:
        check_config_schema(type(self).module, tuple(self.configs) or None)

    def test_metric_keys(self) -> None:
        check_metric_keys(type(self).module)

    def test_configs_are_accepted_somewhere(self) -> None:
        module_cls = type(self).module
        module = module_cls()
        for cfg in _configs(module_cls, tuple(self.configs) or None):
            if not any(_accepted(module, cfg, s) is not None for s in self.scenarios):
                raise _fail(_where(module_cls, cfg), "validate() rejects this config in every scenario")

    def test_output_contract(self) -> None:
        check_output_contract(*self._args())

    def test_empty_and_padding(self) -> None:
        check_empty_and_padding(*self._args())

    def test_degenerate_and_extreme(self) -> None:
        check_degenerate_and_extreme(*self._args())

    def test_gradients_reach_logits(self) -> None:
        check_gradients_reach_logits(*self._args())

    def test_deterministic(self) -> None:
        check_deterministic(*self._args())

    def test_fp_neutral(self) -> None:
        check_fp_neutral(*self._args())

    def test_packing_invariance(self) -> None:
        check_packing_invariance(*self._args())

    def test_runs_in_pipeline(self) -> None:
        check_runs_in_pipeline(*self._args())
