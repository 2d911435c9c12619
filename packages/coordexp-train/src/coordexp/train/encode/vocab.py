"""`TokenizerInfo`: the tokenizer facts every encoder needs, computed once per run."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from coordexp.core.codec import CoordVocab
from coordexp.core.coordjson.aligned import TokenText, token_char_spans
from coordexp.train.models.special_tokens import IM_END
from coordexp.train.models.tokenizer import coord_vocab_for, token_bytes_for, token_id_of

ENDOFTEXT = "<|endoftext|>"


@attrs.frozen(eq=False)
class TokenizerInfo:
    """A tokenizer with its validated coord vocabulary and end-of-turn ids.

    `coord_mask` is a bool lookup table over the embedding rows (`coord_mask[ids]` tells coord ids);
    `eos_id` is `<|im_end|>` (the only eos token type, D16); `stop_ids` also holds `<|endoftext|>`
    (hard stop of rollouts, spec 03 §3.2).
    """

    tokenizer: Any
    coord_vocab: CoordVocab
    coord_mask: np.ndarray
    eos_id: int
    stop_ids: frozenset[int]

    @classmethod
    def build(cls, tokenizer: Any, num_embeddings: int | None = None) -> "TokenizerInfo":
        vocab = coord_vocab_for(tokenizer, num_embeddings)
        size = int(num_embeddings if num_embeddings is not None else len(tokenizer))
        mask = np.zeros(size, dtype=bool)
        mask[vocab.coord_ids.numpy()] = True
        mask.flags.writeable = False
        eos_id = token_id_of(tokenizer, IM_END)
        stops = {eos_id}
        endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
        if isinstance(endoftext, int) and endoftext != tokenizer.unk_token_id and endoftext >= 0:
            stops.add(int(endoftext))
        return cls(tokenizer, vocab, mask, eos_id, frozenset(stops))

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_text(self, ids: list[int] | np.ndarray) -> TokenText:
        """Byte-based character spans of `ids` (spec 03 §3.2, D44)."""
        return token_char_spans(token_bytes_for(self.tokenizer, [int(i) for i in ids]))
