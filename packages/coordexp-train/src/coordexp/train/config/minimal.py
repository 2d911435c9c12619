"""The smallest complete config of each trainer variant, as plain data.

Every required key is present (required leaf knobs included); everything else is left to its
default. Tests across the repository build their configs from these (and write them to YAML),
and ``docs/configuration.md`` shows the same shapes.
"""

from __future__ import annotations

from .tree import copy_tree

_COMMON: dict[str, object] = {
    "model": {"model": "preset:tiny"},
    "template": {"max_length": 512},
    "training": {
        "run_name": "minimal",
        "output_dir": "runs/minimal",
        "logging_dir": "runs/minimal/logs",
        "seed": 17,
        "learning_rate": 1.0e-4,
        "vit_lr": 0.0,
        "aligner_lr": 1.0e-5,
        "effective_batch_size": 4,
        "max_steps": 10,
        "eval_strategy": "no",
        "eval_steps": 5,
        "save_strategy": "no",
        "save_steps": 5,
    },
    "custom": {
        "object_field_order": "desc_first",
        "train_jsonl": "data/train.jsonl",
        "val_jsonl": "data/val.jsonl",
    },
}

_ROLLOUT: dict[str, object] = {
    "rollout_backend": "hf",
    "decode_batch_size": 2,
    "decoding": {"max_new_tokens": 128},
}

VLLM_SECTION: dict[str, object] = {
    "servers": [{"base_url": "http://127.0.0.1:8000"}],
    "max_model_len": 1024,
}
"""A valid ``rollout_matching.vllm`` section for the minimal configs (max_length 512)."""


def minimal_config(variant: str, *, backend: str = "hf") -> dict[str, object]:
    """A fresh, mutable minimal config for ``variant`` (``backend``: ``hf`` or ``vllm``)."""
    data = copy_tree(_COMMON)
    assert isinstance(data, dict)
    data["custom"]["trainer_variant"] = variant  # type: ignore[index]
    if variant == "stage1":
        if backend != "hf":
            raise ValueError("stage1 has no rollout backend")
        return data
    rollout = copy_tree(_ROLLOUT)
    assert isinstance(rollout, dict)
    rollout["rollout_backend"] = backend
    if backend == "vllm":
        rollout["vllm"] = copy_tree(VLLM_SECTION)
    data["rollout_matching"] = rollout
    if variant == "stage2_two_channel":
        data["stage2_ab"] = {"schedule": {"b_ratio": 0.5}, "n_softctx_iter": 1}
    return data
