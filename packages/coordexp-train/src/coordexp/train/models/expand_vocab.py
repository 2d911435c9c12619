"""Add the 1000 coord tokens to an existing Qwen3-VL checkpoint that lacks them.

``expand_vocab(src_dir, dst_dir)`` loads the checkpoint and its tokenizer, appends
``<|coord_0|>``..``<|coord_999|>`` as normal added tokens (contiguous ids after the current
vocabulary: 151669..152668 for Qwen3), grows the input embeddings and the ``lm_head`` (tied or not)
to ``len(tokenizer)`` rows when they are smaller, initializes every coord row from the mean of the
rows of its bin's digit tokens (``<|coord_437|>`` ← mean of "4", "3", "7"), and saves model,
tokenizer, processor and chat template to ``dst_dir``.

A checkpoint that already has all 1000 coord tokens raises :class:`CoordVocabError`, unless
``if_present="noop"``: then ``dst_dir`` receives an unchanged copy. A checkpoint with only some of
them always raises.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import attrs
import torch
from transformers import AutoConfig

from coordexp.core.codec import NUM_BINS
from coordexp.core.errors import ConfigError, CoordVocabError
from coordexp.train.models.embedding_init import init_coord_rows
from coordexp.train.models.factory import load_model, save_checkpoint
from coordexp.train.models.processor import load_processor
from coordexp.train.models.tokenizer import add_coord_tokens, coord_vocab_for, present_coord_tokens

IF_PRESENT = ("error", "noop")


@attrs.frozen
class ExpandVocabResult:
    """What :func:`expand_vocab` did: ``added`` is False for a no-op copy; ``coord_ids`` holds the
    1000 coord token ids in bin order; ``num_embeddings`` is the final row count; ``tied`` tells
    whether ``lm_head`` shares the input embedding matrix."""

    dst_dir: Path
    added: bool
    coord_ids: tuple[int, ...]
    num_embeddings: int
    tied: bool


def expand_vocab(
    src_dir: str | Path,
    dst_dir: str | Path,
    *,
    if_present: Literal["error", "noop"] = "error",
    dtype: torch.dtype | str = "auto",
) -> ExpandVocabResult:
    """Add the coord tokens to the checkpoint in ``src_dir`` and write the result to ``dst_dir``.

    ``dst_dir`` must differ from ``src_dir`` and be empty or absent. ``dtype="auto"`` keeps the
    stored weight dtype (means are computed in float32).
    """
    if if_present not in IF_PRESENT:
        raise ConfigError("expand_vocab.if_present", f"got {if_present!r}; expected one of {IF_PRESENT}")
    source, target = Path(src_dir), Path(dst_dir)
    if target.resolve() == source.resolve():
        raise ConfigError(
            "expand_vocab.dst_dir", "must differ from src_dir (the source checkpoint is never modified)"
        )
    if target.exists() and any(target.iterdir()):
        raise ConfigError("expand_vocab.dst_dir", f"{str(target)!r} is not empty")
    processor = load_processor(source)
    tokenizer = processor.tokenizer
    present = present_coord_tokens(tokenizer)
    if present:
        if len(present) == NUM_BINS and if_present == "noop":
            config = AutoConfig.from_pretrained(str(source), local_files_only=True)
            rows = int(config.get_text_config().vocab_size)
            vocab = coord_vocab_for(tokenizer, rows)
            shutil.copytree(source, target, dirs_exist_ok=True)
            tied = bool(getattr(config, "tie_word_embeddings", False))
            return ExpandVocabResult(
                dst_dir=target, added=False, coord_ids=vocab.ids, num_embeddings=rows, tied=tied
            )
        hint = " (pass if_present='noop' to copy it unchanged)" if len(present) == NUM_BINS else ""
        raise CoordVocabError(
            f"{str(source)!r} already has {len(present)} of the {NUM_BINS} coord tokens "
            f"(first: {present[0]}); refusing to add them again{hint}"
        )
    model = load_model(source, dtype=dtype)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    add_coord_tokens(tokenizer)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    rows = model.get_input_embeddings().num_embeddings
    vocab = coord_vocab_for(tokenizer, rows)
    init_coord_rows(model, tokenizer, vocab.ids)
    save_checkpoint(model, processor, target)
    return ExpandVocabResult(dst_dir=target, added=True, coord_ids=vocab.ids, num_embeddings=rows, tied=tied)
