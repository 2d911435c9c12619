"""Encoding CoordJSON text piece by piece between coord tokens, with a per-tokenizer memo.

HF tokenizers cut their input at *added* tokens before anything else: the text between two added
tokens is normalized, pre-tokenized and run through the model on its own. The coord tokens are
added tokens; when none of them strips neighbouring whitespace (``lstrip``/``rstrip``), requires
word boundaries (``single_word``) or is matched after normalization (``normalized``), a text's ids
are exactly the ids of its pieces between coord literals, with the coord ids in between:

    encode(a + "<|coord_7|>" + b) == encode(a) + [id(<|coord_7|>)] + encode(b)

CoordJSON text is mostly coord literals and a handful of recurring pieces (``", "``,
``]}, {"desc": "cat", "bbox_2d": [`` …), so :class:`CoordSplitEncoder` encodes each distinct piece
once and reuses it: ``encode`` of an FN fragment (spec 03 §3.6) drops from ~170 µs to ~15 µs on the
bundled tiny tokenizer, with identical ids. Whether a tokenizer qualifies is read from its added
tokens (:func:`coord_tokens_split_text`) and re-checked on probe texts when the encoder is built
(:func:`check_coord_split`), so a tokenizer that does not qualify is rejected, never mis-encoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from coordexp.core.codec import COORD_TOKENS, CoordVocab
from coordexp.core.coordjson.aligned import EOS_LITERAL
from coordexp.core.errors import CoordVocabError

# Exactly the 1000 canonical literals (no leading zeros), i.e. exactly the added coord tokens.
COORD_LITERAL = re.compile(r"<\|coord_(0|[1-9][0-9]{0,2})\|>")
MEMO_LIMIT = 4096
# Pieces around coord literals that exercise whitespace, normalization (NFC composes "e" + U+0301),
# other added tokens and non-canonical literals next to coord tokens.
_PROBES = (
    '{"objects": [{"desc": "cat", "bbox_2d": [<|coord_1|>, <|coord_22|>, <|coord_333|>, <|coord_999|>]}]}',
    '{"poly": [<|coord_0|>,<|coord_10|> ,  <|coord_100|>\n, <|coord_7|>], "desc": "café"}, ',
    " <|coord_5|> x<|coord_6|>y <|coord_05|><|coord_1000|>e<|coord_8|>\u0301 中文<|coord_9|>",
    "<|coord_3|>" + EOS_LITERAL + "<|coord_4|><|endoftext|>",
    "\t<|coord_2|>\r\n}]},",
)


def coord_tokens_split_text(tokenizer: Any) -> bool:
    """True when every coord token of a ``tokenizers.Tokenizer`` (duck-typed:
    ``get_added_tokens_decoder()``) is an added token that cuts text as-is: not ``lstrip``,
    ``rstrip``, ``single_word`` or ``normalized``."""
    decoder = getattr(tokenizer, "get_added_tokens_decoder", None)
    if decoder is None:
        return False
    flags = {token.content: token for token in decoder().values()}
    for literal in COORD_TOKENS:
        token = flags.get(literal)
        if token is None or token.lstrip or token.rstrip or token.single_word or token.normalized:
            return False
    return True


class CoordSplitEncoder:
    """``encode(text)`` as the pieces between coord literals, each encoded once (module doc).

    ``encode_fn`` is the tokenizer's plain-text encode; ``vocab`` maps coord bins to ids. The memo
    holds up to :data:`MEMO_LIMIT` pieces and is emptied when full. Build it only for a tokenizer
    that qualifies; the constructor runs :func:`check_coord_split` on probe texts.
    """

    def __init__(self, encode_fn: Callable[[str], Sequence[int]], vocab: CoordVocab) -> None:
        self._encode_fn = encode_fn
        self._coord_ids = vocab.ids
        self._memo: dict[str, tuple[int, ...]] = {}
        check_coord_split(encode_fn, self.encode)

    def _piece(self, piece: str) -> tuple[int, ...]:
        ids = self._memo.get(piece)
        if ids is None:
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            ids = self._memo[piece] = tuple(int(i) for i in self._encode_fn(piece))
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: equal to ``encode_fn(text)`` for a qualifying tokenizer."""
        parts = COORD_LITERAL.split(text)
        ids: list[int] = []
        # re.split with one group alternates: piece, bin, piece, bin, ..., piece.
        for position, part in enumerate(parts):
            if position % 2:
                ids.append(self._coord_ids[int(part)])
            elif part:
                ids.extend(self._piece(part))
        return ids


def check_coord_split(
    encode_fn: Callable[[str], Sequence[int]], split_encode: Callable[[str], list[int]]
) -> None:
    """Raise :class:`CoordVocabError` unless piecewise encoding equals ``encode_fn`` on the probes."""
    for probe in _PROBES:
        whole = [int(i) for i in encode_fn(probe)]
        pieces = split_encode(probe)
        if pieces != whole:
            raise CoordVocabError(
                f"the tokenizer does not cut text at the coord tokens: encode({probe[:40]!r}…) gives "
                f"{whole[:12]}…, piece by piece {pieces[:12]}…; coord tokens must be added tokens "
                "without lstrip/rstrip/single_word, not normalized"
            )


__all__ = ["COORD_LITERAL", "MEMO_LIMIT", "CoordSplitEncoder", "check_coord_split", "coord_tokens_split_text"]
