"""The tokenizer facts the rollout logic needs, as a small protocol (spec 03 §3.2, §3.3, §3.6).

The rollout package never imports transformers outside its hf backend, so parsing, trimming and
target building talk to the tokenizer through :class:`TextCodec`:

* ``encode(text)``: token ids of plain text, no special tokens added (added tokens such as the coord
  tokens and ``<|im_end|>`` *are* recognized inside the text, as every HF tokenizer does);
* ``token_bytes(ids)``: the bytes each id stands for (inverse byte-level BPE; added tokens → their
  UTF-8 text), per position, as :func:`coordexp.core.coordjson.aligned.token_char_spans` wants;
* ``coord_vocab``: the validated id ↔ bin map; ``eos_id``: ``<|im_end|>`` (the eos written at the end
  of ``Y_train``); ``stop_ids``: every eos-type id that hard-stops a rollout (``<|im_end|>``,
  ``<|endoftext|>``).

:class:`TableCodec` implements it from an encode callable and the per-id bytes table. The train side
adapts its tokenizer with ``TableCodec(encode_fn, vocab_token_bytes(tokenizer), coord_vocab, eos_id,
stop_ids)``; :meth:`TableCodec.from_tokenizers` wraps a raw ``tokenizers.Tokenizer`` (duck-typed, no
import). :func:`check_codec` validates any implementation once, at startup.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np

from coordexp.core.codec import COORD_TOKENS, CoordVocab
from coordexp.core.coordjson.aligned import EOS_LITERAL, byte_level_token_bytes
from coordexp.core.errors import CoordVocabError, CoordexpError
from coordexp.rollout.coordsplit import CoordSplitEncoder, coord_tokens_split_text

ENDOFTEXT_LITERAL = "<|endoftext|>"


@runtime_checkable
class TextCodec(Protocol):
    """What rollout parsing, trimming and ``Y_train`` encoding need from a tokenizer (module doc)."""

    coord_vocab: CoordVocab
    eos_id: int
    stop_ids: frozenset[int]

    def encode(self, text: str) -> list[int]: ...

    def token_bytes(self, ids: Sequence[int]) -> list[bytes]: ...


def _as_table(raw: Iterable[bytes]) -> tuple[bytes, ...]:
    table = tuple(raw)
    for token_id, entry in enumerate(table):
        if not isinstance(entry, bytes):
            raise CoordexpError(
                f"token bytes table entry {token_id} must be bytes, got {type(entry).__name__}"
            )
    if not table:
        raise CoordexpError("token bytes table must not be empty")
    return table


def _as_id_set(raw: Iterable[int]) -> frozenset[int]:
    items = frozenset(raw)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 0:
            raise CoordexpError(f"stop_ids must hold non-negative int token ids, got {item!r}")
    return frozenset(int(item) for item in items)


@attrs.frozen(eq=False)
class TableCodec:
    """A :class:`TextCodec` over an encode callable and a per-id bytes table (index = token id).

    ``encode_fn(text)`` must return the ids of ``text`` without special tokens added. Construction
    runs :func:`check_codec` and raises :class:`CoordVocabError`/:class:`CoordexpError` on a table
    that disagrees with the coord vocabulary or the eos ids. ``splits_at_coord_tokens``: the
    tokenizer cuts text at its coord tokens before anything else
    (:func:`~coordexp.rollout.coordsplit.coord_tokens_split_text`); it enables the memoized
    piecewise encoding of :mod:`coordexp.rollout.coordsplit`, checked on probe texts here.
    """

    encode_fn: Callable[[str], Sequence[int]]
    table: tuple[bytes, ...] = attrs.field(converter=_as_table, repr=False)
    coord_vocab: CoordVocab
    eos_id: int
    stop_ids: frozenset[int] = attrs.field(converter=_as_id_set)
    splits_at_coord_tokens: bool = attrs.field(default=False, kw_only=True)
    # The table as NumPy arrays (built once): gathering ids through them is ~5x faster than a
    # Python loop over the tuple for rollout-length id lists.
    _objects: np.ndarray = attrs.field(init=False, repr=False)
    _lengths: np.ndarray = attrs.field(init=False, repr=False)
    _split: CoordSplitEncoder | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        objects = np.empty(len(self.table), dtype=object)
        objects[:] = self.table
        object.__setattr__(self, "_objects", objects)
        object.__setattr__(self, "_lengths", np.fromiter(map(len, self.table), np.int64, len(self.table)))
        object.__setattr__(self, "_split", None)
        check_codec(self)
        if self.splits_at_coord_tokens:
            object.__setattr__(self, "_split", CoordSplitEncoder(self.encode_fn, self.coord_vocab))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added).

        With ``splits_at_coord_tokens`` (the tokenizer cuts text at its coord tokens first,
        :mod:`coordexp.rollout.coordsplit`) the pieces between coord literals are encoded once and
        memoized; the ids are the same.
        """
        if not isinstance(text, str):
            raise CoordexpError(f"encode expects str, got {type(text).__name__}")
        if self._split is not None:
            return self._split.encode(text)
        return list(map(int, self.encode_fn(text)))

    def _checked_ids(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        array = np.asarray(ids).reshape(-1)
        if not array.size:
            return array.astype(np.int64)
        if array.dtype.kind not in "iu":
            raise CoordexpError(f"token ids must be integers, got dtype {array.dtype}")
        if array.min() < 0 or array.max() >= len(self.table):
            bad = array[(array < 0) | (array >= len(self.table))][0]
            raise CoordexpError(f"token id {int(bad)} is outside the vocabulary [0, {len(self.table)})")
        return array

    def token_bytes(self, ids: Sequence[int]) -> list[bytes]:
        """Bytes of each id, per position; an id outside the table raises :class:`CoordexpError`."""
        return self._objects[self._checked_ids(ids)].tolist()

    def token_lengths(self, ids: Sequence[int]) -> np.ndarray:
        """int64 byte length of each id, per position (``len`` of :meth:`token_bytes`' entries)."""
        return self._lengths[self._checked_ids(ids)]

    def token_bytes_and_lengths(self, ids: Sequence[int]) -> tuple[list[bytes], np.ndarray]:
        """:meth:`token_bytes` and :meth:`token_lengths` of ``ids`` with one range check."""
        checked = self._checked_ids(ids)
        return self._objects[checked].tolist(), self._lengths[checked]

    @classmethod
    def from_tokenizers(
        cls,
        tokenizer: Any,
        *,
        eos_token: str = EOS_LITERAL,
        stop_tokens: Sequence[str] = (EOS_LITERAL, ENDOFTEXT_LITERAL),
        num_embeddings: int | None = None,
    ) -> TableCodec:
        """Wrap a byte-level BPE ``tokenizers.Tokenizer`` (``encode``/``id_to_token``/``token_to_id``/
        ``get_vocab_size``/``get_added_tokens_decoder``), e.g. one loaded from a checkpoint's
        ``tokenizer.json``. Stop tokens the vocabulary lacks are skipped; the eos token is required.
        """
        size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        strings = [tokenizer.id_to_token(i) for i in range(size)]
        added = [token.content for token in tokenizer.get_added_tokens_decoder().values()]
        table = byte_level_token_bytes(strings, added)
        lookup = {token: tokenizer.token_to_id(token) for token in COORD_TOKENS}
        vocab = CoordVocab.from_lookup(lookup, size if num_embeddings is None else int(num_embeddings))
        eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            raise CoordexpError(f"the tokenizer has no {eos_token} token")
        stops = {eos_id} | {i for i in map(tokenizer.token_to_id, stop_tokens) if i is not None}

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False).ids

        return cls(
            encode,
            table,
            vocab,
            int(eos_id),
            frozenset(stops),
            splits_at_coord_tokens=coord_tokens_split_text(tokenizer),
        )


def check_codec(codec: TextCodec) -> None:
    """Validate a codec once (startup): raise unless its facts agree with each other.

    Checks: ``eos_id ∈ stop_ids``; no stop id is a coord id; ``token_bytes`` of every coord id is its
    ``<|coord_k|>`` text and of ``eos_id`` the literal ``<|im_end|>`` (the hard stop relies on it);
    ``encode`` of a coord literal is its single coord id.
    """
    vocab = codec.coord_vocab
    if not isinstance(vocab, CoordVocab):
        raise CoordVocabError(f"codec.coord_vocab must be a CoordVocab, got {type(vocab).__name__}")
    stops = frozenset(codec.stop_ids)
    if codec.eos_id not in stops:
        raise CoordexpError(f"eos_id {codec.eos_id} must be one of the stop ids {sorted(stops)}")
    coord_stops = sorted(i for i in stops if vocab.bins_of_array([i])[0] >= 0)
    if coord_stops:
        raise CoordVocabError(f"stop ids {coord_stops} are coord token ids")
    coord_bytes = codec.token_bytes(list(vocab.ids))
    wrong = [
        f"{COORD_TOKENS[k]} (id {vocab.ids[k]}) -> {b!r}"
        for k, b in enumerate(coord_bytes)
        if b != COORD_TOKENS[k].encode("ascii")
    ]
    if wrong:
        raise CoordVocabError(
            f"{len(wrong)} coord ids do not stand for their token text: {'; '.join(wrong[:3])}"
        )
    (eos_bytes,) = codec.token_bytes([codec.eos_id])
    if eos_bytes != EOS_LITERAL.encode("ascii"):
        raise CoordexpError(f"eos_id {codec.eos_id} stands for {eos_bytes!r}, expected {EOS_LITERAL!r}")
    probe = codec.encode(COORD_TOKENS[0])
    if list(probe) != [vocab.ids[0]]:
        raise CoordVocabError(
            f"encode({COORD_TOKENS[0]!r}) gave {list(probe)}, expected the single coord id {vocab.ids[0]}; "
            "the coord tokens must be added tokens of the tokenizer"
        )


def token_lengths(codec: TextCodec, ids: Sequence[int], token_bytes: Sequence[bytes]) -> np.ndarray:
    """int64 byte length per position of ``token_bytes`` (the bytes of ``ids``): a table lookup for
    a :class:`TableCodec`, else counted from the bytes."""
    if isinstance(codec, TableCodec):
        return codec.token_lengths(ids)
    return np.fromiter(map(len, token_bytes), dtype=np.int64, count=len(token_bytes))


def bytes_and_lengths(codec: TextCodec, ids: Sequence[int]) -> tuple[list[bytes], np.ndarray]:
    """``codec.token_bytes(ids)`` and their int64 byte lengths (one lookup for a :class:`TableCodec`)."""
    if isinstance(codec, TableCodec):
        return codec.token_bytes_and_lengths(ids)
    token_bytes = codec.token_bytes(ids)
    return token_bytes, np.fromiter(map(len, token_bytes), dtype=np.int64, count=len(token_bytes))


@lru_cache(maxsize=8)
def coord_mask_for(vocab: CoordVocab, size: int) -> np.ndarray:
    """Read-only bool lookup table ``[max(size, vocab.max_id + 1)]``, True at the coord ids.

    The shape :func:`coordexp.core.tokens.token_types_for_tokens` wants; cached per (vocab, size).
    """
    mask = np.zeros(max(int(size), vocab.max_id + 1), dtype=bool)
    mask[np.asarray(vocab.ids, dtype=np.int64)] = True
    mask.flags.writeable = False
    return mask


__all__ = [
    "ENDOFTEXT_LITERAL",
    "TableCodec",
    "TextCodec",
    "bytes_and_lengths",
    "check_codec",
    "coord_mask_for",
    "token_lengths",
]
