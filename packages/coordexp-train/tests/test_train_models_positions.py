"""Packed 4-row position ids, block-diagonal masks and isolation (spec 06 §6.7, spec 07 H)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from coordexp.core.errors import ConfigError, PipelineError
from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.render import build_messages
from coordexp.train.models import (
    PackSegment,
    block_diagonal_causal_mask,
    build_model,
    build_processor,
    build_tiny_tokenizer,
    check_packed_positions,
    cu_seq_lens_from_lengths,
    pack_position_ids,
    packed_attention_mask,
    packed_model_inputs,
    rope_index_function,
    text_position_ids_from_cu,
)
from coordexp.train.models.varlen_attention import register as register_sdpa_varlen

ANSWER = (
    '{"objects": [{"desc": "red circle", "bbox_2d": '
    "[<|coord_1|>, <|coord_20|>, <|coord_300|>, <|coord_999|>]}]}"
)


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tiny_tokenizer()
    return build_model("tiny", tokenizer, seed=11), build_processor(tokenizer)


@pytest.fixture(scope="module")
def samples(tiny):
    """Three single-sample processor outputs: 64x64 image, 32x96 image, text only."""
    _, processor = tiny
    out = []
    for i, size in enumerate([(64, 64), (32, 96), None]):
        messages = build_messages(PromptPair("You are a detector.", f"Find shapes {i}."), "x.png", ANSWER[: 40 + 20 * i])
        if size is None:
            messages[1]["content"] = messages[1]["content"][1:]
        text = processor.apply_chat_template(messages, tokenize=False)
        images = None
        if size is not None:
            images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8))]
        out.append(processor(text=[text], images=images, return_tensors="pt"))
    return out


def _segment(batch, with_types: bool = True) -> PackSegment:
    return PackSegment(
        batch["input_ids"][0],
        batch.get("image_grid_thw"),
        batch.get("pixel_values"),
        batch["mm_token_type_ids"][0] if with_types else None,
    )


def _alone_logits(model, samples):
    with torch.no_grad():
        return [model(**s, use_cache=False).logits[0] for s in samples]


@pytest.mark.parametrize("implementation", ["sdpa", "sdpa_varlen", "eager"])
def test_packed_forward_equals_each_sample_alone(tiny, samples, implementation):
    model, _ = tiny
    register_sdpa_varlen()
    model.set_attn_implementation(implementation)
    try:
        alone = _alone_logits(model, samples)
        kwargs, packed = packed_model_inputs(model, [_segment(s) for s in samples])
        expected_dtype = torch.float32 if implementation == "eager" else torch.bool
        assert kwargs["attention_mask"].dtype == expected_dtype
        with torch.no_grad():
            logits = model(**kwargs).logits[0]
        bounds = packed.cu_seq_lens.tolist()
        for i, reference in enumerate(alone):
            torch.testing.assert_close(logits[bounds[i] : bounds[i + 1]], reference, rtol=1e-4, atol=1e-5)
    finally:
        model.set_attn_implementation("sdpa")


def test_implicit_packing_from_text_positions_needs_use_cache_false(tiny, samples):
    model, _ = tiny
    alone = _alone_logits(model, samples)
    kwargs, packed = packed_model_inputs(model, [_segment(s) for s in samples])
    last = slice(int(packed.cu_seq_lens[2]), int(packed.cu_seq_lens[3]))
    with torch.no_grad():
        implicit = model(**{**kwargs, "attention_mask": None}).logits[0]
        leaky = model(**{**kwargs, "attention_mask": None, "use_cache": True}).logits[0]
        causal_only = model(
            **{**kwargs, "attention_mask": None, "position_ids": kwargs["position_ids"][1:]}
        ).logits[0]
    torch.testing.assert_close(implicit[last], alone[2], rtol=1e-4, atol=1e-5)
    # negative controls: without isolation the later segments see the earlier ones
    assert (leaky[last] - alone[2]).abs().max() > 1e-2
    assert (causal_only[last] - alone[2]).abs().max() > 1e-2


def test_position_rows_and_pad_counts(tiny, samples):
    model, processor = tiny
    segments = [_segment(s, with_types=False) for s in samples]
    packed = pack_position_ids(model, segments)
    lengths = [s["input_ids"].shape[1] for s in samples]
    assert packed.position_ids.shape == (4, 1, sum(lengths))
    assert packed.cu_seq_lens.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert packed.cu_seq_lens.dtype == torch.int32 and packed.max_len == max(lengths)
    text = packed.text_position_ids[0]
    assert (text == 0).nonzero().flatten().tolist() == packed.cu_seq_lens[:-1].tolist()
    rope = rope_index_function(model)
    for i, sample in enumerate(samples):
        a, b = int(packed.cu_seq_lens[i]), int(packed.cu_seq_lens[i + 1])
        alone, _ = rope(
            sample["input_ids"],
            mm_token_type_ids=sample["mm_token_type_ids"],
            image_grid_thw=sample.get("image_grid_thw"),
        )
        assert torch.equal(packed.position_ids[1:, 0, a:b], alone[:, 0])
        pads = int((sample["input_ids"] == processor.image_token_id).sum())
        grid = sample.get("image_grid_thw")
        assert pads == (0 if grid is None else int(grid.prod(-1).sum()) // 4)
    check_packed_positions(packed.position_ids, packed.cu_seq_lens, num_segments=3)


def test_pad_count_mismatch_is_rejected(tiny, samples):
    model, _ = tiny
    first = samples[0]
    wrong_grid = torch.tensor([[1, 4, 8]])
    with pytest.raises(PipelineError, match="image-pad tokens"):
        pack_position_ids(model, [PackSegment(first["input_ids"][0], wrong_grid, first["pixel_values"])])


def test_check_packed_positions_reports_violations():
    cu = cu_seq_lens_from_lengths([3, 2])
    good = torch.cat([text_position_ids_from_cu(cu)[None], torch.zeros(3, 5, dtype=torch.long)])[:, None]
    check_packed_positions(good, cu, num_segments=2)
    with pytest.raises(PipelineError, match=r"\[4, 1, T\]"):
        check_packed_positions(good[1:], cu)
    with pytest.raises(PipelineError, match="pack meta says 3 segments"):
        check_packed_positions(good, cu, num_segments=3)
    shifted = good.clone()
    shifted[0, 0, 3] = 3  # the second segment does not restart at 0
    with pytest.raises(PipelineError, match="position 3 holds 3"):
        check_packed_positions(shifted, cu)
    with pytest.raises(PipelineError, match="strictly increase"):
        check_packed_positions(good, torch.tensor([0, 3, 3, 5]))
    with pytest.raises(PipelineError, match="ends at 4"):
        check_packed_positions(good, torch.tensor([0, 4]))
    with pytest.raises(PipelineError, match="lengths"):
        cu_seq_lens_from_lengths([3, 0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=6))
def test_block_diagonal_mask_matches_block_diag_of_lower_triangles(lengths):
    cu = cu_seq_lens_from_lengths(lengths)
    expected = torch.block_diag(*[torch.ones(n, n).tril() for n in lengths]).bool()
    mask = block_diagonal_causal_mask(cu)
    assert mask.shape == (1, 1, sum(lengths), sum(lengths)) and torch.equal(mask[0, 0], expected)
    additive = block_diagonal_causal_mask(cu, dtype=torch.bfloat16)[0, 0]
    assert torch.equal(additive == 0, expected)
    assert bool((additive[~expected] == torch.finfo(torch.bfloat16).min).all())
    text = text_position_ids_from_cu(cu)
    assert text.tolist() == [p for n in lengths for p in range(n)]


def test_attention_mask_choice_per_implementation():
    cu = cu_seq_lens_from_lengths([2, 3])
    assert packed_attention_mask(cu, "sdpa", torch.float16).dtype == torch.bool
    assert packed_attention_mask(cu, "eager", torch.float16).dtype == torch.float16
    assert packed_attention_mask(cu, "flash_attention_2", torch.bfloat16) is None
    with pytest.raises(ConfigError, match="packing supports"):
        packed_attention_mask(cu, "flex_attention", torch.float32)


def test_rope_index_function_unwraps(tiny):
    model, _ = tiny

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    assert rope_index_function(Wrapper(model)) == model.model.get_rope_index
    with pytest.raises(ConfigError, match="no get_rope_index"):
        rope_index_function(torch.nn.Linear(2, 2))
