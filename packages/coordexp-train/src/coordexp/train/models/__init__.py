"""Models and tokenizers for coordexp: tiny random Qwen3-VL presets, the bundled BPE and the real
Qwen3 vocabulary with the 1000 coord tokens, a torchvision-free processor, vocabulary expansion of
existing checkpoints and padding-free packing (4-row position ids, block-diagonal masks)."""

from __future__ import annotations

from coordexp.train.models.chat_template import (
    CHAT_TEMPLATE,
    ChatTemplateProbe,
    probe_chat_template,
)
from coordexp.train.models.expand_vocab import ExpandVocabResult, expand_vocab
from coordexp.train.models.factory import (
    ATTN_IMPLEMENTATIONS,
    build_model,
    build_model_config,
    create_model,
    load_model,
    load_model_and_processor,
    save_checkpoint,
)
from coordexp.train.models.positions import (
    PackedPositions,
    PackSegment,
    block_diagonal_causal_mask,
    check_packed_positions,
    cu_seq_lens_from_lengths,
    pack_position_ids,
    packed_attention_mask,
    packed_model_inputs,
    rope_index_function,
    segment_mrope_positions,
    text_position_ids_from_cu,
)
from coordexp.train.models.presets import PRESETS, ModelPreset, get_preset
from coordexp.train.models.varlen_attention import SDPA_VARLEN
from coordexp.train.models.processor import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    IMAGE_FACTOR,
    CoordexpQwen3VLProcessor,
    build_processor,
    load_processor,
)
from coordexp.train.models.tokenizer import (
    TOKENIZER_KINDS,
    add_coord_tokens,
    build_tiny_tokenizer,
    build_tokenizer,
    coord_vocab_for,
    load_qwen3_tokenizer,
    present_coord_tokens,
    token_bytes_for,
    token_id_of,
    token_ids_of,
    vocab_token_bytes,
)

__all__ = [
    "SDPA_VARLEN",
    "ATTN_IMPLEMENTATIONS",
    "CHAT_TEMPLATE",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "IMAGE_FACTOR",
    "PRESETS",
    "TOKENIZER_KINDS",
    "ChatTemplateProbe",
    "CoordexpQwen3VLProcessor",
    "ExpandVocabResult",
    "ModelPreset",
    "PackSegment",
    "PackedPositions",
    "add_coord_tokens",
    "block_diagonal_causal_mask",
    "build_model",
    "build_model_config",
    "build_processor",
    "build_tiny_tokenizer",
    "build_tokenizer",
    "check_packed_positions",
    "coord_vocab_for",
    "create_model",
    "cu_seq_lens_from_lengths",
    "expand_vocab",
    "get_preset",
    "load_model",
    "load_model_and_processor",
    "load_processor",
    "load_qwen3_tokenizer",
    "pack_position_ids",
    "packed_attention_mask",
    "packed_model_inputs",
    "present_coord_tokens",
    "probe_chat_template",
    "rope_index_function",
    "save_checkpoint",
    "segment_mrope_positions",
    "text_position_ids_from_cu",
    "token_bytes_for",
    "token_id_of",
    "token_ids_of",
    "vocab_token_bytes",
]
