"""Optimizer parameter groups: language model, vision tower and the vision→text aligner.

`training.learning_rate` applies to the language model (and lm_head), `training.vit_lr` to the
vision encoder blocks and patch embedding, `training.aligner_lr` to the mergers that project vision
features into the text space (Qwen3-VL `visual.merger` and `visual.deepstack_merger_list`). A rate
of 0 freezes that group (its parameters get `requires_grad=False` and are left out).
"""

from __future__ import annotations

import torch
from torch import nn

ALIGNER_MARKERS = ("visual.merger", "visual.deepstack_merger_list")


def parameter_group_of(name: str) -> str:
    if ".visual." in f".{name}" or name.startswith("visual."):
        return "aligner" if any(m in name for m in ALIGNER_MARKERS) else "vit"
    return "llm"


def build_optimizer(
    model: nn.Module, *, learning_rate: float, vit_lr: float, aligner_lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    rates = {"llm": learning_rate, "vit": vit_lr, "aligner": aligner_lr}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        group = parameter_group_of(name)
        if rates[group] == 0.0:
            param.requires_grad_(False)
            continue
        decay = param.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((group, decay), []).append(param)
    param_groups = [
        {"params": params, "lr": rates[group], "weight_decay": weight_decay if decay else 0.0, "name": f"{group}{'' if decay else '_no_decay'}"}
        for (group, decay), params in sorted(groups.items())
    ]
    if not param_groups:
        raise ValueError("every learning rate is 0: nothing to train")
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8)
