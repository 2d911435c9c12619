"""``token_ce``: weighted full-vocabulary cross-entropy on text rows (spec 02 §2.4–§2.5).

``CE_r = LSE(z_r) − z_r[y_r]`` (τ = 1, no smoothing), with ``LSE`` the context's shared
``full_lse`` view (one logsumexp per context, shared with coord_reg's gate) and ``z_r[y_r]``
gathered per row (no ``[N, V]`` temporary). ``T`` = rows with ``w_r > 0`` (weights from
:mod:`coordexp.losses.masking`, × ``row_mult``). Atoms share one denominator and sum to token_ce::

    struct_ce = Σ_{T ∩ {struct, eos}} w·CE / Σ_T w        desc_ce = Σ_{T ∩ desc} w·CE / Σ_T w

Contexts: the channel's text context (``gt`` or ``rollout``); with ``self_context_struct_weight > 0``
also ``self_context`` (its own group; only ``struct_ce``, desc rows weigh 0 there).
Metrics: ``text_diag/<ctx>/{struct_ce_mean, desc_ce_mean}`` = unweighted mean CE over the
supervised rows of that type (diagnostic only; ``self_context`` has no desc mean).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import attrs
import torch

from coordexp.core.context import TeacherForcingContext
from coordexp.core.errors import ConfigError
from coordexp.core.metrics import MEAN, Metric
from coordexp.core.plugins.protocol import AtomTerm, ModuleOutput, ObjectiveModule, Strategy, variant_channels
from coordexp.core.tokens import ContextName, TokenType
from coordexp.losses.config_fields import optional_weight_field, weight_field
from coordexp.losses.masking import TokenWeights, token_row_weights

__all__ = ["TokenCE", "TokenCEConfig"]

#: Keys that only act on Channel B (rollout) rows.
ROLLOUT_KEYS = ("rollout_fn_desc_weight", "rollout_matched_prefix_struct_weight")


@attrs.frozen(kw_only=True)
class TokenCEConfig:
    """token_ce config (spec 05 §5.3). Closure and eos weights are fixed at 1.0 and not config.

    ``rollout_fn_desc_weight`` ``None`` inherits ``desc_ce_weight`` (:meth:`resolved`).
    """

    struct_ce_weight: float = weight_field(1.0)
    desc_ce_weight: float = weight_field(1.0)
    rollout_fn_desc_weight: Optional[float] = optional_weight_field()  # noqa: UP045
    rollout_matched_prefix_struct_weight: float = weight_field(1.0)
    self_context_struct_weight: float = weight_field(0.0)

    def resolved(self) -> TokenCEConfig:
        """Null-inheritance applied: ``rollout_fn_desc_weight`` ← ``desc_ce_weight`` when null."""
        if self.rollout_fn_desc_weight is not None:
            return self
        return attrs.evolve(self, rollout_fn_desc_weight=self.desc_ce_weight)

    def token_weights(self) -> TokenWeights:
        """The §2.4 weights of the resolved config."""
        cfg = self.resolved()
        return TokenWeights(
            struct=cfg.struct_ce_weight,
            desc=cfg.desc_ce_weight,
            fn_desc=float(cfg.rollout_fn_desc_weight),
            matched_prefix_struct=cfg.rollout_matched_prefix_struct_weight,
            self_context_struct=cfg.self_context_struct_weight,
        )


def _group(ctx: TeacherForcingContext) -> str:
    return f"token_ce/{ctx.name.value}/weight"


class TokenCE(ObjectiveModule):
    """Weighted full-vocabulary CE on struct, desc and eos rows (spec 02 §2.5)."""

    name: ClassVar[str] = "token_ce"
    atoms: ClassVar[tuple[str, ...]] = ("struct_ce", "desc_ce")
    Config: ClassVar[type] = TokenCEConfig

    # ----------------------------------------------------------------------------- configuration
    def validate(self, cfg: TokenCEConfig, variant: str, strategy: Strategy) -> None:
        """Reject inapplicable and inert settings (D43) on the authored config.

        * ``rollout_*`` keys act on Channel B only. Under a variant without Channel B (``stage1``)
          a value different from its default is an error. The structured config cannot tell an
          explicitly authored default from an omitted key; an authored default is harmless.
        * ``self_context_struct_weight > 0`` needs ``stage2_two_channel`` with
          ``n_softctx_iter ≥ 2`` (otherwise there is no self_context).
        * Every weight that acts in this variant is 0 → error (token_ce would train closure and
          eos only). This check sees no ``enabled`` flag, so it also fires for a disabled entry.
        """
        channels = variant_channels(variant)
        defaults = TokenCEConfig()
        if "B" not in channels:
            for key in ROLLOUT_KEYS:
                if getattr(cfg, key) != getattr(defaults, key):
                    raise ConfigError(
                        key,
                        f"acts on Channel B (rollout) rows only and {variant} has no Channel B; "
                        "remove it (D43)",
                    )
        has_self_context = variant == "stage2_two_channel" and strategy.n_softctx_iter >= 2
        if cfg.self_context_struct_weight > 0.0 and not has_self_context:
            if variant == "stage2_two_channel":
                reason = "stage2_ab.n_softctx_iter = 1, so there is no self_context; set n_softctx_iter >= 2"
            else:
                reason = f"{variant} has no self_context (it exists in stage2_two_channel with n_softctx_iter >= 2)"
            raise ConfigError("self_context_struct_weight", f"is inert: {reason}, or remove the key (D43)")
        resolved = cfg.resolved()
        acting = {"struct_ce_weight": resolved.struct_ce_weight}
        if "A" in channels:
            acting["desc_ce_weight"] = resolved.desc_ce_weight
        if "B" in channels:
            acting["rollout_fn_desc_weight (resolved)"] = float(resolved.rollout_fn_desc_weight)
            acting["rollout_matched_prefix_struct_weight"] = resolved.rollout_matched_prefix_struct_weight
        if has_self_context:
            acting["self_context_struct_weight"] = resolved.self_context_struct_weight
        if all(value == 0.0 for value in acting.values()):
            raise ConfigError(
                "",
                f"every token_ce weight acting in {variant} is 0 ({', '.join(acting)}); token_ce would "
                "train closure and eos only. Set a weight > 0, or remove token_ce from the pipeline",
            )

    def atom_weights(self, cfg: TokenCEConfig) -> dict[str, float]:
        """Row weights live inside the numerators, so atoms weigh 1.0; ``desc_ce`` weighs 0.0 when
        no desc row can be supervised (``desc_ce_weight`` and resolved FN desc weight both 0)."""
        weights = cfg.token_weights()
        return {"struct_ce": 1.0, "desc_ce": 1.0 if max(weights.desc, weights.fn_desc) > 0.0 else 0.0}

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        if context == ContextName.SELF_CONTEXT.value:
            return [("text_diag/self_context/struct_ce_mean", MEAN)]
        return [(f"text_diag/{context}/struct_ce_mean", MEAN), (f"text_diag/{context}/desc_ce_mean", MEAN)]

    # ----------------------------------------------------------------------------- execution
    @staticmethod
    def _contexts(ctxset: Any, weights: TokenWeights) -> list[TeacherForcingContext]:
        contexts = [ctxset.text_context]
        if weights.self_context_struct > 0.0:
            contexts += [c for c in ctxset.contexts.values() if c.name is ContextName.SELF_CONTEXT]
        return contexts

    def denominators(self, ctxset: Any, cfg: TokenCEConfig) -> dict[str, float]:
        weights = cfg.token_weights()
        return {
            _group(ctx): float(token_row_weights(ctx, weights).sum())
            for ctx in self._contexts(ctxset, weights)
        }

    def compute(self, ctxset: Any, cfg: TokenCEConfig) -> ModuleOutput:
        weights = cfg.token_weights()
        atoms: dict[str, list[AtomTerm]] = {"struct_ce": [], "desc_ce": []}
        metrics: list[Metric] = []
        for ctx in self._contexts(ctxset, weights):
            row_weight = token_row_weights(ctx, weights)
            rows = torch.nonzero(row_weight > 0.0).reshape(-1)
            lse = ctx.full_lse
            target_logit = ctx.logits[rows, ctx.target_ids[rows]].to(lse.dtype)
            ce = lse[rows] - target_logit
            weighted = row_weight[rows].to(lse.dtype) * ce
            is_desc = ctx.token_type[rows] == int(TokenType.DESC)
            zero = torch.zeros((), dtype=lse.dtype, device=lse.device)
            den = float(row_weight.sum())
            name = ctx.name.value
            atoms["struct_ce"].append(
                AtomTerm(name, torch.where(is_desc, zero, weighted).sum(), _group(ctx), den)
            )
            detached = ce.detach()
            n_desc = is_desc.sum()
            metrics.append(
                Metric.mean(
                    f"text_diag/{name}/struct_ce_mean",
                    torch.where(is_desc, zero, detached).sum(),
                    (rows.numel() - n_desc).to(lse.dtype),
                )
            )
            if ctx.name is not ContextName.SELF_CONTEXT:
                atoms["desc_ce"].append(
                    AtomTerm(name, torch.where(is_desc, weighted, zero).sum(), _group(ctx), den)
                )
                metrics.append(
                    Metric.mean(
                        f"text_diag/{name}/desc_ce_mean",
                        torch.where(is_desc, detached, zero).sum(),
                        n_desc.to(lse.dtype),
                    )
                )
        return ModuleOutput(atoms={k: v for k, v in atoms.items() if v}, metrics=metrics)
