"""Token-aligned parsing (spec 03 §3.2, D44): byte-based token ↔ character spans, hard stop, coord extraction.

Pipeline (:func:`parse_tokens`): token ids → their bytes (inverse byte-level BPE; added/special
tokens → their UTF-8 text) → one UTF-8 decode of all bytes with a byte → character map
(:func:`token_char_spans`) → :func:`hard_stop` at the first eos id or the first literal
``<|im_end|>`` → :func:`~coordexp.core.coordjson.parse.parse` of the text before the stop →
:func:`extract_coord_positions`, which reads every coordinate from the token ids (never from text)
and drops a record as ``coord_misaligned`` when the ids disagree with the parsed values.
"""

from __future__ import annotations

import codecs
import itertools
import threading
from collections.abc import Collection, Sequence
from typing import Literal

import attrs
import numpy as np
import torch

from coordexp.core.codec import CoordVocab
from coordexp.core.coordjson.parse import GeometryPolicy, Mode, ParsedRecord, ParseResult, parse
from coordexp.core.coordjson.serialize import FieldOrder
from coordexp.core.errors import CoordexpError

EOS_LITERAL = "<|im_end|>"


class TokenBytesError(CoordexpError, ValueError):
    """A vocabulary token string is not valid byte-level BPE text (wrong tokenizer family or table)."""


# ---------------------------------------------------------------------------------------------
# byte-level BPE alphabet: every byte is shown as one printable character. Bytes that already
# print as themselves keep their code point; the rest (controls, space, DEL, NBSP, soft hyphen,
# …) are moved, in byte order, to the code points 256, 257, …
# ---------------------------------------------------------------------------------------------


def _build_byte_alphabet() -> tuple[str, ...]:
    keeps_own = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    alphabet: list[str] = []
    moved = 0
    for byte in range(256):
        if byte in keeps_own:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + moved))
            moved += 1
    return tuple(alphabet)


BYTE_TO_UNICODE: tuple[str, ...] = _build_byte_alphabet()
"""``BYTE_TO_UNICODE[b]`` is the character that stands for byte ``b`` in byte-level token strings."""
UNICODE_TO_BYTE: dict[str, int] = {char: byte for byte, char in enumerate(BYTE_TO_UNICODE)}

# str.translate table: alphabet character → the latin-1 character of its byte. Code points
# below 256 that are not in the alphabet map to U+FFFD so that the latin-1 encode rejects them,
# exactly like every code point above the alphabet.
_TO_LATIN1: dict[int, str] = {ord(char): chr(byte) for char, byte in UNICODE_TO_BYTE.items()}
_TO_LATIN1.update({code: "\ufffd" for code in range(256) if code not in _TO_LATIN1})


def bytes_to_byte_level(data: bytes) -> str:
    """Bytes → their byte-level token string (the inverse of :func:`byte_level_token_bytes`)."""
    return "".join(BYTE_TO_UNICODE[byte] for byte in data)


def byte_level_token_bytes(token_strings: Sequence[str], added_tokens: Collection[str]) -> list[bytes]:
    """Vocabulary token strings (index = token id) → the bytes each token stands for.

    Byte-level BPE strings (GPT-2/Qwen alphabet) map back character by character; tokens in
    ``added_tokens`` (special tokens, coord tokens) map to their UTF-8 text. Raises
    :class:`TokenBytesError` naming the first token that is neither.
    """
    added = frozenset(added_tokens)
    out: list[bytes] = []
    for token_id, token in enumerate(token_strings):
        if not isinstance(token, str):
            raise TokenBytesError(f"token id {token_id}: expected a token string, got {token!r}")
        if token in added:
            out.append(token.encode("utf-8"))
            continue
        try:
            out.append(token.translate(_TO_LATIN1).encode("latin-1"))
        except UnicodeEncodeError as error:
            raise TokenBytesError(
                f"token id {token_id} ({token!r}) has character {token[error.start]!r} at {error.start}, "
                "which is not in the byte-level alphabet; pass it in added_tokens if it is an added token"
            ) from None
    return out


# ---------------------------------------------------------------------------------------------
# byte-based character spans
# ---------------------------------------------------------------------------------------------

_invalid_ranges = threading.local()


def _record_and_replace(error: UnicodeError) -> tuple[str, int]:
    # errors="replace" semantics (one U+FFFD per maximal invalid subpart), plus a record of where.
    if not isinstance(error, UnicodeDecodeError):
        raise error
    _invalid_ranges.ranges.append((error.start, error.end))
    return "\ufffd", error.end


_ERROR_HANDLER = "coordexp.record_replace"
codecs.register_error(_ERROR_HANDLER, _record_and_replace)


def _decode_with_char_map(data: bytes) -> tuple[str, np.ndarray]:
    """UTF-8 decode (errors="replace") → (text, ``char_of_byte[len(data) + 1]``, last entry ``len(text)``)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    starts_char = (raw & 0xC0) != 0x80  # a byte that is not a continuation byte begins a character
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _invalid_ranges.ranges = []
        try:
            text = data.decode("utf-8", errors=_ERROR_HANDLER)
            ranges = _invalid_ranges.ranges
        finally:
            del _invalid_ranges.ranges
        starts_char = starts_char.copy()
        for start, end in ranges:  # each maximal invalid subpart is exactly one U+FFFD
            starts_char[start] = True
            starts_char[start + 1 : end] = False
    char_of_byte = np.empty(len(data) + 1, dtype=np.int64)
    starts_char.cumsum(out=char_of_byte[:-1])
    char_of_byte[:-1] -= 1
    char_of_byte[-1] = len(text)
    return text, char_of_byte


@attrs.frozen(eq=False)
class TokenText:
    """Decoded text of a token sequence and each token's character span.

    ``starts``/``ends`` are int64 arrays, one entry per token: token t covers
    ``text[starts[t]:ends[t]]``, every character it contributes at least one byte to (a character
    split across tokens is covered by each of them). Both arrays are non-decreasing; a token with
    no bytes has ``starts[t] == ends[t]``.
    """

    text: str
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenText):
            return NotImplemented
        return (
            self.text == other.text
            and np.array_equal(self.starts, other.starts)
            and np.array_equal(self.ends, other.ends)
        )

    __hash__ = None  # type: ignore[assignment]

    def truncated(self, n_tokens: int, n_chars: int) -> TokenText:
        """The first ``n_tokens`` tokens over ``text[:n_chars]`` (spans clipped to ``n_chars``)."""
        if not 0 <= n_tokens <= len(self) or not 0 <= n_chars <= len(self.text):
            raise ValueError(
                f"cannot cut {len(self)} tokens / {len(self.text)} chars "
                f"at {n_tokens} tokens / {n_chars} chars"
            )
        return TokenText(
            self.text[:n_chars],
            self.starts[:n_tokens].copy(),
            np.minimum(self.ends[:n_tokens], n_chars),
        )


def token_char_spans(token_bytes: Sequence[bytes], lengths: np.ndarray | None = None) -> TokenText:
    """Per-position token bytes → :class:`TokenText` (D44: decode the bytes once, never re-encode text).

    Invalid UTF-8 decodes as ``bytes.decode("utf-8", errors="replace")`` does, and every byte of a
    replaced subpart maps to its U+FFFD. Vectorized: the byte → character map is a cumulative sum.
    ``lengths``: int ``[T]`` byte length of each entry when the caller already has them (a
    tokenizer's length table); they must equal ``len`` of each entry.
    """
    if lengths is None:
        lengths = np.fromiter(map(len, token_bytes), dtype=np.int64, count=len(token_bytes))
    elif len(lengths) != len(token_bytes):
        raise ValueError(f"{len(lengths)} lengths for {len(token_bytes)} tokens")
    else:
        lengths = np.asarray(lengths, dtype=np.int64)
    data = b"".join(token_bytes)
    byte_ends = lengths.cumsum()
    if byte_ends.size and int(byte_ends[-1]) != len(data):
        raise ValueError(f"the lengths add up to {int(byte_ends[-1])} bytes, the tokens hold {len(data)}")
    text, char_of_byte = _decode_with_char_map(data)
    byte_starts = byte_ends - lengths
    starts = char_of_byte[byte_starts]
    ends = np.where(lengths > 0, char_of_byte[np.maximum(byte_ends - 1, 0)] + 1, starts)
    return TokenText(text, starts, ends)


# ---------------------------------------------------------------------------------------------
# hard stop
# ---------------------------------------------------------------------------------------------


def _as_id_array(token_ids: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(token_ids, torch.Tensor):
        array = token_ids.detach().cpu().numpy()
    else:
        array = np.asarray(token_ids)
    if array.ndim != 1:
        raise ValueError(f"token_ids must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"token_ids must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


@attrs.frozen
class HardStop:
    """Where the assistant text ends (03 §3.2 step 2).

    ``n_tokens`` tokens are kept (every token contributing a character before the stop);
    ``n_chars`` characters of text are kept; ``ends_with_eos`` is True when an eos id or the
    fused literal stopped it (``kind`` says which; ``"none"`` when the text ran to the end).
    """

    n_tokens: int
    n_chars: int
    ends_with_eos: bool
    kind: Literal["eos_id", "eos_literal", "none"]


def hard_stop(
    token_ids: Sequence[int] | torch.Tensor | np.ndarray,
    text: TokenText,
    eos_ids: Collection[int],
    eos_literal: str = EOS_LITERAL,
) -> HardStop:
    """Cut at the earliest of the first eos-type id and the first ``eos_literal`` in the text.

    The eos token itself is not kept. For the fused case (the literal spelled by ordinary tokens)
    the cut is at the literal's first character; a token straddling it is kept (its span is
    clipped by :meth:`TokenText.truncated`).
    """
    ids = _as_id_array(token_ids)
    if len(ids) != len(text):
        raise ValueError(f"{len(ids)} token ids but {len(text)} token spans")
    if not eos_literal:
        raise ValueError("eos_literal must be a non-empty string")
    eos = np.fromiter((int(e) for e in eos_ids), dtype=np.int64)
    id_stop = None
    for eos_id in eos.tolist() if ids.size else ():  # a handful of ids: first hit of each by argmax
        is_eos = ids == eos_id
        first = int(is_eos.argmax())
        if is_eos[first] and (id_stop is None or first < id_stop):
            id_stop = first
    literal_at = text.text.find(eos_literal)
    id_chars = int(text.starts[id_stop]) if id_stop is not None else None
    if literal_at >= 0 and (id_chars is None or literal_at < id_chars):
        n_tokens = int(text.starts.searchsorted(literal_at, side="left"))
        return HardStop(n_tokens, literal_at, True, "eos_literal")
    if id_stop is not None:
        return HardStop(id_stop, id_chars, True, "eos_id")
    return HardStop(len(ids), len(text.text), False, "none")


# ---------------------------------------------------------------------------------------------
# coord extraction
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class AlignedParse:
    """A parse whose coordinates are tied to token positions (03 §3.2 step 4).

    ``result`` is the :class:`ParseResult` after extraction (misaligned records dropped, counts
    re-derived). ``coord_positions[i]`` holds, for record i of ``result.records``, the strictly
    increasing token positions of its coord tokens (one per value, in value order); it is empty
    for dropped records. ``token_text`` is the token/character map the parse ran on (cut at the
    hard stop by :func:`parse_tokens`); ``stop`` is the hard stop (None when
    :func:`extract_coord_positions` was called directly).
    """

    result: ParseResult
    coord_positions: tuple[tuple[int, ...], ...]
    token_text: TokenText
    stop: HardStop | None = None

    def positions_of(self, record_index: int) -> tuple[int, ...]:
        """Token positions of record ``record_index``'s coord tokens (empty if dropped)."""
        return self.coord_positions[record_index]


def _coord_tokens_in_record_order(
    valid: list[ParsedRecord],
    text: TokenText,
    bins: np.ndarray,
    coord_positions: np.ndarray,
    positions: list[tuple[int, ...]],
) -> bool:
    """The usual case of :func:`extract_coord_positions`, settled with a few whole-array operations:
    every coord token of the text belongs, in order, to the valid records (record k takes the next
    ``len(values)`` of them), carries their values, and lies inside its record's ``geom_span``.
    Then each record holds exactly its own tokens (geometry spans are disjoint and in text order,
    tokens in position order), so every record is aligned; their positions are written into
    ``positions`` and True returned. Anything else returns False and leaves ``positions`` as is.
    """
    expected = list(itertools.chain.from_iterable(record.values for record in valid))
    if len(expected) != coord_positions.size or bins[coord_positions].tolist() != expected:
        return False
    count = len(valid)
    arity = np.fromiter((len(record.values) for record in valid), dtype=np.int64, count=count)
    spans = np.fromiter(
        itertools.chain.from_iterable(record.geom_span for record in valid), dtype=np.int64, count=2 * count
    ).reshape(count, 2)
    owner_spans = np.repeat(spans, arity, axis=0)
    starts = text.starts[coord_positions]
    # Inside as extract_coord_positions counts it: starts in [start, end) of the span, ends by its end.
    inside = (starts >= owner_spans[:, 0]) & (starts < owner_spans[:, 1])
    inside &= text.ends[coord_positions] <= owner_spans[:, 1]
    if not inside.all():
        return False
    position_list = coord_positions.tolist()
    first = 0
    for record, n in zip(valid, arity.tolist(), strict=True):
        positions[record.index] = tuple(position_list[first : first + n])
        first += n
    return True


def extract_coord_positions(
    result: ParseResult,
    text: TokenText,
    token_ids: Sequence[int] | torch.Tensor | np.ndarray,
    vocab: CoordVocab,
) -> AlignedParse:
    """Tie each valid record's values to its coord token positions; drop disagreeing records.

    A record keeps validity iff the coord-id tokens whose spans lie inside its ``geom_span`` are
    exactly as many as its values and carry the same bins in order; otherwise it becomes
    ``coord_misaligned``. ``result`` must come from parsing ``text.text`` (or a prefix of it).
    Vectorized: one table lookup for all ids and one ``searchsorted`` for all records.
    """
    ids = _as_id_array(token_ids)
    if len(ids) != len(text):
        raise ValueError(f"{len(ids)} token ids but {len(text)} token spans")
    bins = vocab.bins_of_array(ids)
    coord_positions = (bins >= 0).nonzero()[0]
    valid = [record for record in result.records if record.valid]
    positions: list[tuple[int, ...]] = [()] * len(result.records)
    if not valid:
        return AlignedParse(result=result, coord_positions=tuple(positions), token_text=text)
    in_order = _coord_tokens_in_record_order(valid, text, bins, coord_positions, positions)
    if in_order:
        return AlignedParse(result=result, coord_positions=tuple(positions), token_text=text)
    count = len(valid)
    span_starts = np.fromiter((record.geom_span[0] for record in valid), dtype=np.int64, count=count)
    span_ends = np.fromiter((record.geom_span[1] for record in valid), dtype=np.int64, count=count)
    arity = np.fromiter((len(record.values) for record in valid), dtype=np.int64, count=count)
    coord_starts = text.starts[coord_positions]
    lows = coord_starts.searchsorted(span_starts, side="left")
    highs = coord_starts.searchsorted(span_ends, side="left")
    # Records holding exactly their arity of coord tokens; their tokens are compared all at once.
    sized = (highs - lows) == arity
    aligned = sized.copy()
    if sized.any():
        take = np.repeat(lows[sized], arity[sized]) + (
            np.arange(int(arity[sized].sum()))
            - np.repeat(np.cumsum(arity[sized]) - arity[sized], arity[sized])
        )
        expected = list(
            itertools.chain.from_iterable(r.values for r, ok in zip(valid, sized.tolist()) if ok)
        )
        slots = coord_positions[take]
        found = bins[slots]
        ends_ok = text.ends[slots] <= np.repeat(span_ends[sized], arity[sized])
        # Usually every sized record is aligned: one comparison of the flat lists settles it.
        if not (found.tolist() == expected and ends_ok.all()):
            token_ok = (found == np.array(expected, dtype=np.int64)) & ends_ok
            first = np.cumsum(arity[sized]) - arity[sized]
            aligned[sized] = np.logical_and.reduceat(token_ok, first)
    position_list = coord_positions.tolist()
    records: list[ParsedRecord] = list(result.records)
    for record, ok, low, high in zip(valid, aligned.tolist(), lows.tolist(), highs.tolist(), strict=True):
        if ok:
            positions[record.index] = tuple(position_list[low:high])
        else:
            records[record.index] = record.dropped("coord_misaligned")
    updated = result if aligned.all() else result.with_records(records)
    return AlignedParse(result=updated, coord_positions=tuple(positions), token_text=text)


def parse_tokens(
    token_ids: Sequence[int] | torch.Tensor | np.ndarray,
    token_bytes: Sequence[bytes],
    vocab: CoordVocab,
    eos_ids: Collection[int],
    mode: Mode = "rollout",
    geometry_policy: GeometryPolicy = "any",
    field_order: FieldOrder | None = None,
    eos_literal: str = EOS_LITERAL,
) -> AlignedParse:
    """The whole 03 §3.2 pipeline on generated ids: spans → hard stop → parse → coord extraction.

    ``token_bytes`` is the vocabulary table indexed by token id (e.g. the output of
    :func:`byte_level_token_bytes` over the tokenizer's id → token list), not per position. Only
    the tokens before the hard stop influence the output (E3).
    """
    ids = _as_id_array(token_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= len(token_bytes)):
        raise ValueError(
            f"token ids must lie in [0, {len(token_bytes)}) of the token_bytes table, "
            f"got range [{ids.min()}, {ids.max()}]"
        )
    per_token = list(map(token_bytes.__getitem__, ids.tolist()))
    full = token_char_spans(per_token)
    stop = hard_stop(ids, full, eos_ids, eos_literal)
    kept = full.truncated(stop.n_tokens, stop.n_chars)
    result = parse(kept.text, mode=mode, geometry_policy=geometry_policy, field_order=field_order)
    aligned = extract_coord_positions(result, kept, ids[: stop.n_tokens], vocab)
    return attrs.evolve(aligned, stop=stop)


__all__ = [
    "BYTE_TO_UNICODE",
    "EOS_LITERAL",
    "UNICODE_TO_BYTE",
    "AlignedParse",
    "HardStop",
    "TokenBytesError",
    "TokenText",
    "byte_level_token_bytes",
    "bytes_to_byte_level",
    "extract_coord_positions",
    "hard_stop",
    "parse_tokens",
    "token_char_spans",
]
