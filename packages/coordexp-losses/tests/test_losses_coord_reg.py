"""coord_reg (spec 02 §2.6): every atom vs a hand loop over rows (values and gradients), the
properties L1–L4 and L6, the row sets of C8, and packing invariance L7."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.context import ContextSet
from coordexp.core.geometry import decode_coords
from coordexp.core.tokens import SpanKind, TokenType
from coordexp.losses import coord_terms
from coordexp.losses.coord_reg import ATOM_WEIGHT_KEYS, CoordReg, CoordRegConfig
from coordexp.losses.masking import DEFAULT_TOKEN_WEIGHTS, token_row_weights
from coordexp.testing.factory import make_context_set, make_samples, pack_samples, random_packing, repack

MODULE = CoordReg()
ALL_ON = CoordRegConfig(
    coord_ce_weight=0.7,
    soft_ce_weight=1.0,
    w1_weight=2.0,
    entropy_weight=-0.3,
    el1_weight=1.5,
    ehuber_weight=0.5,
    coord_gate_weight=1.2,
    text_gate_weight=0.8,
)
BINS = st.integers(0, 999)


def hand_row_terms(
    z: torch.Tensor, coord_ids: torch.Tensor, t: int, cfg: CoordRegConfig
) -> dict[str, torch.Tensor]:
    """Every coord atom of one row, written out from the spec formulas (float64)."""
    tau, sigma, radius, delta = cfg.temperature, cfg.target_sigma, cfg.target_truncate, cfg.huber_delta
    s = z[coord_ids].double().clamp(-1e4, 1e4)
    p = torch.softmax(s / tau, dim=0)
    bins = torch.arange(1000, dtype=torch.float64)
    q = torch.exp(-0.5 * ((bins - t) / sigma) ** 2)
    if radius is not None:
        q = torch.where((bins - t).abs() <= radius, q, torch.zeros(()))
    q = q / q.sum()
    cdf_gap = torch.cumsum(p, 0) - torch.cumsum(q, 0)
    distance = (bins / 999 - t / 999).abs()
    huber = torch.where(distance < delta, distance**2 / (2 * delta), distance - delta / 2)
    return {
        "coord_token_ce": -torch.log(p[t]),
        "coord_soft_ce": -(q * torch.log(p)).sum(),
        "coord_w1": cdf_gap[:999].abs().sum() / 999,
        "coord_entropy": -(p * torch.log(torch.clamp(p, min=1e-12))).sum(),
        "coord_el1": (p * distance).sum(),
        "coord_ehuber": (p * huber).sum(),
        "coord_gate": torch.logsumexp(z.double() / tau, 0) - torch.logsumexp(s / tau, 0),
    }


def hand_loss(ctxset: ContextSet, cfg: CoordRegConfig, coord_logits: torch.Tensor, text_logits: torch.Tensor):
    """Σ_atoms w_atom · (weighted mean over rows), and the per-atom means."""
    ctx, text = ctxset.coord_context, ctxset.text_context
    group_weight = {}
    for rows, weight in zip(ctx.bbox_groups.rows.tolist(), ctx.bbox_groups.weight.tolist(), strict=True):
        for row in rows:
            group_weight[row] = weight
    sums: dict[str, torch.Tensor] = {}
    total_weight = 0.0
    for r in range(ctx.n_rows):
        if ctx.token_type[r] != TokenType.COORD or ctx.coord_target[r] < 0:
            continue
        w = group_weight.get(r, float(ctx.row_mult[r]))
        total_weight += w
        for atom, value in hand_row_terms(
            coord_logits[r], ctx.coord_ids, int(ctx.coord_target[r]), cfg
        ).items():
            sums[atom] = sums.get(atom, 0.0) + w * value
    means = {atom: value / total_weight for atom, value in sums.items()} if total_weight else {}
    gate_sum, gate_rows = 0.0, 0.0
    for r in range(text.n_rows):
        kind, ttype = int(text.span_kind[r]), int(text.token_type[r])
        if ttype in (TokenType.COORD, TokenType.EOS):
            continue
        if ttype == TokenType.DESC and kind in (SpanKind.PREFIX_OPEN, SpanKind.PREFIX_MATCHED):
            continue  # matched-prefix desc: token_ce weight 0, no text gate
        probs = torch.softmax(text_logits[r].double() / cfg.temperature, 0)
        p_coord = probs[text.coord_ids].sum()
        gate_sum = gate_sum + float(text.row_mult[r]) * -torch.log(torch.clamp(1 - p_coord, 1e-6, 1.0))
        gate_rows += float(text.row_mult[r])
    if gate_rows:
        means["text_gate"] = gate_sum / gate_rows
    weights = MODULE.atom_weights(cfg)
    loss = sum(weights[atom] * value for atom, value in means.items())
    return loss, means


def module_loss(ctxset: ContextSet, cfg: CoordRegConfig):
    output = MODULE.compute(ctxset, cfg)
    weights = MODULE.atom_weights(cfg)
    means = {atom: terms[0].num / terms[0].den for atom, terms in output.atoms.items() if terms[0].den}
    return sum(weights[a] * v for a, v in means.items()), means, output


def with_group_weights(samples, seed):
    rng = np.random.default_rng(seed)
    return [
        attrs.evolve(s, rows=attrs.evolve(s.rows, group_weight=rng.uniform(0.2, 3.0, s.rows.n_groups)))
        for s in samples
    ]


@pytest.mark.parametrize(
    ("cfg", "channel", "n_iter"),
    [
        (ALL_ON, "A", 1),
        (attrs.evolve(ALL_ON, temperature=0.6, target_truncate=3, huber_delta=0.004), "B", 1),
        (attrs.evolve(ALL_ON, target_sigma=0.7, target_truncate=0), "A", 2),
    ],
)
@pytest.mark.parametrize("seed", [0, 3])
def test_values_and_gradients_match_a_hand_loop_over_rows(cfg, channel, n_iter, seed):
    context = "rollout" if channel == "B" else "gt"
    samples = with_group_weights(make_samples(seed, context=context, n_samples=3), seed)
    row_mult = [1.0, 0.0, 1.0]  # the middle sample is a padding pack member
    contexts = {context: pack_samples(samples, trainer_variant="stage2_two_channel", row_mult=row_mult)}
    if n_iter == 2:
        other = make_samples(seed, context="gt", n_samples=3)
        other = [attrs.evolve(o, rows=s.rows) for o, s in zip(other, samples, strict=True)]
        contexts["self_context"] = pack_samples(
            other, context="self_context", trainer_variant="stage2_two_channel", row_mult=row_mult
        )
    ctxset = ContextSet.for_channel(channel, contexts, n_softctx_iter=n_iter)
    leaves = [s.seq_logits for s in samples]
    loss, means, output = module_loss(ctxset, cfg)
    ref_loss, ref_means = hand_loss(ctxset, cfg, ctxset.coord_context.logits, ctxset.text_context.logits)
    assert means.keys() == ref_means.keys() == set(ATOM_WEIGHT_KEYS)
    for atom in means:
        torch.testing.assert_close(means[atom].double(), ref_means[atom].double(), rtol=2e-5, atol=1e-6)
    coord_name = ctxset.coord_context.name.value
    assert {t.context for terms in output.atoms.values() for t in terms} == {coord_name, context}
    grads = torch.autograd.grad(loss, leaves, allow_unused=True, retain_graph=True)
    ref_grads = torch.autograd.grad(ref_loss, leaves, allow_unused=True)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.double(), rg.double(), rtol=1e-4, atol=1e-5)
    assert torch.count_nonzero(grads[1]) == 0  # padding member: no gradient at all


def test_zero_weight_atoms_are_not_computed_and_groups_are_static():
    ctxset = make_context_set(2, channel="A")
    output = MODULE.compute(ctxset, CoordRegConfig())
    assert set(output.atoms) == {"coord_soft_ce", "coord_w1", "coord_gate"}
    groups = MODULE.denominators(ctxset, CoordRegConfig())
    empty = make_context_set(2, channel="A", max_objects=0)
    assert (
        set(MODULE.denominators(empty, CoordRegConfig()))
        == set(groups)
        == {
            "coord_reg/gt/coord_weight",
            "coord_reg/gt/text_gate_rows",
        }
    )


# ------------------------------------------------------------------------------------- L1


@settings(max_examples=60, deadline=None)
@given(t=BINS, sigma=st.floats(0.3, 40.0), radius=st.one_of(st.none(), st.integers(0, 50)))
def test_gaussian_targets_sum_to_one_peak_at_t_and_vanish_beyond_r(t, sigma, radius):
    q = coord_terms.gaussian_targets(torch.tensor([t]), sigma, radius, torch.float64)[0]
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)
    assert int(q.argmax()) == t
    if radius is not None:
        far = (torch.arange(1000) - t).abs() > radius
        assert torch.all(q[far] == 0.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t=BINS,
    sigma=st.floats(0.5, 20.0),
    radius=st.one_of(st.none(), st.integers(1, 30)),
)
def test_soft_ce_is_at_least_the_target_entropy_with_equality_at_p_equal_q(seed, t, sigma, radius):
    q = coord_terms.gaussian_targets(torch.tensor([t]), sigma, radius, torch.float64)
    entropy_q = -(q * torch.log(q.clamp_min(1e-300))).where(q > 0, torch.zeros(())).sum()
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    log_p = torch.log_softmax(logits, -1)
    assert float(coord_terms.soft_cross_entropy(log_p, q)[0]) >= float(entropy_q) - 1e-9
    log_q = torch.log(q.clamp_min(1e-300))
    assert float(coord_terms.soft_cross_entropy(log_q, q)[0]) == pytest.approx(float(entropy_q), abs=1e-9)


# ------------------------------------------------------------------------------------- L2


def delta(bins: list[int]) -> torch.Tensor:
    out = torch.zeros(len(bins), 1000, dtype=torch.float64)
    out[torch.arange(len(bins)), torch.tensor(bins)] = 1.0
    return out


@settings(max_examples=80, deadline=None)
@given(a=BINS, b=BINS, seed=st.integers(0, 10_000))
def test_w1_identities(a, b, seed):
    p = torch.softmax(
        torch.randn(1, 1000, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1
    )
    assert float(coord_terms.wasserstein1(p, p)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(coord_terms.wasserstein1(delta([a]), delta([b]))[0]) == pytest.approx(
        abs(a - b) / 999, abs=1e-12
    )
    assert float(coord_terms.wasserstein1(delta([0]), delta([999]))[0]) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(a=BINS, b=BINS, c=BINS)
def test_w1_is_monotone_in_the_distance(a, b, c):
    near, far = sorted([abs(b - a), abs(c - a)])
    pairs = (
        delta([a, a]),
        delta([a + near if a + near <= 999 else a - near, a + far if a + far <= 999 else a - far]),
    )
    values = coord_terms.wasserstein1(*pairs)
    assert float(values[0]) <= float(values[1]) + 1e-12


# ------------------------------------------------------------------------------------- L3


def single_row(coord_mass_logit: float, seed: int, text_row: bool = False) -> ContextSet:
    """A gt context whose first coord (or text) row puts ``sigmoid``-like mass on the coord slice."""
    ctxset = make_context_set(seed, channel="A", max_objects=2)
    ctx = ctxset.coord_context
    logits = ctx.logits.detach().clone()
    logits[:, ctx.coord_ids] += coord_mass_logit
    full = ctx.with_logits(logits.requires_grad_(True))
    return ContextSet.for_channel("A", {"gt": full})


@settings(max_examples=30, deadline=None)
# Shifts stop at +8: beyond it 1 − p_coord falls below float32 resolution of the two logsumexps
# (~1e-6 at |LSE| ≈ 30), where text_gate sits on its clamp floor and only rounding noise varies.
@given(seed=st.integers(0, 1000), shift=st.floats(-30.0, 8.0))
def test_gates_are_non_negative_and_follow_the_coord_mass(seed, shift):
    cfg = attrs.evolve(ALL_ON, text_gate_weight=1.0)
    low_out = MODULE.compute(single_row(shift, seed), cfg).atoms
    high_out = MODULE.compute(single_row(shift + 5.0, seed), cfg).atoms
    if not low_out["coord_gate"][0].den:
        return
    gate_low = float(low_out["coord_gate"][0].num.detach())
    gate_high = float(high_out["coord_gate"][0].num.detach())
    text_low = float(low_out["text_gate"][0].num.detach())
    text_high = float(high_out["text_gate"][0].num.detach())
    assert gate_low >= 0.0 and gate_high >= 0.0 and text_low >= 0.0
    # float32 LSE rounding is ~1e-6 per row, so compare with a small absolute tolerance.
    assert gate_high <= gate_low + 1e-4  # more coord mass → smaller coord gate
    assert text_high >= text_low - 1e-4  # more coord mass → larger text gate


def test_coord_gate_vanishes_as_coord_mass_goes_to_one():
    values = []
    for shift in (0.0, 10.0, 30.0, 60.0):
        atoms = MODULE.compute(single_row(shift, 5), CoordRegConfig()).atoms
        values.append(float(atoms["coord_gate"][0].num.detach()) / atoms["coord_gate"][0].den)
    assert values == sorted(values, reverse=True) and values[-1] < 1e-6


# ------------------------------------------------------------------------------------- L4 (decode)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 50.0))
def test_decoded_coordinates_lie_in_the_unit_interval_and_st_follows_the_expectation_gradient(seed, scale):
    logits = (torch.randn(6, 1000, generator=torch.Generator().manual_seed(seed)) * scale).requires_grad_(
        True
    )
    expected = decode_coords(logits, "exp")
    assert torch.all((expected >= 0) & (expected <= 1))
    st_values = decode_coords(logits, "st")
    torch.testing.assert_close(st_values.detach(), logits.argmax(-1).float() / 999)
    weights = torch.randn(6, generator=torch.Generator().manual_seed(seed + 1))
    (g_exp,) = torch.autograd.grad((expected * weights).sum(), logits)
    (g_st,) = torch.autograd.grad((decode_coords(logits, "st") * weights).sum(), logits)
    torch.testing.assert_close(g_st, g_exp)


def test_half_mass_at_both_ends_decodes_to_one_half():
    logits = torch.full((1, 1000), -1e4)
    logits[0, 0] = logits[0, 999] = 0.0
    assert float(decode_coords(logits, "exp")[0]) == pytest.approx(0.5, abs=1e-6)


# ------------------------------------------------------------------------------------- L6


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), t=BINS, delta_=st.floats(1e-4, 0.2), scale=st.floats(0.01, 30.0))
def test_expected_distances_are_non_negative_and_zero_at_a_one_hot_target(seed, t, delta_, scale):
    targets = torch.tensor([t])
    p = torch.softmax(
        torch.randn(1, 1000, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale, -1
    )
    assert float(coord_terms.expected_l1(p, targets)[0]) >= 0
    assert float(coord_terms.expected_huber(p, targets, delta_)[0]) >= 0
    one_hot = delta([t])
    assert float(coord_terms.expected_l1(one_hot, targets)[0]) == 0.0
    assert float(coord_terms.expected_huber(one_hot, targets, delta_)[0]) == 0.0
    entropy = float(coord_terms.truncated_entropy(p)[0])
    assert -1e-12 <= entropy <= math.log(1000) + 1e-9
    assert float(coord_terms.truncated_entropy(one_hot)[0]) == 0.0


# ------------------------------------------------------------------------------------- C8


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), channel=st.sampled_from(["A", "B"]))
def test_gate_rows_are_exactly_the_specified_rows(seed, channel):
    """C8: text_gate touches only token_ce rows (w > 0, default weights) minus eos; coord_gate
    touches exactly the supervised coord rows."""
    ctxset = make_context_set(seed, channel=channel)
    ctx = ctxset.coord_context
    cfg = CoordRegConfig(soft_ce_weight=0.0, w1_weight=0.0, coord_gate_weight=1.0, text_gate_weight=1.0)
    atoms = MODULE.compute(ctxset, cfg).atoms
    (gate_grad,) = torch.autograd.grad(atoms["coord_gate"][0].num, ctx.logits, retain_graph=True)
    touched = gate_grad.abs().sum(dim=1) > 0
    assert touched.tolist() == ctx.coord_rows.tolist()
    (text_grad,) = torch.autograd.grad(atoms["text_gate"][0].num, ctx.logits)
    text_touched = text_grad.abs().sum(dim=1) > 0
    allowed = (token_row_weights(ctx, DEFAULT_TOKEN_WEIGHTS) > 0) & (ctx.token_type != TokenType.EOS)
    assert not torch.any(text_touched & ~allowed)
    assert atoms["text_gate"][0].den == float(allowed.sum())


# ------------------------------------------------------------------------------------- L7


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), split=st.integers(0, 10_000), context=st.sampled_from(["gt", "rollout"]))
def test_loss_and_gradients_do_not_depend_on_packing(seed, split, context):
    samples = with_group_weights(make_samples(seed, context=context, n_samples=5), seed)
    leaves = [s.seq_logits for s in samples]
    channel = "B" if context == "rollout" else "A"

    def step(packs):
        sets = [ContextSet.for_channel(channel, {context: c}) for c in repack(samples, packs)]
        dens: dict[str, float] = {}
        for s in sets:
            for group, value in MODULE.denominators(s, ALL_ON).items():
                dens[group] = dens.get(group, 0.0) + value
        weights = MODULE.atom_weights(ALL_ON)
        return sum(
            weights[atom] * t.num / dens[t.group]
            for s in sets
            for atom, terms in MODULE.compute(s, ALL_ON).atoms.items()
            for t in terms
        )

    whole = step([list(range(5))])
    parts = step(random_packing(5, split))
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(whole, leaves), torch.autograd.grad(parts, leaves), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_config_bounds():
    for key, bad in [
        ("temperature", 0.0),
        ("target_sigma", -1.0),
        ("huber_delta", 0.0),
        ("w1_weight", -0.5),
        ("soft_ce_weight", float("nan")),
        ("entropy_weight", float("inf")),
    ]:
        with pytest.raises(ValueError, match=key):
            CoordRegConfig(**{key: bad})
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="target_truncate"):
            CoordRegConfig(target_truncate=bad)
    assert CoordRegConfig(entropy_weight=-2).entropy_weight == -2.0


# ------------------------------------------------------------------------- C8 across modules


def _stage1_pipeline(token_ce_config, coord_reg_config):
    from coordexp.core.pipeline.spec import resolve_pipeline
    from coordexp.core.plugins.protocol import Strategy
    from coordexp.core.plugins.registry import ModuleRegistry

    raw = {"objective": [{"name": "token_ce", "config": token_ce_config}, {"name": "coord_reg", "config": coord_reg_config}]}
    return resolve_pipeline(
        raw,
        variant="stage1",
        path="stage1.pipeline",
        strategy=Strategy(trainer_variant="stage1", packing="none", max_length=2048),
        registry=ModuleRegistry(environ={}),
    )


def test_text_gate_refuses_a_token_ce_that_zeroes_a_gated_weight():
    from coordexp.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"stage1\.pipeline\.objective\[1\]\.config\.text_gate_weight.*desc"):
        _stage1_pipeline({"desc_ce_weight": 0.0}, {"text_gate_weight": 0.5})


def test_text_gate_accepts_any_positive_token_ce_weights():
    resolved = _stage1_pipeline({"desc_ce_weight": 0.25, "struct_ce_weight": 2.0}, {"text_gate_weight": 0.5})
    assert [m.name for m in resolved.objective] == ["token_ce", "coord_reg"]
    # without text_gate the zeroed desc weight is fine
    _stage1_pipeline({"desc_ce_weight": 0.0}, {"text_gate_weight": 0.0})
