"""The module protocol, API v1 (spec 05 §5.1; docs/architecture.md "Module protocol").

An objective or diagnostic is a class registered under the entry-point group
``coordexp.objectives`` / ``coordexp.diagnostics`` (entry name = its YAML ``name``) or through the
``coordexp_register`` hook. The pipeline instantiates it with no arguments and calls, in order:

1. ``validate(cfg, variant, strategy)`` once at resolution, on the *authored* config (defaults
   filled, null-inheritance not yet resolved, so "authored vs. default" stays visible). Raise
   ``ConfigError(key, message)`` with ``key`` relative to the module config (``""`` for the whole
   config); the pipeline prefixes the YAML location. Runs for disabled modules too (their configs
   are checksummed); the all-weights-zero rule for enabled modules is checked by the pipeline.
2. ``resolve_config(cfg, variant)`` → the config with null-inheritance resolved; this is the
   config that is checksummed and passed to every later call.
3. Per step: ``metric_keys(channel, context)`` (static declaration), ``denominators(ctxset, cfg)``
   on the metadata-only context set before the forward, ``compute(ctxset, cfg)`` after it.

Modules are pure functions of (context set, config): no state across calls, no collectives.
``channel`` and ``context`` arguments are plain strings (``"A"``/``"B"``; ``"gt"``,
``"self_context"``, ``"rollout"``); a context set is duck-typed: ``channel``, ``contexts``
(mapping context name → context), ``text_context``, ``coord_context``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Union

import attrs
import torch

from coordexp.core.metrics import Metric
from coordexp.core.pipeline.checksum import sha256_hex

API_VERSION = 1

OBJECTIVE = "objective"
DIAGNOSTIC = "diagnostic"

TRAINER_VARIANTS: tuple[str, ...] = ("stage1", "stage2_two_channel", "stage2_rollout_aligned")
VARIANT_CHANNELS: Mapping[str, tuple[str, ...]] = {
    "stage1": ("A",),
    "stage2_two_channel": ("A", "B"),
    "stage2_rollout_aligned": ("B",),
}
CHANNELS: tuple[str, ...] = ("A", "B")
CONTEXT_NAMES: tuple[str, ...] = ("gt", "self_context", "rollout")


def label(value: object) -> str:
    """The plain string of a channel / context name (``Enum`` members give their value)."""
    inner = getattr(value, "value", value)
    if not isinstance(inner, str):
        raise TypeError(f"expected a channel or context name, got {value!r}")
    return inner


def variant_channels(variant: str) -> tuple[str, ...]:
    """The channel set of a trainer variant (spec 02 §2.2, D38)."""
    try:
        return VARIANT_CHANNELS[variant]
    except KeyError:
        raise ValueError(
            f"unknown trainer variant {variant!r}; expected one of {', '.join(TRAINER_VARIANTS)}"
        ) from None


def _one_of(*allowed: object):
    return attrs.validators.in_(allowed)


def _strict_float(value: object) -> object:
    """int/float → float; anything else (bool, str, ...) is left for the validator to reject."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _optional_strict_float(value: object) -> object:
    return None if value is None else _strict_float(value)


def _finite_positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (isinstance(value, float) and math.isfinite(value) and value > 0.0):
        raise ValueError(f"{attribute.name} must be a finite float > 0, got {value!r}")


def _positive_int(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _optional_ratio(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be null or a number in [0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class Strategy:
    """Strategy keys (D25): how contexts are built, never module config.

    Hashed into ``strategy_sha256`` (run manifest), never into the pipeline checksum.
    ``packing`` is ``"static"`` (stage1 ``training.packing``), ``"dynamic"`` (stage-2
    ``training.dynamic_packing``) or ``"none"``; ``max_length`` is ``template.max_length``.
    ``b_ratio`` is required for ``stage2_two_channel`` and null otherwise; ``n_softctx_iter > 1``
    exists only for ``stage2_two_channel``.
    """

    trainer_variant: str = attrs.field(validator=_one_of(*TRAINER_VARIANTS))
    packing: str = attrs.field(validator=_one_of("static", "dynamic", "none"))
    max_length: int = attrs.field(validator=_positive_int)
    n_softctx_iter: int = attrs.field(default=1, validator=_positive_int)
    softctx_grad_mode: str = attrs.field(default="em_detach", validator=_one_of("em_detach", "unroll"))
    softctx_temperature: float = attrs.field(default=1.0, converter=_strict_float, validator=_finite_positive)
    coord_ctx_embed_mode: str = attrs.field(default="soft", validator=_one_of("soft", "st", "hard"))
    coord_decode_mode: str = attrs.field(default="exp", validator=_one_of("exp", "st"))
    b_ratio: float | None = attrs.field(
        default=None, converter=_optional_strict_float, validator=_optional_ratio
    )

    def __attrs_post_init__(self) -> None:
        two_channel = self.trainer_variant == "stage2_two_channel"
        if two_channel and self.b_ratio is None:
            raise ValueError("stage2_two_channel needs b_ratio (stage2_ab.schedule.b_ratio)")
        if not two_channel and self.b_ratio is not None:
            raise ValueError(f"b_ratio applies only to stage2_two_channel, not {self.trainer_variant}")
        if not two_channel and self.n_softctx_iter != 1:
            raise ValueError(f"n_softctx_iter applies only to stage2_two_channel, not {self.trainer_variant}")
        if self.trainer_variant == "stage1" and self.coord_decode_mode != "exp":
            raise ValueError("stage1 decodes coordinates with `exp` only (spec 02 §2.7)")

    @property
    def channels(self) -> tuple[str, ...]:
        return variant_channels(self.trainer_variant)

    def payload(self) -> dict[str, object]:
        """The run-manifest ``strategy`` object."""
        return attrs.asdict(self)

    def sha256(self) -> str:
        """``strategy_sha256``: sha256 of the canonical JSON of :meth:`payload`."""
        return sha256_hex(self.payload())


def _scalar_tensor(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise TypeError(f"AtomTerm.num must be a 0-dim tensor, got {shape}")


def _den_float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError(f"AtomTerm.den must be a number, got bool {value!r}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"AtomTerm.den must be a scalar, got shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"AtomTerm.den must be a finite number >= 0, got {value!r}")
    return float(value)


@attrs.frozen
class AtomTerm:
    """One atom's contribution from one micro-batch.

    ``num``: 0-dim tensor with grad, the un-normalized numerator (a sum over rows, not a mean).
    ``group``: the denominator group (``"<module>/<context>/<what>"``) whose step-global sum
    ``D_g`` normalizes it. ``den``: this micro-batch's share of ``D_g``; it must equal what
    ``denominators`` returned for ``group`` on the same micro-batch.
    """

    context: str = attrs.field(converter=label)
    num: torch.Tensor = attrs.field(validator=_scalar_tensor)
    group: str = attrs.field(validator=attrs.validators.instance_of(str))
    den: float = attrs.field(converter=_den_float)


AtomValue = Union[AtomTerm, Sequence[AtomTerm]]


def _atoms_mapping(value: Mapping[str, AtomValue]) -> Mapping[str, tuple[AtomTerm, ...]]:
    if not isinstance(value, Mapping):
        raise TypeError(f"ModuleOutput.atoms must be a mapping atom -> AtomTerm, got {type(value).__name__}")
    out: dict[str, tuple[AtomTerm, ...]] = {}
    for atom, terms in value.items():
        if not isinstance(atom, str):
            raise TypeError(f"atom names must be strings, got {atom!r}")
        terms = (terms,) if isinstance(terms, AtomTerm) else tuple(terms)
        if not terms or not all(isinstance(t, AtomTerm) for t in terms):
            raise TypeError(f"atom {atom!r} must map to an AtomTerm or a non-empty sequence of them")
        contexts = [t.context for t in terms]
        if len(set(contexts)) != len(contexts):
            raise ValueError(f"atom {atom!r} has two terms for one context: {contexts}")
        out[atom] = terms
    return out


def _metrics_tuple(value: Sequence[Metric]) -> tuple[Metric, ...]:
    metrics = tuple(value)
    for metric in metrics:
        if not isinstance(metric, Metric):
            raise TypeError(f"ModuleOutput.metrics must hold Metric objects, got {type(metric).__name__}")
    return metrics


@attrs.frozen
class ModuleOutput:
    """What ``compute`` returns.

    ``atoms`` maps an atom name to its :class:`AtomTerm`, or to one term per context when an atom
    is produced in several contexts in one micro-batch (e.g. ``struct_ce`` in ``gt`` and in
    ``self_context``); it is normalized to tuples. Diagnostics return no atoms.
    """

    atoms: Mapping[str, tuple[AtomTerm, ...]] = attrs.field(factory=dict, converter=_atoms_mapping)
    metrics: tuple[Metric, ...] = attrs.field(factory=tuple, converter=_metrics_tuple)


class _Module(abc.ABC):
    name: ClassVar[str]
    kind: ClassVar[str]
    api_version: ClassVar[int] = API_VERSION
    Config: ClassVar[type]
    atoms: ClassVar[tuple[str, ...]] = ()

    def validate(self, cfg: Any, variant: str, strategy: Strategy) -> None:
        """Reject inapplicable or inert settings for this variant/strategy (D43). Default: none."""

    def validate_peers(self, cfg: Any, peers: Mapping[str, Any]) -> None:
        """Reject settings that conflict with the other enabled objectives of the pipeline.

        ``peers`` maps each other enabled objective's name to its resolved config (read-only).
        Modules stay pure functions of context and own config at run time; this hook only lets a
        module refuse a combination it cannot honour. Default: none.
        """

    def resolve_config(self, cfg: Any, variant: str) -> Any:
        """Resolve null-inheritance; default: ``cfg.resolved()`` when the Config defines it."""
        resolved = getattr(cfg, "resolved", None)
        return resolved() if callable(resolved) else cfg

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        """Every ``(key, reduction)`` this module may emit for (channel, context). Default: none."""
        return []

    @abc.abstractmethod
    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        """Numerators (objectives) and metrics for one micro-batch's context set."""


class ObjectiveModule(_Module):
    """Base class of objectives: differentiable atoms over step-global denominators (02 §2.9)."""

    kind: ClassVar[str] = OBJECTIVE

    @abc.abstractmethod
    def atom_weights(self, cfg: Any) -> dict[str, float]:
        """``w_atom`` for every name in ``atoms`` (the module weight ``W_m`` multiplies these)."""

    @abc.abstractmethod
    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        """``{group: den}`` from masks and metadata only (``ctx.logits`` may be ``None``).

        Must return the same group keys for the same channel and context names on every call
        (zero when empty), so ranks all-reduce one key list.
        """


class DiagnosticModule(_Module):
    """Base class of diagnostics: metrics only, run under ``torch.no_grad()`` and isolated."""

    kind: ClassVar[str] = DIAGNOSTIC
