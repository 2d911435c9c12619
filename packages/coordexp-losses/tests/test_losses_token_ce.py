"""token_ce (spec 02 §2.4–§2.5): values and gradients vs an independent computation, masking
invariants C2, C4–C7, C10 per context, packing invariance L7, and config validation L9."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.context import ContextSet
from coordexp.core.errors import ConfigError
from coordexp.core.plugins.protocol import Strategy
from coordexp.core.tokens import ContextName, SpanKind, TokenType
from coordexp.losses.masking import TokenWeights, text_gate_rows, token_row_weights
from coordexp.losses.token_ce import TokenCE, TokenCEConfig
from coordexp.testing.factory import make_context_set, make_samples, pack_samples, random_packing, repack

WEIGHTS = st.sampled_from([0.0, 0.25, 1.0, 2.5])
MODULE = TokenCE()


def expected_weight(context: str, span: int, token_type: int, cfg: TokenCEConfig) -> float:
    """Spec 02 §2.4 written out row by row, independently of coordexp.losses.masking."""
    fn_desc = cfg.desc_ce_weight if cfg.rollout_fn_desc_weight is None else cfg.rollout_fn_desc_weight
    if token_type == TokenType.COORD:
        return 0.0
    if context == "self_context":
        return 0.0 if token_type == TokenType.DESC else cfg.self_context_struct_weight
    if span == SpanKind.CLOSURE or token_type == TokenType.EOS:
        return 1.0
    if context == "gt":
        return cfg.struct_ce_weight if token_type == TokenType.STRUCT else cfg.desc_ce_weight
    if span in (SpanKind.PREFIX_OPEN, SpanKind.PREFIX_MATCHED):
        return cfg.rollout_matched_prefix_struct_weight if token_type == TokenType.STRUCT else 0.0
    assert span == SpanKind.FN
    return cfg.struct_ce_weight if token_type == TokenType.STRUCT else fn_desc


def reference(ctx, cfg: TokenCEConfig, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(struct_ce numerator, desc_ce numerator, Σw) from F.cross_entropy on the selected rows."""
    weights = torch.tensor(
        [
            expected_weight(ctx.name.value, int(s), int(t), cfg) * float(m)
            for s, t, m in zip(ctx.span_kind, ctx.token_type, ctx.row_mult, strict=True)
        ],
        dtype=torch.float64,
    )
    rows = torch.nonzero(weights > 0).reshape(-1)
    ce = F.cross_entropy(logits[rows].double(), ctx.target_ids[rows], reduction="none")
    is_desc = ctx.token_type[rows] == TokenType.DESC
    weighted = weights[rows] * ce
    return weighted[~is_desc].sum(), weighted[is_desc].sum(), float(weights.sum())


def run(ctxset: ContextSet, cfg: TokenCEConfig) -> dict[tuple[str, str], tuple[torch.Tensor, float]]:
    output = MODULE.compute(ctxset, cfg)
    return {(atom, t.context): (t.num, t.den) for atom, terms in output.atoms.items() for t in terms}


def config(w_s: float, w_d: float, w_fd: float | None, w_mp: float, w_sc: float = 0.0) -> TokenCEConfig:
    return TokenCEConfig(
        struct_ce_weight=w_s,
        desc_ce_weight=w_d,
        rollout_fn_desc_weight=w_fd,
        rollout_matched_prefix_struct_weight=w_mp,
        self_context_struct_weight=w_sc,
    ).resolved()


@pytest.mark.parametrize(
    ("channel", "n_iter", "context"),
    [("A", 1, "gt"), ("B", 1, "rollout"), ("A", 2, "self_context")],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_gradients_match_cross_entropy_on_the_selected_rows(channel, n_iter, context, seed):
    cfg = config(0.7, 1.3, 0.4, 0.6, w_sc=0.8 if context == "self_context" else 0.0)
    ctxset = make_context_set(
        seed, channel=channel, n_softctx_iter=n_iter, trainer_variant="stage2_two_channel"
    )
    ctx = ctxset[context]
    terms = run(ctxset, cfg)
    struct_num, struct_den = terms[("struct_ce", context)]
    ref_struct, ref_desc, ref_den = reference(ctx, cfg, ctx.logits)
    assert struct_den == pytest.approx(ref_den, rel=1e-6)
    torch.testing.assert_close(struct_num.double(), ref_struct, rtol=1e-5, atol=1e-5)
    loss = struct_num
    if context != "self_context":
        desc_num, desc_den = terms[("desc_ce", context)]
        assert desc_den == struct_den  # one shared denominator (D39)
        torch.testing.assert_close(desc_num.double(), ref_desc, rtol=1e-5, atol=1e-5)
        loss = loss + desc_num
    else:
        assert ("desc_ce", "self_context") not in terms
    (grad,) = torch.autograd.grad(loss / struct_den, ctx.logits)
    leaf = ctx.logits.detach().clone().requires_grad_(True)
    ref_struct, ref_desc, ref_den = reference(ctx, cfg, leaf)
    ((ref_struct + ref_desc) / ref_den).backward()
    torch.testing.assert_close(grad.double(), leaf.grad.double(), rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    w_s=WEIGHTS,
    w_d=WEIGHTS,
    w_fd=st.one_of(st.none(), WEIGHTS),
    w_mp=WEIGHTS,
    w_sc=WEIGHTS,
    context=st.sampled_from(["gt", "rollout", "self_context"]),
)
def test_masking_table_invariants(seed, w_s, w_d, w_fd, w_mp, w_sc, context):
    """C2, C5, C6, C10 and the §2.4 table, per context, for any weights."""
    cfg = config(w_s, w_d, w_fd, w_mp, w_sc)
    channel = "B" if context == "rollout" else "A"
    ctxset = make_context_set(
        seed, channel=channel, n_softctx_iter=2 if channel == "A" else 1, trainer_variant="stage2_two_channel"
    )
    ctx = ctxset[context]
    weights = token_row_weights(ctx, cfg.token_weights())
    expected = [
        expected_weight(context, int(s), int(t), cfg)
        for s, t in zip(ctx.span_kind, ctx.token_type, strict=True)
    ]
    assert weights.tolist() == pytest.approx(expected)
    kind, ttype = ctx.span_kind, ctx.token_type
    if context != "self_context":  # C5: closure and eos weigh exactly 1.0 in gt and rollout
        assert torch.all(weights[(kind == SpanKind.CLOSURE) | (kind == SpanKind.EOS)] == 1.0)
    if context == "rollout":  # C6
        prefix = (kind == SpanKind.PREFIX_OPEN) | (kind == SpanKind.PREFIX_MATCHED)
        assert torch.all(weights[prefix & (ttype == TokenType.DESC)] == 0.0)
        assert torch.all(weights[prefix & (ttype == TokenType.STRUCT)] == torch.tensor(w_mp))
        resolved_fd = w_d if w_fd is None else w_fd
        assert torch.all(
            weights[(kind == SpanKind.FN) & (ttype == TokenType.DESC)] == torch.tensor(resolved_fd)
        )
    if context == "self_context":  # C10
        assert torch.all(weights[ttype == TokenType.DESC] == 0.0)
        assert torch.all(
            weights[(ttype != TokenType.DESC) & (ttype != TokenType.COORD)] == torch.tensor(w_sc)
        )
    # C10: row sets depend on which weights are zero, never on their values.
    scaled = config(3 * w_s, 3 * w_d, None if w_fd is None else 3 * w_fd, 3 * w_mp, 3 * w_sc)
    assert torch.equal(token_row_weights(ctx, scaled.token_weights()) > 0, weights > 0)
    # C2: the gradient of token_ce is exactly 0 at coord rows, whatever the config.
    terms = run(ctxset, cfg)
    mine = [num for (atom, ctx_name), (num, _) in terms.items() if ctx_name == context]
    if mine:
        (grad,) = torch.autograd.grad(sum(mine), ctx.logits, allow_unused=True)
        if grad is not None:
            assert torch.count_nonzero(grad[ctx.token_type == TokenType.COORD]) == 0
            assert torch.all(torch.isfinite(grad))


def test_fn_desc_weight_inherits_desc_weight_also_when_not_one():
    """C6 / G6: the FN desc weight is desc_ce_weight unless rollout_fn_desc_weight is set."""
    assert TokenCEConfig(desc_ce_weight=0.5).token_weights().fn_desc == 0.5
    assert TokenCEConfig(desc_ce_weight=0.5, rollout_fn_desc_weight=0.0).token_weights().fn_desc == 0.0
    resolved = TokenCE().resolve_config(TokenCEConfig(desc_ce_weight=0.5), "stage2_two_channel")
    assert resolved.rollout_fn_desc_weight == 0.5


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), w_d=st.sampled_from([0.3, 1.0, 2.0]))
def test_zero_desc_weight_removes_desc_rows_exactly(seed, w_d):
    """gt with w_d = 0 equals the CE over the non-desc rows alone, and desc rows get no gradient."""
    ctxset = make_context_set(seed, channel="A")
    ctx = ctxset.text_context
    zero = run(ctxset, config(1.0, 0.0, None, 1.0))
    num, den = zero[("struct_ce", "gt")]
    assert float(zero[("desc_ce", "gt")][0].detach()) == 0.0
    keep = (ctx.token_type != TokenType.DESC) & (ctx.token_type != TokenType.COORD)
    ce = F.cross_entropy(ctx.logits[keep].double(), ctx.target_ids[keep], reduction="none")
    assert den == pytest.approx(float(keep.sum()))
    torch.testing.assert_close(num.double(), ce.sum(), rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(num, ctx.logits)
    assert torch.count_nonzero(grad[ctx.token_type == TokenType.DESC]) == 0
    with_desc = run(make_context_set(seed, channel="A"), config(1.0, w_d, None, 1.0))
    desc_rows = int((ctx.token_type == TokenType.DESC).sum())
    assert with_desc[("struct_ce", "gt")][1] == pytest.approx(den + w_d * desc_rows)


def test_zero_prefix_weights_ignore_prefix_text_and_keep_the_tail():
    """C7: with w_fd = w_mp = 0 no non-coord prefix row is supervised; FN struct, closure and eos
    rows are; every supervised coord row lies in the assistant part (rows are assistant targets)."""
    cfg = config(1.0, 1.0, 0.0, 0.0)
    for seed in range(6):
        ctxset = make_context_set(seed, channel="B", max_objects=4, max_fp=2)
        ctx = ctxset.text_context
        weights = token_row_weights(ctx, cfg.token_weights())
        prefix = (ctx.span_kind == SpanKind.PREFIX_OPEN) | (ctx.span_kind == SpanKind.PREFIX_MATCHED)
        assert torch.all(weights[prefix] == 0.0)
        tail = (ctx.span_kind == SpanKind.FN) & (ctx.token_type == TokenType.STRUCT)
        tail |= (ctx.span_kind == SpanKind.CLOSURE) | (ctx.span_kind == SpanKind.EOS)
        assert torch.all(weights[tail] > 0.0)
        assert torch.all(weights[(ctx.span_kind == SpanKind.FN) & (ctx.token_type == TokenType.DESC)] == 0.0)
        assert not torch.any((ctx.span_kind == SpanKind.PROMPT) | (ctx.span_kind == SpanKind.PREFIX_FP))
        assert torch.all(ctx.token_type[ctx.coord_row_index] == TokenType.COORD)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), w_mp=WEIGHTS, w_fd=WEIGHTS)
def test_fp_rows_contribute_nothing(seed, w_mp, w_fd):
    """C4: arbitrary logits at the positions predicting FP tokens leave numerators and den unchanged."""
    cfg = config(1.0, 1.0, w_fd, w_mp)
    samples = make_samples(seed, context="rollout", n_samples=3, max_fp=3)
    base = ContextSet.for_channel("B", {"rollout": pack_samples(samples)})
    changed_samples = []
    for sample in samples:
        fp = sample.rows.positions[sample.rows.span_kind == SpanKind.PREFIX_FP] - 1
        logits = sample.seq_logits.detach().clone()
        logits[torch.as_tensor(fp, dtype=torch.long)] = torch.randn(len(fp), logits.shape[1]) * 40
        changed_samples.append(attrs.evolve(sample, seq_logits=logits))
    changed = ContextSet.for_channel("B", {"rollout": pack_samples(changed_samples)})
    a, b = run(base, cfg), run(changed, cfg)
    assert a.keys() == b.keys()
    for key in a:
        assert float(a[key][0].detach()) == float(b[key][0].detach()) and a[key][1] == b[key][1]
    assert MODULE.denominators(base, cfg) == MODULE.denominators(changed, cfg)


def step_loss(ctxs, cfg) -> torch.Tensor:
    sets = [ContextSet.for_channel(c.channel, {c.name: c}) for c in ctxs]
    total = sum(MODULE.denominators(s, cfg)[f"token_ce/{s.text_context.name.value}/weight"] for s in sets)
    nums = [t.num for s in sets for terms in MODULE.compute(s, cfg).atoms.values() for t in terms]
    return sum(nums) / total


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), split=st.integers(0, 10_000), context=st.sampled_from(["gt", "rollout"]))
def test_loss_and_gradients_do_not_depend_on_packing(seed, split, context):
    """L7 with the factory's re-split helper: one pack vs a random partition into packs."""
    cfg = config(0.8, 1.2, 0.5, 0.7)
    samples = make_samples(seed, context=context, n_samples=5)
    leaves = [s.seq_logits for s in samples]
    whole = step_loss(repack(samples, [list(range(5))]), cfg)
    grads_whole = torch.autograd.grad(whole, leaves)
    parts = step_loss(repack(samples, random_packing(5, split)), cfg)
    grads_parts = torch.autograd.grad(parts, leaves)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_whole, grads_parts, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_text_diag_means_are_unweighted_per_type_means():
    cfg = config(0.5, 2.0, None, 1.0)
    ctxset = make_context_set(4, channel="A")
    ctx = ctxset.text_context
    metrics = {m.key: m for m in MODULE.compute(ctxset, cfg).metrics}
    supervised = token_row_weights(ctx, cfg.token_weights()) > 0
    ce = F.cross_entropy(ctx.logits.detach().double(), ctx.target_ids, reduction="none")
    desc = supervised & (ctx.token_type == TokenType.DESC)
    struct = supervised & (ctx.token_type != TokenType.DESC)
    for key, mask in (("text_diag/gt/desc_ce_mean", desc), ("text_diag/gt/struct_ce_mean", struct)):
        metric = metrics[key]
        assert float(metric.den) == float(mask.sum())
        assert float(metric.num) == pytest.approx(float(ce[mask].sum()), rel=1e-5)
    assert set(metrics) <= {k for k, _ in MODULE.metric_keys("A", "gt")}


def test_self_context_runs_only_with_a_positive_weight():
    ctxset = make_context_set(1, channel="A", n_softctx_iter=2, trainer_variant="stage2_two_channel")
    assert set(MODULE.denominators(ctxset, config(1, 1, None, 1, 0.0))) == {"token_ce/gt/weight"}
    groups = MODULE.denominators(ctxset, config(1, 1, None, 1, 0.5))
    assert set(groups) == {"token_ce/gt/weight", "token_ce/self_context/weight"}
    contexts = {
        t.context
        for terms in MODULE.compute(ctxset, config(1, 1, None, 1, 0.5)).atoms.values()
        for t in terms
    }
    assert contexts == {"gt", "self_context"}


def test_text_gate_rows_are_token_ce_rows_minus_eos():
    """C8 (first half), for any weights: text-gate rows ⊆ {w > 0} minus eos, with closure in."""
    for seed, context in [(0, "gt"), (1, "rollout"), (2, "rollout")]:
        ctxset = make_context_set(seed, channel="B" if context == "rollout" else "A")
        ctx = ctxset[context]
        for weights in (
            TokenWeights(),
            TokenWeights(0.0, 0.5, 0.0, 0.0, 0.0),
            TokenWeights(1.0, 0.0, 2.0, 0.3, 0.0),
        ):
            rows = text_gate_rows(ctx, weights)
            row_weight = token_row_weights(ctx, weights)
            assert torch.all(row_weight[rows] > 0)
            assert torch.all(ctx.token_type[rows] != TokenType.EOS)
            closure = torch.nonzero(ctx.span_kind == SpanKind.CLOSURE).reshape(-1)
            assert set(closure.tolist()) <= set(rows.tolist())
            expected = (row_weight > 0) & (ctx.token_type != TokenType.EOS)
            assert rows.tolist() == torch.nonzero(expected).reshape(-1).tolist()
    sc = make_context_set(0, channel="A", n_softctx_iter=2, trainer_variant="stage2_two_channel")
    assert text_gate_rows(sc[ContextName.SELF_CONTEXT], TokenWeights()).numel() == 0


# ------------------------------------------------------------------------------------- L9 validation


def strategy(variant: str, n_iter: int = 1) -> Strategy:
    return Strategy(
        trainer_variant=variant,
        packing="none",
        max_length=2048,
        n_softctx_iter=n_iter,
        b_ratio=0.5 if variant == "stage2_two_channel" else None,
    )


@pytest.mark.parametrize(
    ("variant", "n_iter", "kwargs", "key", "fragment"),
    [
        ("stage1", 1, {"rollout_fn_desc_weight": 0.5}, "rollout_fn_desc_weight", "Channel B"),
        (
            "stage1",
            1,
            {"rollout_matched_prefix_struct_weight": 0.0},
            "rollout_matched_prefix_struct_weight",
            "Channel B",
        ),
        ("stage1", 1, {"self_context_struct_weight": 0.5}, "self_context_struct_weight", "no self_context"),
        (
            "stage2_two_channel",
            1,
            {"self_context_struct_weight": 0.5},
            "self_context_struct_weight",
            "n_softctx_iter = 1",
        ),
        (
            "stage2_rollout_aligned",
            1,
            {"self_context_struct_weight": 0.1},
            "self_context_struct_weight",
            "no self_context",
        ),
        ("stage1", 1, {"struct_ce_weight": 0.0, "desc_ce_weight": 0.0}, "", "every token_ce weight"),
        (
            "stage2_rollout_aligned",
            1,
            {"struct_ce_weight": 0, "desc_ce_weight": 0, "rollout_matched_prefix_struct_weight": 0},
            "",
            "every token_ce weight",
        ),
    ],
)
def test_validate_rejects_inapplicable_and_inert_settings(variant, n_iter, kwargs, key, fragment):
    with pytest.raises(ConfigError) as info:
        MODULE.validate(TokenCEConfig(**kwargs), variant, strategy(variant, n_iter))
    assert info.value.path == key and fragment in info.value.message


@pytest.mark.parametrize(
    ("variant", "n_iter", "kwargs"),
    [
        ("stage1", 1, {"rollout_matched_prefix_struct_weight": 1.0, "desc_ce_weight": 0.0}),
        (
            "stage2_two_channel",
            2,
            {
                "self_context_struct_weight": 0.5,
                "struct_ce_weight": 0.0,
                "desc_ce_weight": 0.0,
                "rollout_matched_prefix_struct_weight": 0.0,
            },
        ),
        ("stage2_rollout_aligned", 1, {"desc_ce_weight": 0.0, "rollout_fn_desc_weight": 0.5}),
    ],
)
def test_validate_accepts_applicable_settings(variant, n_iter, kwargs):
    MODULE.validate(TokenCEConfig(**kwargs), variant, strategy(variant, n_iter))


def test_config_is_strict_and_bounded():
    with pytest.raises(ValueError, match="struct_ce_weight"):
        TokenCEConfig(struct_ce_weight=-0.1)
    with pytest.raises(ValueError, match="desc_ce_weight"):
        TokenCEConfig(desc_ce_weight=True)
    with pytest.raises(ValueError, match="rollout_fn_desc_weight"):
        TokenCEConfig(rollout_fn_desc_weight=float("inf"))
    with pytest.raises(TypeError):
        TokenCEConfig(1.0)  # keyword-only
    assert TokenCEConfig(struct_ce_weight=2).struct_ce_weight == 2.0


def test_desc_atom_weight_follows_the_desc_weights():
    assert TokenCE().atom_weights(TokenCEConfig().resolved()) == {"struct_ce": 1.0, "desc_ce": 1.0}
    no_desc = TokenCEConfig(desc_ce_weight=0.0).resolved()
    assert TokenCE().atom_weights(no_desc) == {"struct_ce": 1.0, "desc_ce": 0.0}
    fn_only = TokenCEConfig(desc_ce_weight=0.0, rollout_fn_desc_weight=0.5).resolved()
    assert TokenCE().atom_weights(fn_only)["desc_ce"] == 1.0
