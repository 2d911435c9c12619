"""``bbox_geo``: SmoothL1 and CIoU on decoded boxes of the coord context (spec 02 §2.8, D17).

Each bbox group of the coord context (4 coord rows x1, y1, x2, y2; GT bins; weight ``g``) gives a
prediction ``b̂`` decoded with ``ctx.coord_decode_mode`` (§2.7) and a target ``b = bins / 999``;
both are canonicalized (``min/max`` per axis, clamped to [0, 1]). Per box:
``SL1 = ¼ Σ_j sl1(b̂_j − b_j; β)`` and ``1 − CIoU`` (α carries no gradient). Atoms
``bbox_smoothl1 = Σ g·SL1 / Σ g`` and ``bbox_ciou = Σ g·(1 − CIoU) / Σ g`` share the group
``bbox_geo/<coord ctx>/box_weight``. Groups: gt / self_context = every GT box; rollout = matched
predictions + FN boxes (an FP group never reaches a context; one that did would weigh 0).

Non-finite per-box values (impossible for finite logits; a guard) are removed from the numerator
and counted in ``health/nonfinite_box_terms_total``. The denominator is the pre-forward
``Σ g`` (spec 02 §2.9 fixes it before the forward, so a dropped box still counts there).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from coordexp.core.context import TeacherForcingContext
from coordexp.core.geometry import canonicalize_boxes, ciou_loss, smooth_l1
from coordexp.core.metrics import SUM, Metric
from coordexp.core.plugins.protocol import AtomTerm, ModuleOutput, ObjectiveModule
from coordexp.core.tokens import Subset
from coordexp.losses.config_fields import positive_field, weight_field

__all__ = ["BBoxGeo", "BBoxGeoConfig", "NONFINITE_KEY", "box_terms", "group_weights"]

NONFINITE_KEY = "health/nonfinite_box_terms_total"


@attrs.frozen(kw_only=True)
class BBoxGeoConfig:
    """bbox_geo config (spec 02 §2.8). ``smoothl1_beta`` is in normalized [0, 1] units."""

    smoothl1_weight: float = weight_field(1.0)
    ciou_weight: float = weight_field(1.0)
    smoothl1_beta: float = positive_field(0.02)


def group_weights(ctx: TeacherForcingContext) -> torch.Tensor:
    """Float32 ``[G]``: ``g`` per group, 0 for a (never expected) FP group."""
    groups = ctx.bbox_groups
    return groups.weight.to(torch.float32) * (groups.subset != int(Subset.FP)).to(torch.float32)


def box_terms(pred: torch.Tensor, target: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(SL1, 1 − CIoU)`` per box ``[G]`` of raw ``[G, 4]`` boxes (canonicalized here)."""
    pred_c, target_c = canonicalize_boxes(pred), canonicalize_boxes(target)
    return smooth_l1(pred_c, target_c, beta), ciou_loss(pred_c, target_c)


def finite_weighted_sum(values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_{finite} w·x, number of non-finite x)``; non-finite entries get no value and no gradient."""
    finite = torch.isfinite(values)
    safe = torch.where(finite, values, values.new_zeros(()))
    return (weights.to(values.dtype) * safe).sum(), (~finite).sum()


class BBoxGeo(ObjectiveModule):
    """Box-level SmoothL1 (β = 0.02) and CIoU on decoded coordinates (spec 02 §2.8)."""

    name: ClassVar[str] = "bbox_geo"
    atoms: ClassVar[tuple[str, ...]] = ("bbox_smoothl1", "bbox_ciou")
    Config: ClassVar[type] = BBoxGeoConfig

    def atom_weights(self, cfg: BBoxGeoConfig) -> dict[str, float]:
        return {"bbox_smoothl1": cfg.smoothl1_weight, "bbox_ciou": cfg.ciou_weight}

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(NONFINITE_KEY, SUM)]

    @staticmethod
    def _group(ctx: TeacherForcingContext) -> str:
        return f"bbox_geo/{ctx.name.value}/box_weight"

    def denominators(self, ctxset: Any, cfg: BBoxGeoConfig) -> dict[str, float]:
        ctx = ctxset.coord_context
        return {self._group(ctx): float(group_weights(ctx).sum())}

    def compute(self, ctxset: Any, cfg: BBoxGeoConfig) -> ModuleOutput:
        ctx = ctxset.coord_context
        weights = group_weights(ctx)
        sl1, ciou = box_terms(
            ctx.decoded_boxes, ctx.target_boxes.to(ctx.decoded_boxes.dtype), cfg.smoothl1_beta
        )
        den = float(weights.sum())
        group = self._group(ctx)
        name = ctx.name.value
        nonfinite = torch.zeros((), dtype=torch.long, device=weights.device)
        atoms: dict[str, AtomTerm] = {}
        for atom, values, weight in (
            ("bbox_smoothl1", sl1, cfg.smoothl1_weight),
            ("bbox_ciou", ciou, cfg.ciou_weight),
        ):
            if weight == 0.0:
                continue
            num, dropped = finite_weighted_sum(values, weights)
            nonfinite = nonfinite + dropped
            atoms[atom] = AtomTerm(name, num, group, den)
        return ModuleOutput(atoms=atoms, metrics=[Metric.sum(NONFINITE_KEY, nonfinite.to(torch.float64))])
