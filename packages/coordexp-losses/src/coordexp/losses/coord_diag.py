"""``coord_diag``: coordinate-token health metrics on every context (spec 02 §2.10).

Runs under ``torch.no_grad()`` (the pipeline isolates diagnostics) on each context of the
micro-batch (gt; gt and self_context; rollout). Rows with ``row_mult = 0`` (padding) are left
out. Coord rows are the supervised coord rows (coord type with a target); text rows are the other
rows. Probabilities are over the coord slice at τ = 1 unless stated. Keys
``coord_diag/<ctx>/…``:

* ``coord_rows_count`` (sum): coord rows.
* ``coord_vocab_mass_mean``: ``p_coord = Σ_{coord ids} softmax(z)`` on coord rows (full vocab).
* ``text_coord_vocab_mass_mean``: the same on text rows (coord mass where text is expected).
* ``p_gt_mean``: ``p_t``.  ``acc_top1_rate`` / ``acc_topk_rate``: ``t`` is the argmax / in the
  top ``acc_top_k``.  ``margin_mean``: ``max_i s_i − s_t`` (logits).
* ``expected_bin_mae_mean``: ``|Σ_i p_i·i − t|`` and ``w1_to_delta_mean``: ``Σ_i p_i |i − t|``,
  both in bins.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch

from coordexp.core.context import COORD_LOGIT_CLAMP, TeacherForcingContext
from coordexp.core.geometry import NUM_BINS
from coordexp.core.metrics import MEAN, SUM, Metric
from coordexp.core.plugins.protocol import DiagnosticModule, ModuleOutput
from coordexp.core.tokens import TokenType
from coordexp.losses.config_fields import int_field

__all__ = ["CoordDiag", "CoordDiagConfig"]

MEAN_SUFFIXES = (
    "coord_vocab_mass_mean",
    "text_coord_vocab_mass_mean",
    "p_gt_mean",
    "acc_top1_rate",
    "acc_topk_rate",
    "margin_mean",
    "expected_bin_mae_mean",
    "w1_to_delta_mean",
)


@attrs.frozen(kw_only=True)
class CoordDiagConfig:
    """coord_diag config (spec 05 §5.3)."""

    acc_top_k: int = int_field(5, lower=1, upper=NUM_BINS)


def _text_coord_mass(ctx: TeacherForcingContext, rows: torch.Tensor) -> torch.Tensor:
    full = ctx.full_lse[rows]
    sliced = ctx.logits[rows[:, None], ctx.coord_ids[None, :]].to(full.dtype)
    coord = torch.logsumexp(sliced.clamp(-COORD_LOGIT_CLAMP, COORD_LOGIT_CLAMP), dim=-1)
    return torch.exp((coord - full).clamp_max(0.0))


class CoordDiag(DiagnosticModule):
    """Coordinate-token accuracy, calibration and vocabulary-mass diagnostics."""

    name: ClassVar[str] = "coord_diag"
    Config: ClassVar[type] = CoordDiagConfig

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        prefix = f"coord_diag/{context}"
        return [(f"{prefix}/coord_rows_count", SUM)] + [(f"{prefix}/{k}", MEAN) for k in MEAN_SUFFIXES]

    def compute(self, ctxset: Any, cfg: CoordDiagConfig) -> ModuleOutput:
        metrics: list[Metric] = []
        for ctx in ctxset.contexts.values():
            metrics += self._context_metrics(ctx, cfg)
        return ModuleOutput(metrics=metrics)

    @staticmethod
    def _context_metrics(ctx: TeacherForcingContext, cfg: CoordDiagConfig) -> list[Metric]:
        prefix = f"coord_diag/{ctx.name.value}"
        live = ctx.row_mult[ctx.coord_row_index] > 0
        logits = ctx.coord_logits[live]
        probs = ctx.coord_probs[live]
        targets = ctx.coord_targets[live]
        count = float(targets.numel())
        dtype = probs.dtype
        values: dict[str, torch.Tensor] = {}
        full = ctx.full_lse[ctx.coord_row_index[live]]
        values["coord_vocab_mass_mean"] = torch.exp((torch.logsumexp(logits, dim=-1) - full).clamp_max(0.0))
        p_gt = probs.gather(1, targets[:, None]).squeeze(1)
        values["p_gt_mean"] = p_gt
        gt_logit = logits.gather(1, targets[:, None]).squeeze(1)
        values["acc_top1_rate"] = (logits.argmax(dim=-1) == targets).to(dtype)
        k = min(cfg.acc_top_k, NUM_BINS)
        values["acc_topk_rate"] = (logits.topk(k, dim=-1).indices == targets[:, None]).any(dim=-1).to(dtype)
        values["margin_mean"] = logits.max(dim=-1).values - gt_logit
        bins = torch.arange(NUM_BINS, device=probs.device, dtype=dtype)
        values["expected_bin_mae_mean"] = (probs @ bins - targets.to(dtype)).abs()
        values["w1_to_delta_mean"] = (probs * (bins[None, :] - targets.to(dtype)[:, None]).abs()).sum(dim=-1)

        metrics = [Metric.sum(f"{prefix}/coord_rows_count", count)]
        metrics += [Metric.mean(f"{prefix}/{key}", v.sum(), count) for key, v in values.items()]

        text_rows = torch.nonzero((ctx.token_type != int(TokenType.COORD)) & (ctx.row_mult > 0)).reshape(-1)
        text_mass = _text_coord_mass(ctx, text_rows)
        metrics.append(
            Metric.mean(f"{prefix}/text_coord_vocab_mass_mean", text_mass.sum(), float(text_rows.numel()))
        )
        return metrics
