"""`sdpa_varlen`: the block-diagonal mask is recognized exactly, a pack's forward and backward match
`sdpa` with the same mask, the per-segment path is really taken, and everything else (padded
generation) behaves exactly like `sdpa`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.render import build_messages
from coordexp.train.models import (
    SDPA_VARLEN,
    PackSegment,
    block_diagonal_causal_mask,
    build_model,
    build_processor,
    build_tiny_tokenizer,
    cu_seq_lens_from_lengths,
    packed_model_inputs,
)
from coordexp.train.models import varlen_attention
from coordexp.train.models.varlen_attention import block_diagonal_segments, register


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.data())
def test_segments_are_recognized_exactly(lengths, data):
    cu = cu_seq_lens_from_lengths(lengths)
    total = int(cu[-1])
    mask = block_diagonal_causal_mask(cu, dtype=torch.bool)
    if total >= 2:
        assert block_diagonal_segments(mask, total, total) == cu.tolist()
        # A flipped entry gives another mask: split only if that one is block-diagonal causal
        # too (e.g. two segments merged), and then exactly at its own bounds.
        i = data.draw(st.integers(0, total - 1))
        j = data.draw(st.integers(0, total - 1))
        flipped = mask.clone()
        flipped[0, 0, i, j] = ~flipped[0, 0, i, j]
        bounds = block_diagonal_segments(flipped, total, total)
        if j > i or (i == j):
            assert bounds is None  # attends ahead, or not to itself: never block-diagonal causal
        if bounds is not None:
            rebuilt = block_diagonal_causal_mask(torch.tensor(bounds, dtype=torch.int32), dtype=torch.bool)
            assert torch.equal(rebuilt, flipped)
    else:
        assert block_diagonal_segments(mask, total, total) is None  # one token: nothing to split


def test_other_masks_and_shapes_are_not_split():
    mask = block_diagonal_causal_mask(cu_seq_lens_from_lengths([3, 4]), dtype=torch.bool)
    assert block_diagonal_segments(None, 7, 7) is None
    assert block_diagonal_segments(mask.float(), 7, 7) is None  # additive (eager) form
    assert block_diagonal_segments(mask.expand(2, 1, 7, 7), 7, 7) is None  # a batch of rows
    assert block_diagonal_segments(mask[..., :6, :], 6, 7) is None  # queries != keys (a cache)


ANSWER = (
    '{"objects": [{"desc": "red circle", "bbox_2d": '
    "[<|coord_1|>, <|coord_20|>, <|coord_300|>, <|coord_999|>]}]}"
)


@pytest.fixture(scope="module")
def tiny():
    register()
    tokenizer = build_tiny_tokenizer()
    return build_model("tiny", tokenizer, seed=5), build_processor(tokenizer)


def _segments(processor, n: int) -> list[PackSegment]:
    out = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 32 * (i + 1), 3), dtype=np.uint8)
        prompt = PromptPair("You are a detector.", f"Find {i}.")
        messages = build_messages(prompt, "x.png", ANSWER[: 50 + 15 * i])
        text = processor.apply_chat_template(messages, tokenize=False)
        batch = processor(text=[text], images=[Image.fromarray(pixels)], return_tensors="pt")
        ids, types = batch["input_ids"][0], batch["mm_token_type_ids"][0]
        out.append(PackSegment(ids, batch["image_grid_thw"], batch["pixel_values"], types))
    return out


def _loss_and_grads(model, kwargs):
    model.zero_grad(set_to_none=True)
    logits = model(**kwargs).logits[0]
    loss = logits.logsumexp(-1).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_pack_forward_and_backward_match_sdpa_and_take_the_segment_path(tiny, monkeypatch):
    model, processor = tiny
    model.train()
    segments = _segments(processor, 3)
    calls = []
    original = varlen_attention.block_diagonal_segments

    def spy(*args):
        bounds = original(*args)
        calls.append(bounds)
        return bounds

    try:
        kwargs, packed = packed_model_inputs(model, segments, attn_implementation="sdpa")
        ref_logits, ref_grads = _loss_and_grads(model, kwargs)
        model.set_attn_implementation(SDPA_VARLEN)
        monkeypatch.setattr(varlen_attention, "block_diagonal_segments", spy)
        kwargs, _ = packed_model_inputs(model, segments)
        logits, grads = _loss_and_grads(model, kwargs)
    finally:
        model.set_attn_implementation("sdpa")
        model.eval()
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)
    # The text layers split at the segment bounds; the vision tower's per-image calls do not split.
    text_layers = model.config.text_config.num_hidden_layers
    assert [c for c in calls if c is not None] == [packed.cu_seq_lens.tolist()] * text_layers


def test_padded_batched_generation_is_the_same_as_sdpa(tiny):
    model, processor = tiny
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    prompts = ["Find shapes.", "Find every red circle in the picture, please."]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()  # the short prompt is left-padded
    outputs = {}
    try:
        for implementation in ("sdpa", SDPA_VARLEN):
            model.set_attn_implementation(implementation)
            with torch.no_grad():
                outputs[implementation] = model.generate(**batch, max_new_tokens=6, do_sample=False)
    finally:
        model.set_attn_implementation("sdpa")
    assert torch.equal(outputs["sdpa"], outputs[SDPA_VARLEN])
