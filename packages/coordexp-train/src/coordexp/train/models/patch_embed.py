"""Qwen3-VL's patch embedding computed as one matrix product instead of a 3-D convolution.

Qwen3-VL embeds each ``(C, T, P, P)`` patch with an ``nn.Conv3d`` whose kernel equals its stride
and the whole patch, so every output is a dot product of one flattened patch with one flattened
filter: exactly ``linear(patches.reshape(N, C·T·P·P), weight.reshape(E, C·T·P·P), bias)``.
On CPU, oneDNN's 3-D convolution takes ~4× as long as that matmul (1,000 patches of a 64-wide tower,
one thread: 9.8 ms vs 2.5 ms forward), and the demo's tower embeds ~1,000 patches per pack.

:class:`MatmulPatchEmbed` keeps the original ``proj`` module, so parameter names, state dicts and
saved checkpoints are unchanged; only the forward is computed differently (equal up to float
summation order). :func:`use_matmul_patch_embed` swaps it into a loaded model — transformers builds
the vision tower's submodules itself, so a replacement after loading is the only place to do it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchEmbed


class MatmulPatchEmbed(nn.Module):
    """Patch embedding ``[N·C·T·P·P] -> [N, E]`` as a matmul over the original ``Conv3d``'s parameters."""

    def __init__(self, conv_embed: Qwen3VLVisionPatchEmbed) -> None:
        super().__init__()
        proj = conv_embed.proj
        if tuple(proj.kernel_size) != tuple(proj.stride) or proj.padding != (0, 0, 0) or proj.groups != 1:
            raise ValueError(f"patch embedding {proj} is not a whole-patch projection")
        self.proj = proj
        self.embed_dim = conv_embed.embed_dim
        self.patch_numel = proj.in_channels * math.prod(proj.kernel_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight
        patches = hidden_states.reshape(-1, self.patch_numel).to(dtype=weight.dtype)
        return F.linear(patches, weight.reshape(self.embed_dim, self.patch_numel), self.proj.bias)


def use_matmul_patch_embed(model: nn.Module) -> nn.Module:
    """Replace every Qwen3-VL conv patch embedding in ``model`` by :class:`MatmulPatchEmbed`; returns ``model``."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, Qwen3VLVisionPatchEmbed)
    ]
    for parent, name, child in targets:
        parent.register_module(name, MatmulPatchEmbed(child))
    return model
