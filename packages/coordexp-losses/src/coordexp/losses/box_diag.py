"""``box_diag``: decoded-box quality per context (diagnostic only, safe to toggle).

For every bbox group with weight > 0 of every context (gt; gt and self_context; rollout), the
box decoded with the context's ``coord_decode_mode`` is compared with its target, both
canonicalized. Keys ``box_diag/<ctx>/…``:

* ``boxes_count`` (sum): boxes compared.
* ``iou_mean``: IoU; ``iou50_rate`` / ``iou75_rate``: IoU ≥ 0.5 / ≥ 0.75.
* ``abs_err_bins_mean``: mean absolute coordinate error over the 4 coordinates, in bins.
* ``degenerate_pred_rate``: predicted boxes narrower or lower than one bin.

In rollout, FN boxes are decoded from teacher-forced FN rows, matched ones from the rollout prefix.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from coordexp.core.context import TeacherForcingContext
from coordexp.core.geometry import NUM_BINS, box_iou, canonicalize_boxes
from coordexp.core.metrics import MEAN, SUM, Metric
from coordexp.core.plugins.protocol import DiagnosticModule, ModuleOutput
from coordexp.core.tokens import Subset

__all__ = ["BoxDiag", "BoxDiagConfig"]

_MEAN_KEYS = ("iou_mean", "iou50_rate", "iou75_rate", "abs_err_bins_mean", "degenerate_pred_rate")


@attrs.frozen(kw_only=True)
class BoxDiagConfig:
    """box_diag has no settings."""


class BoxDiag(DiagnosticModule):
    """IoU and coordinate-error metrics of the decoded boxes."""

    name: ClassVar[str] = "box_diag"
    Config: ClassVar[type] = BoxDiagConfig

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        prefix = f"box_diag/{context}"
        return [(f"{prefix}/boxes_count", SUM)] + [(f"{prefix}/{key}", MEAN) for key in _MEAN_KEYS]

    def compute(self, ctxset: Any, cfg: BoxDiagConfig) -> ModuleOutput:
        metrics: list[Metric] = []
        for ctx in ctxset.contexts.values():
            metrics += self._context_metrics(ctx)
        return ModuleOutput(metrics=metrics)

    @staticmethod
    def _context_metrics(ctx: TeacherForcingContext) -> list[Metric]:
        groups = ctx.bbox_groups
        keep = (groups.weight > 0) & (groups.subset != int(Subset.FP))
        pred = canonicalize_boxes(ctx.decoded_boxes[keep])
        target = canonicalize_boxes(ctx.target_boxes[keep].to(pred.dtype))
        count = float(pred.shape[0])
        iou = box_iou(pred, target)
        one_bin = 1.0 / (NUM_BINS - 1)
        values = {
            "iou_mean": iou,
            "iou50_rate": (iou >= 0.5).to(iou.dtype),
            "iou75_rate": (iou >= 0.75).to(iou.dtype),
            "abs_err_bins_mean": (pred - target).abs().mean(dim=-1) * (NUM_BINS - 1),
            "degenerate_pred_rate": (
                ((pred[:, 2] - pred[:, 0]) < one_bin) | ((pred[:, 3] - pred[:, 1]) < one_bin)
            ).to(iou.dtype),
        }
        prefix = f"box_diag/{ctx.name.value}"
        metrics = [Metric.sum(f"{prefix}/boxes_count", count)]
        metrics += [Metric.mean(f"{prefix}/{key}", value.sum(), count) for key, value in values.items()]
        return metrics
