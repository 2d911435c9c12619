"""H3 (and the isolation rules of spec 06 §6.7) on real Stage-1 packs of the session data set:
text positions restart exactly at the `cu_seq_lens` starts, image-pad counts match the grids,
the attention is block-diagonal causal, every logit row predicts the next token of its own
segment, and a pack's logits equal those of its segments run alone. Validation padding packs
(rank symmetry) carry zero weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coordexp.core.errors import DataContractError
from coordexp.core.pipeline.runner import PipelineRunner
from coordexp.train.config import load_config
from coordexp.train.data.jsonl import load_jsonl
from coordexp.train.data.prompts import resolve_prompt
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.executor.selective import SelectiveLogitsLM
from coordexp.train.models import load_model_and_processor
from coordexp.train.stages.gt_packs import GTEncoder
from coordexp.train.stages.stage1 import Stage1

CAP = 1024
DEMO_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "demo" / "stage1.yaml"


@pytest.fixture(scope="module")
def make_stage(stage1_assets):
    """`make_stage(**overrides) -> (Stage1, model)` over the session data, packing by default."""
    model, processor = load_model_and_processor(stage1_assets.model_dir, min_pixels=1024, max_pixels=65536)
    model.eval()
    info = TokenizerInfo.build(processor.tokenizer, model.get_input_embeddings().num_embeddings)
    prompt = resolve_prompt("default", "sorted", "desc_first")

    def encoder(path):
        data = load_jsonl(path, max_pixels=65536, trainer_variant="stage1", field_order="desc_first")
        return GTEncoder(
            data, info=info, processor=processor, prompt=prompt, field_order="desc_first", seed=0
        )

    train, val = encoder(stage1_assets.train_jsonl), encoder(stage1_assets.val_jsonl)

    def make(**overrides):
        settings = dict(
            val_encoder=val, info=info, rope_model=model, max_length=CAP, max_pixels=65536, packing=True,
            per_device_batch=1, packs_per_step=2, world_size=1, drop_last=False, seed=0, cache_dir=None,
            device=torch.device("cpu"),
        )
        return Stage1(train, **{**settings, **overrides}), model

    return make


@pytest.fixture(scope="module")
def stage(make_stage):
    return make_stage()


def _segments(mb):
    ctx = mb.meta.contexts["gt"]
    lengths = torch.tensor([s.length for s in ctx.segments])
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0))
    return ctx, cu, [s.prompt_len for s in ctx.segments]


def _multi_segment_packs(stage_):
    steps = range(stage_.schedule.steps_per_epoch)
    mbs = [mb for step in steps for mb in stage_.prepare_step(step, 0).micro_batches]
    multi = [mb for mb in mbs if mb.n_segments >= 2]
    assert multi, "the session data should pack at least two samples together"
    return multi


def test_text_positions_restart_exactly_at_segment_starts(stage):
    stage_, _ = stage
    for mb in _multi_segment_packs(stage_):
        ctx, cu, _ = _segments(mb)
        position_ids = mb.model_inputs["position_ids"]
        assert tuple(position_ids.shape) == (4, 1, mb.n_tokens) and int(cu[-1]) == mb.n_tokens
        text = position_ids[0, 0]
        assert torch.equal(torch.nonzero(text == 0).flatten(), cu[:-1])
        # Inside a segment the text position counts up by one; mRoPE restarts at 0 per segment too.
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            assert torch.equal(text[a:b], torch.arange(b - a))
            assert torch.equal(position_ids[1:, 0, a], torch.zeros(3, dtype=position_ids.dtype))


def test_image_pad_counts_match_the_grids_in_segment_order(stage):
    stage_, model = stage
    pad_id = model.config.image_token_id
    merge = model.config.vision_config.spatial_merge_size
    for mb in _multi_segment_packs(stage_):
        _, cu, _ = _segments(mb)
        ids = mb.model_inputs["input_ids"][0]
        grids = mb.model_inputs["image_grid_thw"]
        assert grids.shape == (mb.n_segments, 3)  # one image per record
        for (a, b), grid in zip(zip(cu[:-1].tolist(), cu[1:].tolist()), grids, strict=True):
            assert int((ids[a:b] == pad_id).sum()) == int(grid.prod()) // (merge * merge)
        assert mb.model_inputs["pixel_values"].shape[0] == int(grids.prod(-1).sum())


def test_attention_is_block_diagonal_causal(stage):
    stage_, _ = stage
    mb = _multi_segment_packs(stage_)[0]
    _, cu, _ = _segments(mb)
    mask = mb.model_inputs["attention_mask"]
    assert mask.dtype == torch.bool and tuple(mask.shape) == (1, 1, mb.n_tokens, mb.n_tokens)
    segment = torch.repeat_interleave(torch.arange(len(cu) - 1), cu.diff())
    i, j = torch.meshgrid(torch.arange(mb.n_tokens), torch.arange(mb.n_tokens), indexing="ij")
    assert torch.equal(mask[0, 0], (segment[i] == segment[j]) & (j <= i))
    assert mb.model_inputs["use_cache"] is False


def test_every_row_predicts_the_next_token_of_its_own_segment(stage):
    stage_, _ = stage
    for mb in _multi_segment_packs(stage_):
        ctx, cu, prompt_lens = _segments(mb)
        ids = mb.model_inputs["input_ids"][0]
        target = mb.predict_positions + 1
        assert torch.equal(ids[target], ctx.target_ids)
        seg = torch.bucketize(target, cu[1:], right=True)
        assert torch.equal(seg, ctx.segment)
        starts, ends = cu[:-1][seg], cu[1:][seg]
        first_target = starts + torch.tensor(prompt_lens).clamp(min=1)[seg]
        assert bool(((first_target <= target) & (target < ends)).all())


def test_pack_logits_equal_segments_run_alone(stage):
    stage_, model = stage
    lm = SelectiveLogitsLM(model)
    mb = _multi_segment_packs(stage_)[0]
    _, cu, _ = _segments(mb)
    with torch.no_grad():
        packed = lm(mb.predict_positions, **mb.model_inputs)
        alone = []
        for index in mb.meta.contexts["gt"].segments:
            single = stage_._micro_batch(stage_.encoder, [index.sample_id], 0, cap=CAP)
            alone.append(lm(single.predict_positions, **single.model_inputs))
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-4)


def test_validation_shares_are_equal_and_padding_weighs_nothing(stage):
    stage_, _ = stage
    everything = stage_.eval_micro_batches(0, 1)
    world = len(everything) + 1  # one rank more than there are validation packs
    shares = [stage_.eval_micro_batches(rank, world) for rank in range(world)]
    assert [len(s) for s in shares] == [1] * world
    assert [s[0].n_segments for s in shares[:-1]] == [mb.n_segments for mb in everything]
    runner = PipelineRunner(load_config(str(DEMO_CONFIG), []).pipeline)
    real = runner.denominators([shares[0][0].meta])
    assert real and all(v > 0 for v in real.values())
    for padding in shares[-1]:
        ctx = padding.meta.contexts["gt"]
        assert padding.n_segments == 1 and bool((ctx.row_mult == 0).all())
        assert float(ctx.bbox_groups.weight.abs().sum()) == 0.0
        # Same denominator groups as a real pack (rank-symmetric all-reduce), all zero.
        assert runner.denominators([padding.meta]) == dict.fromkeys(real, 0.0)


def test_unpacked_micro_batches_hold_d_samples_of_at_most_max_length(make_stage):
    longest = max(make_stage()[0].lengths)
    stage_, _ = make_stage(packing=False, per_device_batch=4, packs_per_step=1, max_length=longest)
    assert stage_.train_cap == 4 * stage_.max_length
    (mb,) = stage_.prepare_step(0, 0).micro_batches
    assert mb.n_segments == 4 and mb.n_tokens > stage_.max_length  # the 4 together exceed it: fine


def test_unpacked_too_long_sample_is_a_data_error(make_stage):
    one_token_short = max(make_stage()[0].lengths) - 1
    with pytest.raises(DataContractError) as err:
        make_stage(packing=False, per_device_batch=1, max_length=one_token_short)
    assert err.value.rule == "too_long" and f"template.max_length={one_token_short}" in str(err.value)
