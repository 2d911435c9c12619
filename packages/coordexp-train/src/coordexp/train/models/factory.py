"""Build, save and load Qwen3-VL checkpoints (random tiny presets or any local checkpoint), offline.

``create_model(preset, tokenizer_kind, seed, out_dir)`` writes a complete checkpoint directory:
``config.json``, ``generation_config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``chat_template.jinja`` and ``processor_config.json``.
``load_model_and_processor(path)`` loads any local Qwen3-VL checkpoint plus a torchvision-free
processor from such a directory.

The embedding table has exactly ``len(tokenizer)`` rows (2048 for ``bundled``, 152,669 for ``qwen3``
with coord tokens): no unused rows a random model could sample. Coord rows start at the mean of
their digits' rows (:mod:`coordexp.train.models.embedding_init`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from coordexp.core.errors import ConfigError
from coordexp.train.models.embedding_init import init_coord_rows, init_vision_positions
from coordexp.train.models.patch_embed import use_matmul_patch_embed
from coordexp.train.models.presets import ModelPreset, get_preset
from coordexp.train.models.processor import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    MERGE_SIZE,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    CoordexpQwen3VLProcessor,
    build_processor,
    load_processor,
)
from coordexp.train.models.special_tokens import (
    ENDOFTEXT,
    IM_END,
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)
from coordexp.train.models.tokenizer import (
    build_tokenizer,
    coord_vocab_for,
    present_coord_tokens,
    token_id_of,
)
from coordexp.train.models.varlen_attention import SDPA_VARLEN
from coordexp.train.models.varlen_attention import register as register_sdpa_varlen

ATTN_IMPLEMENTATIONS = ("sdpa", "sdpa_varlen", "eager", "flash_attention_2", "flash_attention_3")


def build_model_config(preset: str | ModelPreset, tokenizer: Any) -> Qwen3VLConfig:
    """A ``Qwen3VLConfig`` for ``preset`` whose vocabulary and special ids come from ``tokenizer``."""
    spec = get_preset(preset)
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden_size,
            "intermediate_size": spec.text_intermediate_size,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "head_dim": spec.text_head_dim,
            "max_position_embeddings": spec.max_position_embeddings,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": spec.rope_theta,
                "mrope_section": list(spec.mrope_section),
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": spec.tie_word_embeddings,
            "initializer_range": spec.initializer_range,
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "num_heads": spec.vision_heads,
            "patch_size": PATCH_SIZE,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "out_hidden_size": spec.text_hidden_size,
            "num_position_embeddings": spec.num_position_embeddings,
            "deepstack_visual_indexes": list(spec.deepstack_visual_indexes),
            "initializer_range": spec.initializer_range,
        },
        image_token_id=token_id_of(tokenizer, IMAGE_PAD),
        video_token_id=token_id_of(tokenizer, VIDEO_PAD),
        vision_start_token_id=token_id_of(tokenizer, VISION_START),
        vision_end_token_id=token_id_of(tokenizer, VISION_END),
        tie_word_embeddings=spec.tie_word_embeddings,
    )


def generation_config_for(tokenizer: Any) -> GenerationConfig:
    """Greedy by default; stops at ``<|im_end|>`` or ``<|endoftext|>``; pads with ``<|endoftext|>``."""
    return GenerationConfig(
        eos_token_id=[token_id_of(tokenizer, IM_END), token_id_of(tokenizer, ENDOFTEXT)],
        pad_token_id=token_id_of(tokenizer, ENDOFTEXT),
        do_sample=False,
    )


def build_model(preset: str | ModelPreset, tokenizer: Any, *, seed: int) -> Qwen3VLForConditionalGeneration:
    """Randomly initialized float32 model for ``preset`` (deterministic in ``seed``; global RNG untouched).

    The vision position table and (when the tokenizer holds them) the coord-token rows get smooth
    sinusoidal inits (``embedding_init``), so a random model can learn localization quickly.
    """
    config = build_model_config(preset, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    init_vision_positions(model)
    model.generation_config = generation_config_for(tokenizer)
    if present_coord_tokens(tokenizer):
        vocab = coord_vocab_for(tokenizer, model.get_input_embeddings().num_embeddings)
        init_coord_rows(model, tokenizer, vocab.ids, mode="sincos")
    return model.eval()


def save_checkpoint(model: Any, processor: CoordexpQwen3VLProcessor, out_dir: str | Path) -> Path:
    """Write model (safetensors), config, generation config, processor, tokenizer, template to ``out_dir``."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory


def fresh_checkpoint_dir(out_dir: str | Path, *, overwrite: bool, key: str = "model.out_dir") -> Path:
    """``out_dir`` ready for a new checkpoint: absent or empty, or emptied when ``overwrite``.

    A non-empty directory without ``overwrite`` raises :class:`ConfigError` at ``key``.
    """
    directory = Path(out_dir)
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise ConfigError(key, f"{str(directory)!r} is not empty; pass overwrite=True to replace it")
        shutil.rmtree(directory)
    return directory


def create_model(
    preset: str | ModelPreset,
    tokenizer_kind: str,
    seed: int,
    out_dir: str | Path,
    *,
    with_coord_tokens: bool = True,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
) -> Path:
    """Build a random ``preset`` model on the ``tokenizer_kind`` vocabulary and save a full checkpoint.

    ``tokenizer_kind`` is ``bundled`` (tiny BPE, 2048 rows) or ``qwen3`` (real vocabulary);
    ``with_coord_tokens=False`` leaves the coord tokens out (input for :func:`expand_vocab`).
    Returns the checkpoint directory; refuses a non-empty ``out_dir`` unless ``overwrite``.
    """
    directory = fresh_checkpoint_dir(out_dir, overwrite=overwrite)
    tokenizer = build_tokenizer(tokenizer_kind, with_coord_tokens=with_coord_tokens)
    processor = build_processor(tokenizer, min_pixels=min_pixels, max_pixels=max_pixels)
    model = build_model(preset, tokenizer, seed=seed)
    return save_checkpoint(model, processor, directory)


def load_model(
    path: str | Path,
    *,
    dtype: torch.dtype | str = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | torch.device = "cpu",
) -> Qwen3VLForConditionalGeneration:
    """Load the Qwen3-VL model of a local checkpoint directory, offline, in eval mode.

    ``dtype`` is a torch dtype or ``"auto"`` (the stored dtype); ``attn_implementation`` is one of
    :data:`ATTN_IMPLEMENTATIONS`. The vision tower's patch embedding runs as a matmul
    (:mod:`coordexp.train.models.patch_embed`: same parameters and checkpoint, ~4× faster on CPU).
    """
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError("model.model", f"{str(directory)!r} is not a checkpoint directory (no config.json)")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(
            "model.attn_implementation",
            f"got {attn_implementation!r}; expected one of {ATTN_IMPLEMENTATIONS}",
        )
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    if config.model_type != "qwen3_vl":
        raise ConfigError(
            "model.model", f"{str(directory)!r} holds a {config.model_type!r} model, expected qwen3_vl"
        )
    if attn_implementation == SDPA_VARLEN:
        register_sdpa_varlen()
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        str(directory), dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
    )
    use_matmul_patch_embed(model)
    return model.to(device).eval()


def load_model_and_processor(
    path: str | Path,
    *,
    dtype: torch.dtype | str = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | torch.device = "cpu",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[Qwen3VLForConditionalGeneration, CoordexpQwen3VLProcessor]:
    """Load any local Qwen3-VL checkpoint directory and its processor, offline; model in eval mode.

    See :func:`load_model` and :func:`~coordexp.train.models.processor.load_processor`
    (``min_pixels``/``max_pixels`` override the stored image bounds). Raises :class:`ConfigError`
    when the tokenizer has more tokens than the model has embedding rows.
    """
    model = load_model(path, dtype=dtype, attn_implementation=attn_implementation, device=device)
    processor = load_processor(path, min_pixels=min_pixels, max_pixels=max_pixels)
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(processor.tokenizer):
        raise ConfigError(
            "model.model",
            f"the tokenizer of {str(path)!r} has {len(processor.tokenizer)} tokens but the model only "
            f"{rows} embedding rows; resize the embeddings (coordexp.train.models.expand_vocab)",
        )
    return model, processor
