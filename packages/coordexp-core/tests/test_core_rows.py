"""Sample rows and packing: the causal shift and segment isolation (spec 02 §2.3, 06 §6.7; C3, H2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.context import SegmentInfo
from coordexp.core.errors import PipelineError
from coordexp.core.rows import SampleRows, pack_rows
from coordexp.core.tokens import ContextName, SpanKind, Subset, TokenType
from coordexp.testing.factory import SyntheticVocab, make_samples, pack_samples, random_packing, repack

VOCAB = SyntheticVocab()
COORD = int(TokenType.COORD)
STRUCT = int(TokenType.STRUCT)


def _simple_rows(**overrides):
    """A 10-token sample: 3 prompt tokens, then 4 coord targets, a struct target and eos."""
    args = dict(
        segment=SegmentInfo(sample_id="s0", length=10, prompt_len=3),
        positions=np.array([3, 4, 5, 6, 7, 8, 9]),
        target_ids=np.array([7, 100, 200, 300, 400, 8, 1199]),
        token_type=np.array([STRUCT, COORD, COORD, COORD, COORD, STRUCT, int(TokenType.EOS)]),
        span_kind=np.array([1, 1, 1, 1, 1, int(SpanKind.CLOSURE), int(SpanKind.EOS)]),
        coord_target=np.array([-1, 0, 100, 200, 300, -1, -1]),
        slot=np.array([-1, 0, 1, 2, 3, -1, -1]),
        object_index=np.array([0, 0, 0, 0, 0, -1, -1]),
        group_rows=np.array([[1, 2, 3, 4]]),
        group_target=np.array([[0, 100, 200, 300]]),
    )
    args.update(overrides)
    return SampleRows(**args)


def _pack(samples, offsets, **kwargs):
    args = dict(
        context="gt",
        channel="A",
        trainer_variant="stage1",
        coord_ids=VOCAB.coord_ids,
        coord_decode_mode="exp",
    )
    args.update(kwargs)
    return pack_rows(samples, offsets, **args)


def test_defaults_and_read_only_arrays():
    rows = _simple_rows(object_index=None, slot=None)
    assert rows.object_index.tolist() == [-1] * 7 and rows.slot.tolist() == [-1] * 7
    assert rows.group_weight.tolist() == [1.0] and rows.group_subset.tolist() == [int(Subset.NONE)]
    assert rows.length == 10 and rows.prompt_len == 3 and rows.n_rows == 7 and rows.n_groups == 1
    with pytest.raises(ValueError):
        rows.positions[0] = 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"positions": np.array([3, 4, 4, 6, 7, 8, 9])}, "strictly increase"),
        ({"positions": np.array([2, 4, 5, 6, 7, 8, 9])}, "max\\(1, prompt_len\\)=3"),
        ({"positions": np.array([3, 4, 5, 6, 7, 8, 10])}, "length=10"),
        (
            {
                "segment": SegmentInfo(sample_id=1, length=10, prompt_len=0),
                "positions": np.array([0, 4, 5, 6, 7, 8, 9]),
            },
            "max\\(1, prompt_len\\)=1",
        ),
        ({"span_kind": np.array([0, 1, 1, 1, 1, 2, 3])}, "other than PROMPT"),
        (
            {"coord_target": np.array([5, 0, 100, 200, 300, -1, -1])},
            "only coord rows may have a coord_target",
        ),
        ({"coord_target": np.array([-1, 0, 100, 200, 1000, -1, -1])}, "0..999"),
        ({"slot": np.array([0, 0, 1, 2, 3, -1, -1])}, "slot"),
        ({"span_kind": np.array([1, 1, 1, 1, 1, 2, 2])}, "EOS"),
        ({"target_ids": np.array([7, 100, 200])}, "target_ids has 3 rows"),
        ({"group_rows": np.array([[0, 2, 3, 4]])}, "coord rows with a coord_target"),
        ({"group_rows": np.array([[1, 2, 3, 3]])}, "more than one bbox group"),
        ({"group_rows": np.array([[1, 2, 3, 9]])}, "index the sample's rows"),
        ({"group_target": np.array([[0, 100, 200, 1000]])}, "target bins"),
        ({"group_weight": np.array([-1.0])}, "weight"),
        ({"group_subset": np.array([7])}, "Subset"),
        ({"positions": np.array([3.0, 4, 5, 6, 7, 8, 9])}, "expected integers"),
    ],
)
def test_sample_rows_validation(overrides, message):
    with pytest.raises(PipelineError, match=message):
        _simple_rows(**overrides)


def test_segment_info_validation():
    info = SegmentInfo(sample_id=3, length=5, prompt_len=2, counters={"fp": 1}, lengths={"prefix_len": 2})
    assert info.counters["fp"] == 1
    with pytest.raises(TypeError):
        info.counters["fp"] = 2  # read-only mapping
    for kwargs, message in [
        ({"length": 0}, "length"),
        ({"prompt_len": 6}, "prompt_len"),
        ({"counters": {"x": float("nan")}}, "finite"),
        ({"lengths": {"x": -1}}, "lengths"),
        ({"sample_id": 1.5}, "sample_id"),
    ]:
        args = dict(sample_id=3, length=5, prompt_len=2)
        args.update(kwargs)
        with pytest.raises(PipelineError, match=message):
            SegmentInfo(**args)


def test_pack_rows_applies_the_causal_shift_once_and_remaps_groups():
    a = _simple_rows()
    b = _simple_rows(segment=SegmentInfo(sample_id="s1", length=10, prompt_len=3))
    ctx, predict = _pack([a, b], [0, 12])
    assert ctx.is_meta and ctx.n_rows == 14
    assert predict.tolist() == [2, 3, 4, 5, 6, 7, 8, 14, 15, 16, 17, 18, 19, 20]
    assert ctx.segment.tolist() == [0] * 7 + [1] * 7
    assert ctx.bbox_groups.rows.tolist() == [[1, 2, 3, 4], [8, 9, 10, 11]]
    assert ctx.segments == (a.segment, b.segment)
    assert ctx.row_mult.dtype == torch.float32 and ctx.row_mult.tolist() == [1.0] * 14


def test_pack_rows_drops_prefix_fp_rows_and_keeps_groups_on_their_rows():
    span = np.array([4, 5, 5, 5, 5, int(SpanKind.CLOSURE), int(SpanKind.EOS)])
    fp_first = _simple_rows(span_kind=np.array([6, 5, 5, 5, 5, 2, 3]))
    ctx, predict = _pack(
        [fp_first, _simple_rows(span_kind=span)],
        [10, 0],
        context="rollout",
        channel="B",
        trainer_variant="stage2_rollout_aligned",
    )
    assert int(SpanKind.PREFIX_FP) not in ctx.span_kind.tolist()
    assert predict.tolist() == [13, 14, 15, 16, 17, 18, 2, 3, 4, 5, 6, 7, 8]
    assert ctx.bbox_groups.rows.tolist() == [[0, 1, 2, 3], [7, 8, 9, 10]]
    assert ctx.target_ids[ctx.bbox_groups.rows].tolist() == [[100, 200, 300, 400]] * 2


def test_pack_rows_rejects_groups_on_excluded_rows_and_overlaps():
    fp_coords = _simple_rows(span_kind=np.array([4, 6, 6, 6, 6, 2, 3]))
    with pytest.raises(PipelineError, match="group 0 of sample 's0'.*excluded span kind"):
        _pack([fp_coords], [0], context="rollout", channel="B", trainer_variant="stage2_two_channel")
    with pytest.raises(PipelineError, match="overlaps sample"):
        _pack([_simple_rows(), _simple_rows()], [0, 9])
    with pytest.raises(PipelineError, match="2 samples but 1 offsets"):
        _pack([_simple_rows(), _simple_rows()], [0])
    with pytest.raises(PipelineError, match="row_mult"):
        _pack([_simple_rows()], [0], row_mult=[-1.0])
    with pytest.raises(PipelineError, match="at least one sample"):
        _pack([], [])


def test_padding_row_mult_zeroes_rows_and_group_weights():
    ctx, _ = _pack([_simple_rows(), _simple_rows()], [0, 10], row_mult=[1.0, 0.0])
    assert ctx.row_mult.tolist() == [1.0] * 7 + [0.0] * 7
    assert ctx.bbox_groups.weight.tolist() == [1.0, 0.0]
    assert ctx.coord_row_weight.tolist() == [1.0] * 4 + [0.0] * 4


@given(
    st.integers(0, 10_000),
    st.sampled_from([ContextName.GT, ContextName.ROLLOUT]),
    st.integers(1, 5),
    st.integers(0, 3),
)
@settings(max_examples=40, deadline=None)
def test_c3_rows_never_leave_their_segment(seed, context, n_samples, gap):
    samples = make_samples(seed, context=context, n_samples=n_samples, max_prompt_len=4, requires_grad=False)
    lengths = np.array([s.rows.length for s in samples])
    offsets = np.concatenate(([0], np.cumsum(lengths + gap)[:-1]))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_samples)  # any segment order is allowed
    packed_ids = np.full(int(offsets[-1] + lengths[-1]), -1)
    for s, off in zip(samples, offsets):
        packed_ids[off : off + s.rows.length] = s.token_ids
    ctx, predict = pack_rows(
        [samples[i].rows for i in order],
        [int(offsets[i]) for i in order],
        context=context,
        channel="B" if context is ContextName.ROLLOUT else "A",
        trainer_variant="stage2_two_channel",
        coord_ids=VOCAB.coord_ids,
        coord_decode_mode="exp",
    )
    predict = predict.numpy()
    seg = ctx.segment.numpy()
    seg_start = offsets[order][seg]
    seg_len = lengths[order][seg]
    prompt = np.array([samples[i].rows.prompt_len for i in order])[seg]
    target_pos = predict + 1
    # No row lies in the prompt, none sits at a segment start, and every row stays in its segment.
    assert np.all(target_pos >= seg_start + np.maximum(1, prompt))
    assert np.all(predict >= seg_start) and np.all(target_pos < seg_start + seg_len)
    # The shifted row predicts exactly its target token.
    assert np.array_equal(packed_ids[target_pos], ctx.target_ids.numpy())
    assert int(SpanKind.PREFIX_FP) not in ctx.span_kind.tolist()
    assert int(SpanKind.PROMPT) not in ctx.span_kind.tolist()
    groups = ctx.bbox_groups.rows
    if groups.numel():
        group_seg = ctx.segment[groups]
        assert torch.equal(group_seg, group_seg[:, :1].expand(-1, 4))
        assert bool(ctx.coord_rows[groups].all())
        assert torch.equal(ctx.slot[groups], torch.arange(4).expand(groups.shape[0], -1))


@given(st.integers(0, 10_000), st.sampled_from(["gt", "rollout"]), st.integers(0, 10_000))
@settings(max_examples=12, deadline=None)
def test_h2_pack_totals_equal_the_sum_over_segments_alone(seed, context, split_seed):
    """Row sets, per-row terms and gradients do not depend on how samples are packed."""
    samples = make_samples(seed, context=context, n_samples=4, max_prompt_len=3, requires_grad=True)
    variant = {"trainer_variant": "stage2_two_channel"}

    def totals(contexts):
        ce = sum(
            ((c.full_lse - c.logits.gather(1, c.target_ids[:, None])[:, 0]) * c.row_mult).sum()
            for c in contexts
        )
        boxes = sum(c.decoded_boxes.sum() for c in contexts)
        counts = torch.stack(
            [torch.bincount(c.token_type * 8 + c.span_kind, minlength=32) for c in contexts]
        ).sum(0)
        return ce, boxes, counts

    alone = totals(repack(samples, [[i] for i in range(4)], **variant))
    packed = totals(repack(samples, random_packing(4, split_seed), **variant))
    assert torch.equal(alone[2], packed[2])
    for a, b in zip(alone[:2], packed[:2]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)
    leaves = [s.seq_logits for s in samples]
    grads_alone = torch.autograd.grad(alone[0] + alone[1], leaves)
    grads_packed = torch.autograd.grad(packed[0] + packed[1], leaves)
    for a, b in zip(grads_alone, grads_packed):
        assert torch.allclose(a, b, atol=1e-6)


def test_pack_samples_with_gaps_matches_back_to_back_packing():
    samples = make_samples(5, context="rollout", n_samples=3)
    tight = pack_samples(samples)
    spaced = pack_samples(samples, gap=3)
    assert torch.equal(tight.logits, spaced.logits)
    assert torch.equal(tight.bbox_groups.rows, spaced.bbox_groups.rows)
