"""``coord_reg``: coordinate-distribution terms on coord rows and the text gate (spec 02 §2.6).

Per coord row ``r`` of the coord context: ``s = clamp(z_r[coord_ids], ±1e4)`` (the shared
``coord_logits`` view; NaN raises, D45), ``p = softmax(s/τ)``, target bin ``t``. Atoms (weight key):

* ``coord_token_ce`` (``coord_ce_weight``): ``−log p_t``
* ``coord_soft_ce`` (``soft_ce_weight``): ``−Σ q_i log p_i`` with Gaussian targets ``q`` (σ, R)
* ``coord_w1`` (``w1_weight``): ``(1/999) Σ_{i<999} |P_i − Q_i|`` (CDFs)
* ``coord_entropy`` (``entropy_weight``, any sign): ``−Σ p_i log max(p_i, 1e−12)``
* ``coord_el1`` / ``coord_ehuber`` (``el1_weight`` / ``ehuber_weight``): expected ``|v − g|`` / Huber
* ``coord_gate`` (``coord_gate_weight``): ``LSE(z_r/τ) − LSE(s/τ) = −log p_coord``, clamped at 0

Coord atoms are weighted means over the coord rows (row weight: its bbox group weight, else its
``row_mult``; the context's ``coord_row_weight`` view) and share the group
``coord_reg/<coord ctx>/coord_weight``. ``text_gate`` (``text_gate_weight``) is
``−log clamp(1 − p_coord, 1e−6, 1)`` on the text-gate rows of the text context, an unweighted mean
(each row counts its ``row_mult``, i.e. 1, or 0 on padding) over the group
``coord_reg/<text ctx>/text_gate_rows``. Atoms with weight 0 are not computed.

The text-gate rows are the §2.4 ✓ rows for token_ce's *default* weights (every non-coord, non-eos
row except matched-prefix desc): a module sees only its own config at run time. Only the positivity
of those weights decides the rows, so ``validate_peers`` refuses a pipeline whose token_ce zeroes a
weight text_gate gates on (the rows would differ); any other token_ce weights give the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

import attrs
import torch

from coordexp.core.context import COORD_LOGIT_CLAMP, TeacherForcingContext
from coordexp.core.errors import ConfigError
from coordexp.core.plugins.protocol import AtomTerm, ModuleOutput, ObjectiveModule
from coordexp.losses import coord_terms
from coordexp.losses.config_fields import (
    int_field,
    positive_field,
    signed_weight_field,
    weight_field,
)
from coordexp.losses.masking import DEFAULT_TOKEN_WEIGHTS, text_gate_rows

__all__ = ["COORD_ATOMS", "CoordReg", "CoordRegConfig"]

#: Atom → its weight key in the config.
ATOM_WEIGHT_KEYS: dict[str, str] = {
    "coord_token_ce": "coord_ce_weight",
    "coord_soft_ce": "soft_ce_weight",
    "coord_w1": "w1_weight",
    "coord_entropy": "entropy_weight",
    "coord_el1": "el1_weight",
    "coord_ehuber": "ehuber_weight",
    "coord_gate": "coord_gate_weight",
    "text_gate": "text_gate_weight",
}
COORD_ATOMS = tuple(atom for atom in ATOM_WEIGHT_KEYS if atom != "text_gate")


@attrs.frozen(kw_only=True)
class CoordRegConfig:
    """coord_reg config (spec 02 §2.6, 05 §5.4). σ is in bins, δ in normalized [0, 1] units."""

    coord_ce_weight: float = weight_field(0.0)
    soft_ce_weight: float = weight_field(1.0)
    w1_weight: float = weight_field(1.0)
    entropy_weight: float = signed_weight_field(0.0)
    el1_weight: float = weight_field(0.0)
    ehuber_weight: float = weight_field(0.0)
    coord_gate_weight: float = weight_field(1.0)
    text_gate_weight: float = weight_field(0.0)
    temperature: float = positive_field(1.0)
    target_sigma: float = positive_field(2.0)
    target_truncate: Optional[int] = int_field(None, lower=0, optional=True)  # noqa: UP045
    huber_delta: float = positive_field(0.001)


def coord_group(ctx: TeacherForcingContext) -> str:
    return f"coord_reg/{ctx.name.value}/coord_weight"


def text_gate_group(ctx: TeacherForcingContext) -> str:
    return f"coord_reg/{ctx.name.value}/text_gate_rows"


def _coord_log_probs(ctx: TeacherForcingContext, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p, p)`` ``[N_c, 1000]`` at temperature τ (the shared views at τ = 1)."""
    if tau == 1.0:
        return ctx.coord_log_probs, ctx.coord_probs
    log_probs = torch.log_softmax(ctx.coord_logits / tau, dim=-1)
    return log_probs, log_probs.exp()


def _text_gate_terms(ctx: TeacherForcingContext, rows: torch.Tensor, tau: float) -> torch.Tensor:
    """``[N_g]`` ``−log clamp(1 − p_coord, 1e−6, 1)`` at ``rows`` (text rows: coord slice gathered here)."""
    full = ctx.lse(tau)[rows]
    sliced = ctx.logits[rows[:, None], ctx.coord_ids[None, :]].to(full.dtype)
    coord = torch.logsumexp(sliced.clamp(-COORD_LOGIT_CLAMP, COORD_LOGIT_CLAMP) / tau, dim=-1)
    # 1 − p_coord = −expm1(log p_coord), exact near p_coord → 0 and → 1.
    not_coord = -torch.expm1((coord - full).clamp_max(0.0))
    return -torch.log(not_coord.clamp(coord_terms.TEXT_GATE_FLOOR, 1.0))


class CoordReg(ObjectiveModule):
    """Coordinate-distribution regularizers on coord rows plus the text gate (spec 02 §2.6)."""

    name: ClassVar[str] = "coord_reg"
    atoms: ClassVar[tuple[str, ...]] = tuple(ATOM_WEIGHT_KEYS)
    Config: ClassVar[type] = CoordRegConfig

    def validate_peers(self, cfg: CoordRegConfig, peers: Mapping[str, Any]) -> None:
        """text_gate's row set is "token_ce rows with w > 0, minus eos" (02 §2.4, C8). Modules see
        only their own config at run time, so text_gate uses the default token_ce weights; their
        positivity pattern is all that decides the rows. A token_ce config that zeroes one of
        those weights would change the rows, so that combination is refused instead of computed
        on the wrong rows."""
        token_ce = peers.get("token_ce")
        if cfg.text_gate_weight == 0.0 or token_ce is None or not callable(getattr(token_ce, "token_weights", None)):
            return
        authored = token_ce.token_weights()
        zeroed = [
            name
            for name in ("struct", "desc", "fn_desc", "matched_prefix_struct")
            if (getattr(authored, name) > 0) != (getattr(DEFAULT_TOKEN_WEIGHTS, name) > 0)
        ]
        if zeroed:
            raise ConfigError(
                "text_gate_weight",
                f"text_gate needs every token_ce row weight it gates on to be > 0, but token_ce sets "
                f"{', '.join(zeroed)} to 0; set text_gate_weight: 0.0 or keep those token_ce weights > 0",
            )

    def atom_weights(self, cfg: CoordRegConfig) -> dict[str, float]:
        return {atom: float(getattr(cfg, key)) for atom, key in ATOM_WEIGHT_KEYS.items()}

    def denominators(self, ctxset: Any, cfg: CoordRegConfig) -> dict[str, float]:
        coord_ctx, text_ctx = ctxset.coord_context, ctxset.text_context
        gate_rows = text_gate_rows(text_ctx, DEFAULT_TOKEN_WEIGHTS)
        return {
            coord_group(coord_ctx): float(coord_ctx.coord_row_weight.sum()),
            text_gate_group(text_ctx): float(text_ctx.row_mult[gate_rows].sum()),
        }

    def compute(self, ctxset: Any, cfg: CoordRegConfig) -> ModuleOutput:
        weights = self.atom_weights(cfg)
        active = {atom for atom, weight in weights.items() if weight != 0.0}
        atoms: dict[str, AtomTerm] = {}
        coord_active = active & set(COORD_ATOMS)
        if coord_active:
            atoms.update(self._coord_atoms(ctxset.coord_context, cfg, coord_active))
        if "text_gate" in active:
            text_ctx = ctxset.text_context
            rows = text_gate_rows(text_ctx, DEFAULT_TOKEN_WEIGHTS)
            row_weight = text_ctx.row_mult[rows]
            terms = _text_gate_terms(text_ctx, rows, cfg.temperature)
            atoms["text_gate"] = AtomTerm(
                text_ctx.name.value,
                (row_weight.to(terms.dtype) * terms).sum(),
                text_gate_group(text_ctx),
                float(row_weight.sum()),
            )
        return ModuleOutput(atoms=atoms)

    @staticmethod
    def _coord_atoms(
        ctx: TeacherForcingContext, cfg: CoordRegConfig, active: set[str]
    ) -> dict[str, AtomTerm]:
        tau = cfg.temperature
        targets = ctx.coord_targets
        row_weight = ctx.coord_row_weight
        log_probs, probs = _coord_log_probs(ctx, tau)
        per_row: dict[str, torch.Tensor] = {}
        if "coord_token_ce" in active:
            per_row["coord_token_ce"] = -log_probs.gather(1, targets[:, None]).squeeze(1)
        if active & {"coord_soft_ce", "coord_w1"}:
            soft = coord_terms.gaussian_targets(targets, cfg.target_sigma, cfg.target_truncate, probs.dtype)
            if "coord_soft_ce" in active:
                per_row["coord_soft_ce"] = coord_terms.soft_cross_entropy(log_probs, soft)
            if "coord_w1" in active:
                per_row["coord_w1"] = coord_terms.wasserstein1(probs, soft)
        if "coord_entropy" in active:
            per_row["coord_entropy"] = coord_terms.truncated_entropy(probs)
        if "coord_el1" in active:
            per_row["coord_el1"] = coord_terms.expected_l1(probs, targets)
        if "coord_ehuber" in active:
            per_row["coord_ehuber"] = coord_terms.expected_huber(probs, targets, cfg.huber_delta)
        if "coord_gate" in active:
            full = ctx.lse(tau)[ctx.coord_row_index]
            scaled = ctx.coord_logits if tau == 1.0 else ctx.coord_logits / tau
            coord = torch.logsumexp(scaled, dim=-1)
            per_row["coord_gate"] = (full - coord).clamp_min(0.0)
        den = float(row_weight.sum())
        group = coord_group(ctx)
        return {
            atom: AtomTerm(ctx.name.value, (row_weight.to(values.dtype) * values).sum(), group, den)
            for atom, values in per_row.items()
        }
