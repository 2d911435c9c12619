"""Models and tokenizers for coordexp: tiny random Qwen3-VL presets, the bundled BPE and the real
Qwen3 vocabulary with the 1000 coord tokens, a torchvision-free processor, vocabulary expansion of
existing checkpoints and padding-free packing (4-row position ids, block-diagonal masks).

The names below load their module on first use (PEP 562): `coordexp --help` and the commands that
only need `presets` do not pay for importing torch and transformers (~6 s on 2 cores), and
`coordexp demo` can count that import against its budget (cli/cmd_demo.py).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "chat_template": ("CHAT_TEMPLATE", "ChatTemplateProbe", "probe_chat_template"),
    "expand_vocab": ("ExpandVocabResult", "expand_vocab"),
    "factory": (
        "ATTN_IMPLEMENTATIONS",
        "build_model",
        "build_model_config",
        "create_model",
        "load_model",
        "load_model_and_processor",
        "save_checkpoint",
    ),
    "positions": (
        "PackedPositions",
        "PackSegment",
        "block_diagonal_causal_mask",
        "check_packed_positions",
        "cu_seq_lens_from_lengths",
        "pack_position_ids",
        "packed_attention_mask",
        "packed_model_inputs",
        "rope_index_function",
        "segment_mrope_positions",
        "text_position_ids_from_cu",
    ),
    "presets": ("PRESETS", "ModelPreset", "get_preset"),
    "varlen_attention": ("SDPA_VARLEN",),
    "processor": (
        "DEFAULT_MAX_PIXELS",
        "DEFAULT_MIN_PIXELS",
        "IMAGE_FACTOR",
        "CoordexpQwen3VLProcessor",
        "build_processor",
        "load_processor",
    ),
    "tokenizer": (
        "TOKENIZER_KINDS",
        "add_coord_tokens",
        "build_tiny_tokenizer",
        "build_tokenizer",
        "coord_vocab_for",
        "load_qwen3_tokenizer",
        "present_coord_tokens",
        "token_bytes_for",
        "token_id_of",
        "token_ids_of",
        "vocab_token_bytes",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
