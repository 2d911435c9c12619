"""TeacherForcingContext views, validation and routing (spec 02 §2.2–2.3, §2.6–2.7; D19, D45)."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import coordexp.core.context as context_module
from coordexp.core.context import BBoxGroups, ContextSet, TeacherForcingContext
from coordexp.core.errors import PipelineError
from coordexp.core.geometry import decode_expectation, decode_st
from coordexp.core.tokens import Channel, ContextName, SpanKind, Subset, TokenType
from coordexp.testing.factory import make_context, make_context_set, make_samples, pack_samples


@pytest.fixture
def ctx() -> TeacherForcingContext:
    return make_context(7, context="rollout", n_samples=3, max_objects=4)


def _count_lse_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = context_module._logsumexp_rows

    def counting(logits, scale):
        calls.append(1)
        return original(logits, scale)

    monkeypatch.setattr(context_module, "_logsumexp_rows", counting)
    return calls


def test_views_are_memoized_and_full_lse_is_computed_once(ctx, monkeypatch):
    calls = _count_lse_calls(monkeypatch)
    assert ctx.full_lse is ctx.full_lse
    assert ctx.lse(1.0) is ctx.full_lse
    assert len(calls) == 1
    for name in (
        "coord_rows",
        "coord_row_index",
        "coord_targets",
        "coord_logits",
        "coord_log_probs",
        "coord_probs",
        "decoded_boxes",
        "target_boxes",
        "group_coord_index",
        "coord_row_weight",
    ):
        assert getattr(ctx, name) is getattr(ctx, name), name
    assert ctx.decoded_coords() is ctx.decoded_coords("exp")
    assert ctx.mask(type=TokenType.STRUCT) is ctx.mask(type=[TokenType.STRUCT])
    assert ctx.mask(type=TokenType.DESC, span=SpanKind.FN) is ctx.mask(
        span={SpanKind.FN}, type=(TokenType.DESC,)
    )
    # with_logits builds a fresh context: nothing is shared with the old cache.
    other = ctx.with_logits(ctx.logits)
    assert other.full_lse is not ctx.full_lse and len(calls) == 2


def test_no_grad_views_never_leak_into_grad_views(monkeypatch):
    ctx = make_context(3, context="gt")
    calls = _count_lse_calls(monkeypatch)
    with torch.no_grad():
        early = ctx.full_lse
        early_coord = ctx.coord_logits
    assert not early.requires_grad and not early_coord.requires_grad
    assert ctx.full_lse.requires_grad and ctx.coord_logits.requires_grad
    assert len(calls) == 2
    with torch.no_grad():
        # Grad version exists now: the no-grad view is reused (no recomputation).
        assert ctx.full_lse is early
    fresh = make_context(3, context="gt")
    tracked = fresh.coord_log_probs
    with torch.no_grad():
        detached = fresh.coord_log_probs
        assert fresh.coord_log_probs is detached
    assert fresh.coord_log_probs is tracked
    assert not detached.requires_grad and torch.equal(detached, tracked.detach())


def test_metadata_views_work_on_a_meta_context_and_logit_views_raise():
    meta = make_context(1, context="rollout", with_logits=False)
    assert meta.is_meta and meta.logits is None
    assert meta.coord_rows.dtype == torch.bool and meta.coord_rows.shape == (meta.n_rows,)
    assert meta.mask(type=TokenType.EOS).sum() == len(meta.segments)
    assert meta.coord_row_weight.shape == (int(meta.coord_rows.sum()),)
    for view in ("full_lse", "coord_logits", "coord_log_probs", "decoded_boxes"):
        with pytest.raises(PipelineError, match="metadata-only.*with_logits"):
            getattr(meta, view)
    full = make_context(1, context="rollout")
    assert torch.equal(meta.target_ids, full.target_ids) and not full.is_meta
    assert full.without_logits().is_meta


def test_masks_match_the_row_metadata(ctx):
    text = ctx.mask(type=[TokenType.STRUCT, TokenType.DESC])
    assert torch.equal(text, (ctx.token_type == TokenType.STRUCT) | (ctx.token_type == TokenType.DESC))
    fn_desc = ctx.mask(type=TokenType.DESC, span=SpanKind.FN)
    assert torch.equal(fn_desc, (ctx.token_type == TokenType.DESC) & (ctx.span_kind == SpanKind.FN))
    assert bool(ctx.mask().all())
    assert torch.equal(ctx.coord_rows, (ctx.token_type == TokenType.COORD) & (ctx.coord_target >= 0))
    with pytest.raises(PipelineError, match="TokenType"):
        ctx.mask(type="coord")


def test_full_lse_matches_logsumexp_values_and_gradients():
    ctx = make_context(11, context="gt", dtype=torch.float64)
    reference = torch.logsumexp(ctx.logits, dim=-1)
    assert torch.allclose(ctx.full_lse, reference, atol=1e-12)
    weights = torch.randn(ctx.n_rows, dtype=torch.float64)
    (grad,) = torch.autograd.grad((ctx.full_lse * weights).sum(), ctx.logits)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), ctx.logits)
    assert torch.allclose(grad, grad_ref, atol=1e-12)
    tau = 0.7
    scaled = torch.logsumexp(ctx.logits / tau, dim=-1)
    assert torch.allclose(ctx.lse(tau), scaled, atol=1e-12)
    (grad,) = torch.autograd.grad((ctx.lse(tau) * weights).sum(), ctx.logits)
    (grad_ref,) = torch.autograd.grad((scaled * weights).sum(), ctx.logits)
    assert torch.allclose(grad, grad_ref, atol=1e-12)
    with pytest.raises(PipelineError, match="temperature"):
        ctx.lse(0.0)


@given(st.integers(0, 1000), st.integers(1, 40))
@settings(max_examples=15, deadline=None)
def test_blocked_lse_equals_one_block(seed, block_rows):
    ctx = make_context(seed, context="gt", n_samples=1)
    reference = torch.logsumexp(ctx.logits.double(), dim=-1)
    original = context_module._LSE_BLOCK_ELEMENTS
    context_module._LSE_BLOCK_ELEMENTS = block_rows * ctx.logits.shape[1]
    try:
        lse = ctx.lse(1.3)
        (grad,) = torch.autograd.grad(lse.sum(), ctx.logits)
    finally:
        context_module._LSE_BLOCK_ELEMENTS = original
    (grad_ref,) = torch.autograd.grad(torch.logsumexp(ctx.logits / 1.3, dim=-1).sum(), ctx.logits)
    assert torch.allclose(lse, torch.logsumexp(ctx.logits.double() / 1.3, dim=-1).float(), atol=1e-5)
    assert torch.allclose(grad, grad_ref, atol=1e-6)
    assert torch.allclose(ctx.full_lse.double(), reference, atol=1e-5)


def test_bf16_logits_accumulate_in_float32():
    ctx = make_context(2, context="gt", dtype=torch.bfloat16)
    assert ctx.full_lse.dtype == torch.float32 and ctx.coord_logits.dtype == torch.float32
    reference = torch.logsumexp(ctx.logits.double(), dim=-1)
    assert torch.allclose(ctx.full_lse.double(), reference, atol=1e-4)
    ctx.full_lse.sum().backward()
    assert ctx.logits.grad.dtype == torch.bfloat16


def test_coord_views_match_direct_indexing(ctx):
    rows = torch.nonzero(ctx.coord_rows)[:, 0]
    expected = ctx.logits[rows][:, ctx.coord_ids]
    assert torch.equal(ctx.coord_logits, expected)
    assert torch.allclose(ctx.coord_log_probs, torch.log_softmax(expected, dim=-1))
    assert torch.equal(ctx.coord_targets, ctx.coord_target[rows])
    position = ctx.group_coord_index
    assert torch.equal(rows[position], ctx.bbox_groups.rows)
    decoded = decode_expectation(expected)
    assert torch.allclose(ctx.decoded_boxes, decoded[position])
    assert torch.allclose(ctx.decoded_coords("st"), decode_st(expected))
    assert torch.equal(ctx.target_boxes, ctx.bbox_groups.target.float() / 999)
    # Gradients of the coord slice reach exactly the coord columns of the coord rows.
    (grad,) = torch.autograd.grad(ctx.coord_log_probs[:, 0].sum(), ctx.logits)
    touched = torch.zeros_like(grad, dtype=torch.bool)
    touched[rows[:, None], ctx.coord_ids[None, :]] = True
    assert torch.count_nonzero(grad[~touched]) == 0


def test_st_contexts_decode_boxes_with_argmax():
    ctx = make_context(4, context="rollout", coord_decode_mode="st")
    expected = ctx.coord_logits.argmax(dim=-1).float() / 999
    assert torch.equal(ctx.decoded_boxes.detach(), expected[ctx.group_coord_index])


def test_coord_logits_are_clamped_and_nan_raises(ctx):
    logits = ctx.logits.detach().clone()
    row = int(torch.nonzero(ctx.coord_rows)[0, 0])
    logits[row, ctx.coord_ids[3]] = 1e6
    logits[row, ctx.coord_ids[4]] = -float("inf")
    logits.requires_grad_(True)
    clamped = ctx.with_logits(logits)
    assert clamped.coord_logits[0, 3].item() == 1e4 and clamped.coord_logits[0, 4].item() == -1e4
    (grad,) = torch.autograd.grad(clamped.coord_logits[0].sum(), logits)
    assert grad[row, ctx.coord_ids[3]] == 0 and grad[row, ctx.coord_ids[5]] == 1
    poisoned = logits.detach().clone()
    poisoned[row, ctx.coord_ids[7]] = float("nan")
    with pytest.raises(PipelineError, match=f"NaN coord logit in row {row}"):
        _ = ctx.with_logits(poisoned).coord_logits
    text_row = int(torch.nonzero(~ctx.coord_rows)[0, 0])
    poisoned = logits.detach().clone()
    poisoned[text_row, 0] = float("nan")
    with pytest.raises(PipelineError, match=f"NaN logit in row {text_row}"):
        _ = ctx.with_logits(poisoned).full_lse


def test_with_logits_validates_shape_vocab_and_dtype(ctx):
    n, vocab = ctx.logits.shape
    good = ctx.with_logits(torch.zeros(n, vocab))
    assert good.logits.shape == (n, vocab) and good.coord_rows is not ctx.coord_rows
    for bad, message in [
        (torch.zeros(n + 1, vocab), r"\[N=\d+, V\]"),
        (torch.zeros(n), r"\[N=\d+, V\]"),
        (torch.zeros(n, int(ctx.coord_ids.max())), "largest coord id"),
        (torch.zeros(n, vocab, dtype=torch.long), "floating point"),
    ]:
        with pytest.raises(PipelineError, match=message):
            ctx.with_logits(bad)
    with pytest.raises(PipelineError, match="torch.Tensor"):
        ctx.with_logits([[0.0]])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ctx.logits = None


def test_coord_row_weight_follows_groups_and_row_mult():
    samples = make_samples(9, context="rollout", n_samples=3, max_objects=3)
    ctx = pack_samples(samples, row_mult=[1.0, 0.0, 1.0], trainer_variant="stage2_two_channel")
    weight = torch.ones(ctx.n_rows) * ctx.row_mult
    weight[ctx.bbox_groups.rows] = ctx.bbox_groups.weight[:, None].expand(-1, 4)
    assert torch.equal(ctx.coord_row_weight, weight[ctx.coord_rows])
    padded = ctx.segment[ctx.coord_rows] == 1
    assert torch.count_nonzero(ctx.coord_row_weight[padded]) == 0


def _replace(ctx, **changes):
    return attrs.evolve(ctx, **changes)


def test_context_validation_rejects_contract_violations(ctx):
    fp = ctx.span_kind.clone()
    fp[0] = int(SpanKind.PREFIX_FP)
    cases = [
        ({"span_kind": fp}, "prefix_fp rows are never candidate rows"),
        ({"channel": Channel.A}, "belongs to channel B"),
        ({"trainer_variant": "stage3"}, "trainer_variant must be one of"),
        ({"trainer_variant": "stage1"}, "has no channel B"),
        ({"coord_decode_mode": "argmax"}, "coord_decode_mode"),
        ({"row_mult": ctx.row_mult[:-1]}, "row_mult has"),
        ({"token_type": ctx.token_type.float()}, "torch.long"),
        ({"segments": ctx.segments[:1]}, "segment must index segments"),
        ({"coord_ids": ctx.coord_ids[:999]}, "1000 ids"),
        ({"coord_ids": torch.zeros(1000, dtype=torch.long)}, "distinct"),
    ]
    retyped = ctx.token_type.clone()
    coord_row = int(torch.nonzero(ctx.coord_rows)[0, 0])
    retyped[coord_row] = int(TokenType.STRUCT)
    cases.append(({"token_type": retyped}, "coord rows are exactly the rows whose target id is a coord id"))
    eos = ctx.span_kind.clone()
    eos[torch.nonzero(ctx.token_type == TokenType.EOS)[0, 0]] = int(SpanKind.CLOSURE)
    cases.append(({"span_kind": eos}, "EOS"))
    for changes, message in cases:
        with pytest.raises(PipelineError, match=message):
            _replace(ctx, **changes)


def test_group_validation_rejects_cross_segment_and_non_coord_rows(ctx):
    coord = torch.nonzero(ctx.coord_rows)[:, 0]
    first_seg, last_seg = coord[ctx.segment[coord] == 0], coord[ctx.segment[coord] == 2]
    assert first_seg.numel() >= 2 and last_seg.numel() >= 2, (
        "fixture must have coord rows in segments 0 and 2"
    )
    crossing = BBoxGroups(
        rows=torch.stack([first_seg[0], first_seg[1], last_seg[0], last_seg[1]])[None],
        target=torch.zeros(1, 4, dtype=torch.long),
        weight=torch.ones(1),
        subset=torch.tensor([int(Subset.MATCHED)]),
    )
    with pytest.raises(PipelineError, match="spans segments"):
        _replace(ctx, bbox_groups=crossing)
    text_row = torch.nonzero(~ctx.coord_rows)[0, 0]
    on_text = attrs.evolve(
        crossing, rows=torch.stack([text_row, first_seg[0], first_seg[1], last_seg[0]])[None]
    )
    with pytest.raises(PipelineError, match="not a coord row"):
        _replace(ctx, bbox_groups=on_text)
    with pytest.raises(PipelineError, match="target bins"):
        attrs.evolve(crossing, target=torch.full((1, 4), 1000))
    with pytest.raises(PipelineError, match=r"\[G, 4\]"):
        attrs.evolve(crossing, rows=torch.zeros(1, 3, dtype=torch.long))


def test_gt_context_rules():
    gt = make_context(0, context="gt")
    with pytest.raises(PipelineError, match="stage1 decodes coordinates with 'exp'"):
        _replace(gt, coord_decode_mode="st")
    with pytest.raises(PipelineError, match="self_context exists only in stage2_two_channel"):
        _replace(gt, name=ContextName.SELF_CONTEXT)
    with pytest.raises(PipelineError, match="span_kind must be one of"):
        _replace(gt, span_kind=torch.where(gt.span_kind == SpanKind.BODY, int(SpanKind.FN), gt.span_kind))


@pytest.mark.parametrize(
    ("channel", "n_iter", "text", "coord"),
    [
        ("A", 1, ContextName.GT, ContextName.GT),
        ("A", 2, ContextName.GT, ContextName.SELF_CONTEXT),
        ("A", 4, ContextName.GT, ContextName.SELF_CONTEXT),
        ("B", 1, ContextName.ROLLOUT, ContextName.ROLLOUT),
    ],
)
def test_context_set_routing_follows_spec_02_2_2(channel, n_iter, text, coord):
    ctxset = make_context_set(5, channel=channel, n_softctx_iter=n_iter)
    assert ctxset.channel is Channel(channel)
    assert ctxset.text_context.name is text and ctxset.coord_context.name is coord
    assert ctxset[text] is ctxset.text_context and ctxset.get("rollout" if channel == "A" else "gt") is None
    meta = ContextSet.for_channel(
        channel, {name: c.without_logits() for name, c in ctxset.contexts.items()}, n_softctx_iter=n_iter
    )
    assert meta.is_meta and not ctxset.is_meta
    full = meta.with_logits({name: c.logits for name, c in ctxset.contexts.items()})
    assert not full.is_meta and full.coord_context.name is coord
    assert full.coord_context.logits is ctxset.coord_context.logits


def test_context_set_rejects_wrong_contexts():
    a2 = make_context_set(5, channel="A", n_softctx_iter=2)
    with pytest.raises(PipelineError, match="needs contexts \\['gt'\\]"):
        ContextSet.for_channel("A", a2.contexts, n_softctx_iter=1)
    with pytest.raises(PipelineError, match="needs contexts \\['gt', 'self_context'\\]"):
        ContextSet.for_channel("A", {ContextName.GT: a2["gt"]}, n_softctx_iter=2)
    with pytest.raises(PipelineError, match="needs contexts \\['rollout'\\]"):
        ContextSet.for_channel("B", a2.contexts)
    with pytest.raises(PipelineError, match="holds a 'gt' context"):
        ContextSet.for_channel("A", {"self_context": a2["gt"], "gt": a2["gt"]}, n_softctx_iter=2)
    with pytest.raises(PipelineError, match="n_softctx_iter"):
        ContextSet.for_channel("A", {"gt": a2["gt"]}, n_softctx_iter=0)
    with pytest.raises(PipelineError, match="expected logits for"):
        a2.with_logits({"gt": a2["gt"].logits})
    with pytest.raises(PipelineError, match="no 'rollout' context"):
        a2["rollout"]
    rollout = make_context(1, context="rollout")
    with pytest.raises(PipelineError, match="channel"):
        ContextSet(channel="A", contexts={"rollout": rollout}, text_context=rollout, coord_context=rollout)
