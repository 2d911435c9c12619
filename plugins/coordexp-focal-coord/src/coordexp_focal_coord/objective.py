"""``coord_focal``: focal cross-entropy on the coordinate-token slice.

Per supervised coord row ``r`` of the coord context: ``p = softmax(s)`` with ``s`` the context's
shared, clamped ``coord_logits`` view (τ = 1), ``t`` the target bin, and

    FL_r = −(1 − p_t)^γ · log p_t

Atom ``coord_focal`` = ``Σ_r w_r·FL_r / Σ_r w_r`` with ``w_r`` the row's bbox group weight, else its
``row_mult`` (the ``coord_row_weight`` view), over the group ``coord_focal/<ctx>/coord_weight``.
Metric ``coord_focal/<ctx>/modulation_mean`` = unweighted mean of ``(1 − p_t)^γ`` over rows with
``w_r > 0``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch

from coordexp.core.errors import ConfigError
from coordexp.core.metrics import MEAN, Metric
from coordexp.core.plugins.protocol import AtomTerm, ModuleOutput, ObjectiveModule, Strategy

__all__ = ["CoordFocal", "CoordFocalConfig", "focal_terms"]

# (1 − p_t) is floored here so that γ < 1 keeps a finite gradient at p_t = 1.
_MODULATION_FLOOR = 1e-12


def _to_float(value: object) -> object:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _finite(lower: float, strict: bool):
    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        ok = (
            isinstance(value, float)
            and math.isfinite(value)
            and (value > lower if strict else value >= lower)
        )
        if not ok:
            relation = ">" if strict else ">="
            raise ValueError(f"{attribute.name} must be a finite number {relation} {lower}, got {value!r}")

    return check


_NON_NEGATIVE = _finite(0.0, strict=False)


@attrs.frozen(kw_only=True)
class CoordFocalConfig:
    """``focal_weight`` scales the atom; ``gamma`` is the focusing exponent γ."""

    focal_weight: float = attrs.field(default=1.0, converter=_to_float, validator=_NON_NEGATIVE)
    gamma: float = attrs.field(default=2.0, converter=_to_float, validator=_NON_NEGATIVE)


def focal_terms(
    log_probs: torch.Tensor, targets: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(FL, (1 − p_t)^γ)`` per row from ``[R, 1000]`` log-probabilities and long ``[R]`` targets."""
    log_p_t = log_probs.gather(1, targets[:, None]).squeeze(1)
    not_p_t = (-torch.expm1(log_p_t)).clamp_min(_MODULATION_FLOOR)
    modulation = not_p_t.pow(gamma)
    return -modulation * log_p_t, modulation


class CoordFocal(ObjectiveModule):
    """Focal CE over the 1000 coordinate bins of each supervised coord row."""

    name: ClassVar[str] = "coord_focal"
    atoms: ClassVar[tuple[str, ...]] = ("coord_focal",)
    Config: ClassVar[type] = CoordFocalConfig

    def validate(self, cfg: CoordFocalConfig, variant: str, strategy: Strategy) -> None:
        if cfg.gamma == 0.0:
            raise ConfigError(
                "gamma",
                "gamma = 0 is plain coordinate CE, which coord_reg already provides; set "
                "coord_reg.config.coord_ce_weight instead, or use gamma > 0",
            )

    def atom_weights(self, cfg: CoordFocalConfig) -> dict[str, float]:
        return {"coord_focal": cfg.focal_weight}

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"coord_focal/{context}/modulation_mean", MEAN)]

    @staticmethod
    def _group(ctx: Any) -> str:
        return f"coord_focal/{ctx.name.value}/coord_weight"

    def denominators(self, ctxset: Any, cfg: CoordFocalConfig) -> dict[str, float]:
        ctx = ctxset.coord_context
        return {self._group(ctx): float(ctx.coord_row_weight.sum())}

    def compute(self, ctxset: Any, cfg: CoordFocalConfig) -> ModuleOutput:
        ctx = ctxset.coord_context
        weight = ctx.coord_row_weight
        loss, modulation = focal_terms(ctx.coord_log_probs, ctx.coord_targets, cfg.gamma)
        live = weight > 0
        name = ctx.name.value
        return ModuleOutput(
            atoms={
                "coord_focal": AtomTerm(
                    name, (weight.to(loss.dtype) * loss).sum(), self._group(ctx), float(weight.sum())
                )
            },
            metrics=[
                Metric.mean(
                    f"coord_focal/{name}/modulation_mean",
                    modulation.detach()[live].sum(),
                    live.sum().to(modulation.dtype),
                )
            ],
        )
