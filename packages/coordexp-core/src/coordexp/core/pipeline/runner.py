"""Executes a resolved pipeline on one micro-batch's context set (spec 02 §2.9–§2.10, 05 §5.2).

Per optimizer step the executor:

1. builds ``StepAggregator(runner.step_keys(channel, contexts))``;
2. calls ``runner.denominators(metadata_ctxsets)`` over the step's micro-batches and all-reduces
   the result once (:func:`reduce_denominators`) → ``D_g``;
3. per micro-batch: ``loss, metrics = runner.run(ctxset, D)``; ``loss.backward()``;
   ``aggregator.add(metrics)``;
4. ``reduced = aggregator.reduce(all_reduce)``; ``runner.apply_step_health(reduced)`` disables,
   on every rank alike, each diagnostic that failed on any rank.

The loss backpropagated per micro-batch is ``world_size · Σ W_m · w_atom · num / D_g`` (undoing
DDP's gradient averaging), so the step's gradient does not depend on how samples are split across
packs, micro-batches or ranks. ``loss/total`` is derived by the aggregator after reduction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from coordexp.core.errors import PipelineError
from coordexp.core.metrics import (
    LOSS_PREFIX,
    MEAN,
    SUM,
    AllReduce,
    Metric,
    check_key_reduction,
)
from coordexp.core.pipeline.spec import ResolvedModule, ResolvedPipeline
from coordexp.core.plugins.protocol import ModuleOutput, label

_log = logging.getLogger(__name__)

DEN_REL_TOL = 1e-6
DEN_ABS_TOL = 1e-9


def diag_failed_key(name: str) -> str:
    """The health counter a failing diagnostic emits (sum-reduced)."""
    return f"health/diag_failed/{name}_count"


def loss_key(context: str, atom: str) -> str:
    return f"loss/{context}/{atom}"


def reduce_denominators(local: Mapping[str, float], all_reduce: AllReduce | None) -> dict[str, float]:
    """Sum denominators across ranks with one float64 SUM all-reduce (sorted group order).

    Every rank must hold the same group keys (modules return a static group set per channel and
    context names), otherwise the packed tensors misalign.
    """
    groups = sorted(local)
    tensor = torch.tensor([float(local[g]) for g in groups], dtype=torch.float64)
    if all_reduce is not None:
        out = all_reduce(tensor, SUM)
        tensor = tensor if out is None else out
    return dict(zip(groups, tensor.cpu().tolist(), strict=True))


class PipelineRunner:
    """Runs objectives (declared order) and isolated diagnostics of a :class:`ResolvedPipeline`.

    ``warn`` receives one message per (diagnostic, exception type); default: ``logging``.
    """

    def __init__(
        self,
        resolved: ResolvedPipeline,
        *,
        world_size: int = 1,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
        self.resolved = resolved
        self.world_size = world_size
        self._warn = warn if warn is not None else _log.warning
        self._warned: set[tuple[str, str]] = set()
        self._disabled: set[str] = set()
        self._failed: dict[str, str] = {}
        self._declared: dict[tuple[str, str, tuple[str, ...]], frozenset[tuple[str, str]]] = {}

    # ----------------------------------------------------------------- selection

    def objectives(self, channel: object) -> tuple[ResolvedModule, ...]:
        """Enabled objectives scoped to ``channel``, in declared order."""
        channel = label(channel)
        return tuple(m for m in self.resolved.objective if m.runs_on(channel))

    def diagnostics(self, channel: object) -> tuple[ResolvedModule, ...]:
        """Enabled, not disabled diagnostics scoped to ``channel``, in declared order."""
        channel = label(channel)
        return tuple(
            m for m in self.resolved.diagnostics if m.runs_on(channel) and m.name not in self._disabled
        )

    # ----------------------------------------------------------------- diagnostics isolation

    def failed_diagnostics(self) -> tuple[str, ...]:
        """Diagnostics that raised on this rank since they were last disabled (not yet disabled)."""
        return tuple(self._failed)

    @property
    def disabled_diagnostics(self) -> frozenset[str]:
        return frozenset(self._disabled)

    def disable(self, name: str) -> None:
        """Stop running diagnostic ``name`` and drop its keys from later ``step_keys``.

        Call it on every rank at the same step (see :meth:`apply_step_health`)."""
        if name not in {m.name for m in self.resolved.diagnostics}:
            raise ValueError(f"{name!r} is not a diagnostic of this pipeline")
        self._disabled.add(name)
        self._failed.pop(name, None)

    def apply_step_health(self, reduced: Mapping[str, float]) -> list[str]:
        """Disable every diagnostic whose reduced ``health/diag_failed/<name>_count`` is > 0.

        ``reduced`` is the step's all-reduced metrics, identical on all ranks, so all ranks disable
        the same diagnostics from the next step. Returns the newly disabled names.
        """
        newly = [
            m.name
            for m in self.resolved.diagnostics
            if m.name not in self._disabled and reduced.get(diag_failed_key(m.name), 0.0) > 0.0
        ]
        for name in newly:
            self.disable(name)
        return newly

    def _diagnostic_failed(self, module: ResolvedModule, exc: BaseException) -> None:
        self._failed.setdefault(module.name, f"{type(exc).__name__}: {exc}")
        key = (module.name, type(exc).__name__)
        if key not in self._warned:
            self._warned.add(key)
            self._warn(
                f"diagnostic {module.name!r} raised {type(exc).__name__}: {exc}; it is skipped for the rest "
                f"of this step and disabled on all ranks from the next step (the loss is unaffected)"
            )

    # ----------------------------------------------------------------- key declaration

    def _module_keys(
        self, module: ResolvedModule, channel: str, contexts: tuple[str, ...]
    ) -> frozenset[tuple[str, str]]:
        cache_key = (module.name, channel, contexts)
        if cache_key not in self._declared:
            declared: set[tuple[str, str]] = set()
            for context in contexts:
                for item in module.module.metric_keys(channel, context):
                    if not (isinstance(item, tuple) and len(item) == 2):
                        raise PipelineError(f"metric_keys must return (key, reduction) pairs, got {item!r}")
                    key, reduction = item
                    check_key_reduction(key, reduction)
                    if key.startswith(LOSS_PREFIX):
                        raise PipelineError(f"metric {key!r}: `loss/*` keys are emitted by the pipeline only")
                    declared.add((key, reduction))
            self._declared[cache_key] = frozenset(declared)
        return self._declared[cache_key]

    def _declared_or_raise(
        self, module: ResolvedModule, channel: str, contexts: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        try:
            return sorted(self._module_keys(module, channel, contexts))
        except PipelineError as exc:
            raise PipelineError(f"{module.kind} {module.name!r} ({module.path}): {exc}") from exc
        except Exception as exc:
            raise PipelineError(
                f"{module.kind} {module.name!r} ({module.path}): metric_keys failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def step_keys(self, channel: object, contexts: Iterable[object]) -> list[tuple[str, str]]:
        """The static ``(key, reduction)`` list of a step of ``channel`` with these context names.

        Identical on every rank for the same arguments and disabled set: ``loss/<ctx>/<atom>``
        (mean) for every atom with a non-zero effective weight, the modules' declared metrics, and
        ``health/diag_failed/<name>_count`` (sum) per active diagnostic. A diagnostic whose
        declaration is invalid is disabled here (deterministically on every rank).
        """
        channel = label(channel)
        names = tuple(label(c) for c in contexts)
        keys: list[tuple[str, str]] = []
        for module in self.objectives(channel):
            for context in names:
                keys += [
                    (loss_key(context, atom), MEAN)
                    for atom, weight in module.atom_weights.items()
                    if module.weight * weight != 0.0
                ]
            keys += self._declared_or_raise(module, channel, names)
        for module in self.diagnostics(channel):
            try:
                keys += self._declared_or_raise(module, channel, names)
            except PipelineError as exc:
                self._diagnostic_failed(module, exc)
                self.disable(module.name)
                continue
            keys.append((diag_failed_key(module.name), SUM))
        return keys

    # ----------------------------------------------------------------- denominators

    def _module_denominators(self, module: ResolvedModule, ctxset: Any) -> dict[str, float]:
        try:
            raw = module.module.denominators(ctxset, module.config)
        except Exception as exc:
            raise PipelineError(
                f"objective {module.name!r} ({module.path}): denominators failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(raw, Mapping):
            raise PipelineError(
                f"objective {module.name!r}: denominators must return a mapping, got {type(raw).__name__}"
            )
        out: dict[str, float] = {}
        for group, value in raw.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise PipelineError(
                    f"objective {module.name!r}: denominator {group!r} must be a finite number >= 0, "
                    f"got {value!r}"
                )
            out[str(group)] = float(value)
        return out

    def denominators(self, ctxsets: Iterable[Any]) -> dict[str, float]:
        """``{group: Σ den}`` over this rank's micro-batches of the step (metadata-only context
        sets are enough), sorted by group. All-reduce the result once before the first forward."""
        totals: dict[str, float] = {}
        owners: dict[str, str] = {}
        for ctxset in ctxsets:
            for module in self.objectives(ctxset.channel):
                for group, value in self._module_denominators(module, ctxset).items():
                    if owners.setdefault(group, module.name) != module.name:
                        raise PipelineError(
                            f"denominator group {group!r} is returned by both {owners[group]!r} and "
                            f"{module.name!r}; groups must be namespaced '<module>/<context>/<what>'"
                        )
                    totals[group] = totals.get(group, 0.0) + value
        return dict(sorted(totals.items()))

    # ----------------------------------------------------------------- execution

    @staticmethod
    def _check_output(output: object) -> ModuleOutput:
        if not isinstance(output, ModuleOutput):
            raise PipelineError(f"compute must return a ModuleOutput, got {type(output).__name__}")
        return output

    @staticmethod
    def _check_metrics(metrics: Sequence[Metric], declared: Iterable[tuple[str, str]]) -> None:
        allowed = set(declared)
        for metric in metrics:
            check_key_reduction(metric.key, metric.reduction)
            if (metric.key, metric.reduction) not in allowed:
                raise PipelineError(
                    f"metric {metric.key!r} ({metric.reduction}) was not declared by metric_keys for this "
                    f"channel and these contexts"
                )

    def _run_objective(
        self,
        module: ResolvedModule,
        ctxset: Any,
        channel: str,
        contexts: tuple[str, ...],
        denominators: Mapping[str, float],
    ) -> tuple[list[torch.Tensor], list[Metric]]:
        where = f"objective {module.name!r} ({module.path})"
        declared = self._declared_or_raise(module, channel, contexts)
        pre_forward = self._module_denominators(module, ctxset)
        try:
            output = self._check_output(module.module.compute(ctxset, module.config))
        except Exception as exc:
            raise PipelineError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        try:
            self._check_metrics(output.metrics, declared)
        except PipelineError as exc:
            raise PipelineError(f"{where}: {exc}") from exc
        terms: list[torch.Tensor] = []
        metrics: list[Metric] = []
        for atom, atom_terms in output.atoms.items():
            if atom not in module.atom_weights:
                raise PipelineError(
                    f"{where} returned unknown atom {atom!r}; declared atoms: {list(module.atom_weights)}"
                )
            weight = module.weight * module.atom_weights[atom]
            for term in atom_terms:
                if term.context not in contexts:
                    raise PipelineError(
                        f"{where}: atom {atom!r} names context {term.context!r}, not in {list(contexts)}"
                    )
                if term.group not in pre_forward:
                    raise PipelineError(
                        f"{where}: atom {atom!r} uses group {term.group!r}, which denominators() "
                        f"does not return"
                    )
                expected = pre_forward[term.group]
                if not math.isclose(term.den, expected, rel_tol=DEN_REL_TOL, abs_tol=DEN_ABS_TOL):
                    raise PipelineError(
                        f"{where}: atom {atom!r} reports den {term.den!r} for group {term.group!r} but the "
                        f"pre-forward denominator of this micro-batch is {expected!r}"
                    )
                if weight == 0.0:
                    continue
                if term.group not in denominators:
                    raise PipelineError(
                        f"{where}: group {term.group!r} is missing from the step denominators; pass the "
                        f"all-reduced result of runner.denominators(...) for this step"
                    )
                step_den = denominators[term.group]
                if step_den == 0.0:
                    continue
                terms.append(term.num * (self.world_size * weight / step_den))
                metrics.append(
                    Metric.mean(loss_key(term.context, atom), num=term.num.detach() * weight, den=term.den)
                )
        return terms, metrics + list(output.metrics)

    def _run_diagnostic(
        self, module: ResolvedModule, ctxset: Any, channel: str, contexts: tuple[str, ...]
    ) -> list[Metric]:
        try:
            declared = self._declared_or_raise(module, channel, contexts)
            output = self._check_output(module.module.compute(ctxset, module.config))
            if output.atoms:
                raise PipelineError(f"diagnostics produce no atoms, got {sorted(output.atoms)}")
            self._check_metrics(output.metrics, declared)
        except Exception as exc:
            self._diagnostic_failed(module, exc)
            return [Metric.sum(diag_failed_key(module.name), 1.0)]
        return list(output.metrics)

    def run(self, ctxset: Any, denominators: Mapping[str, float]) -> tuple[torch.Tensor, list[Metric]]:
        """Run one micro-batch.

        ``denominators`` are the step's all-reduced ``D_g``. Returns the loss to backpropagate and
        the micro-batch's metrics. Objectives run in declared order (disabled and off-channel ones
        are skipped); any objective exception raises :class:`PipelineError` naming the module.
        Diagnostics run under ``torch.no_grad()``; one that raises emits its health counter, is
        skipped for the rest of the step and never touches the loss. When no term contributes
        (every group empty), the loss is a zero tensor without grad, on every rank alike.
        """
        channel = label(ctxset.channel)
        contexts = tuple(label(name) for name in ctxset.contexts)
        terms: list[torch.Tensor] = []
        metrics: list[Metric] = []
        for module in self.objectives(channel):
            module_terms, module_metrics = self._run_objective(
                module, ctxset, channel, contexts, denominators
            )
            terms += module_terms
            metrics += module_metrics
        with torch.no_grad():
            for module in self.diagnostics(channel):
                if module.name in self._failed:
                    continue
                metrics += self._run_diagnostic(module, ctxset, channel, contexts)
        if terms:
            loss = terms[0]
            for term in terms[1:]:
                loss = loss + term
        else:
            loss = torch.zeros((), device=self._device_of(ctxset))
        return loss, metrics

    @staticmethod
    def _device_of(ctxset: Any) -> torch.device:
        for context in ctxset.contexts.values():
            logits = getattr(context, "logits", None)
            if isinstance(logits, torch.Tensor):
                return logits.device
        return torch.device("cpu")
