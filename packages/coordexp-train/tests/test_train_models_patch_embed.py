"""The matmul patch embedding equals Qwen3-VL's Conv3d one (forward and gradients), keeps the
parameter names and checkpoints, and is what `load_model` gives."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen3VLForConditionalGeneration
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchEmbed

from coordexp.train.models import (
    build_model,
    build_tiny_tokenizer,
    create_model,
    load_model,
    load_model_and_processor,
    save_checkpoint,
)
from coordexp.train.models.patch_embed import MatmulPatchEmbed, use_matmul_patch_embed


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("tiny", build_tiny_tokenizer(), seed=3)


def _tower_inputs(n_patches: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n_patches, 3 * 2 * 16 * 16, generator=generator)
    side = int(n_patches**0.5)
    return pixels, torch.tensor([[1, side, side]])


def test_forward_and_gradients_equal_the_conv(tiny_model):
    conv_embed = tiny_model.model.visual.patch_embed
    assert isinstance(conv_embed, Qwen3VLVisionPatchEmbed)
    matmul_embed = MatmulPatchEmbed(copy.deepcopy(conv_embed))
    pixels, _ = _tower_inputs(24)
    a, b = pixels.clone().requires_grad_(True), pixels.clone().requires_grad_(True)
    out_conv, out_matmul = conv_embed(a), matmul_embed(b)
    assert out_matmul.shape == out_conv.shape == (24, conv_embed.embed_dim)
    torch.testing.assert_close(out_matmul, out_conv, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out_conv)
    (out_conv * weights).sum().backward()
    (out_matmul * weights).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(matmul_embed.proj.weight.grad, conv_embed.proj.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(matmul_embed.proj.bias.grad, conv_embed.proj.bias.grad, rtol=1e-4, atol=1e-5)
    conv_embed.zero_grad(set_to_none=True)


def test_whole_tower_is_unchanged_and_names_are_kept(tiny_model):
    swapped = use_matmul_patch_embed(copy.deepcopy(tiny_model))
    assert isinstance(swapped.model.visual.patch_embed, MatmulPatchEmbed)
    assert list(swapped.state_dict()) == list(tiny_model.state_dict())
    pixels, grid = _tower_inputs(16)
    with torch.no_grad():
        want = tiny_model.model.visual(pixels, grid_thw=grid)
        got = swapped.model.visual(pixels, grid_thw=grid)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-4, atol=1e-5)


def test_rejects_a_convolution_that_is_not_a_whole_patch_projection(tiny_model):
    odd = copy.deepcopy(tiny_model.model.visual.patch_embed)
    odd.proj = torch.nn.Conv3d(3, odd.embed_dim, kernel_size=(2, 16, 16), stride=(2, 8, 8))
    with pytest.raises(ValueError, match="not a whole-patch projection"):
        MatmulPatchEmbed(odd)


def test_load_model_uses_it_and_its_checkpoints_load_as_plain_qwen3_vl(tmp_path):
    src = create_model("tiny", "bundled", 0, tmp_path / "model")
    loaded, processor = load_model_and_processor(src)
    assert isinstance(loaded.model.visual.patch_embed, MatmulPatchEmbed)
    with torch.no_grad():
        loaded.model.visual.patch_embed.proj.weight.mul_(1.5)  # a change that must reach the file
    saved = save_checkpoint(loaded, processor, tmp_path / "saved")
    stored = load_file(str(saved / "model.safetensors"))
    key = next(k for k in stored if k.endswith("visual.patch_embed.proj.weight"))
    assert stored[key].shape == (64, 3, 2, 16, 16)
    torch.testing.assert_close(stored[key], loaded.model.visual.patch_embed.proj.weight.detach())
    plain = Qwen3VLForConditionalGeneration.from_pretrained(str(saved), local_files_only=True)
    assert isinstance(plain.model.visual.patch_embed, Qwen3VLVisionPatchEmbed)
    torch.testing.assert_close(plain.model.visual.patch_embed.proj.weight, stored[key])
    reloaded = load_model(saved)
    pixels, grid = _tower_inputs(16)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.model.visual(pixels, grid_thw=grid).pooler_output,
            plain.model.visual(pixels, grid_thw=grid).pooler_output,
            rtol=1e-4,
            atol=1e-5,
        )
