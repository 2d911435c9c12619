"""Hypothesis strategies shared by coordexp's property tests (spec 07).

Values are in bins (0..999). Everything here is deterministic given hypothesis' draws:

* :func:`bins`, :func:`boxes`, :func:`raw_polygons`, :func:`canonical_polys`
* :func:`descs`: non-blank unicode descriptions, weighted towards JSON-hostile characters
  (quotes, backslashes, control characters, non-ASCII, astral code points, braces, coord-like text)
* :func:`coord_objects`, :func:`coord_object_lists`, :func:`field_orders`
* :func:`canonical_coordjson`: a canonical CoordJSON text with its objects, order and spans
* :func:`byte_tokenizations`: a tokenizer-free tokenization of a text into random byte chunks,
  with every canonical coord literal as one coord token, over a toy vocabulary built with the
  real byte-level tables (:class:`ToyTokenization`)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import attrs
import numpy as np
from hypothesis import strategies as st

from coordexp.core.codec import COORD_TOKENS, MAX_BIN, CoordVocab
from coordexp.core.coordjson.aligned import EOS_LITERAL, byte_level_token_bytes, bytes_to_byte_level
from coordexp.core.coordjson.serialize import (
    FIELD_ORDERS,
    CoordObject,
    SerializedCoordJSON,
    serialize_with_spans,
)
from coordexp.core.polygon import canonicalize_polygon

Geometry = Literal["any", "bbox", "poly"]


def bins() -> st.SearchStrategy[int]:
    """A bin in 0..999."""
    return st.integers(0, MAX_BIN)


@st.composite
def boxes(draw: st.DrawFn, allow_degenerate: bool = True) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)`` with ``x1 ≤ x2`` and ``y1 ≤ y2`` (strict when not ``allow_degenerate``)."""
    low = 0 if allow_degenerate else 1
    x1 = draw(st.integers(0, MAX_BIN - low))
    y1 = draw(st.integers(0, MAX_BIN - low))
    x2 = draw(st.integers(x1 + low, MAX_BIN))
    y2 = draw(st.integers(y1 + low, MAX_BIN))
    return x1, y1, x2, y2


@st.composite
def raw_polygons(draw: st.DrawFn, min_vertices: int = 3, max_vertices: int = 10) -> tuple[int, ...]:
    """Flat polygons as a loader may receive them: any winding and start, sometimes with a closing
    repeat of the first vertex and consecutive duplicates. Coordinates come from a small pool part
    of the time so that repeats and collinear runs are common."""
    pool = draw(st.lists(st.tuples(bins(), bins()), min_size=2, max_size=6))
    vertex = st.one_of(st.tuples(bins(), bins()), st.sampled_from(pool))
    vertices = draw(st.lists(vertex, min_size=min_vertices, max_size=max_vertices))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(vertices) - 1))
        vertices.insert(at, vertices[at])
    if draw(st.booleans()):
        vertices.append(vertices[0])
    return tuple(c for v in vertices for c in v)


def _canonical_or_none(values: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return canonicalize_polygon(values)[0]
    except ValueError:
        return None


def canonical_polys(min_vertices: int = 3, max_vertices: int = 10) -> st.SearchStrategy[tuple[int, ...]]:
    """Polygons already in spec 01 §1.7 canonical form (flat, ≥ 3 vertices)."""
    return (
        raw_polygons(min_vertices, max_vertices)
        .map(_canonical_or_none)
        .filter(lambda values: values is not None)
    )


_HOSTILE = (
    '"\\/\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1f\x7f\x85\xa0\u00e9\u00df\u4e2d\u6f22\u2028\u2029\ufeff'
    "\U0001f600\U00010348{}[]<|>,: _coord0159"
)


def descs(allow_eos_literal: bool = False) -> st.SearchStrategy[str]:
    """Non-blank (after ``str.strip``) descriptions without lone surrogates.

    Half of the draws come from a small alphabet of JSON- and tokenizer-hostile characters; the
    rest is arbitrary UTF-8-encodable text. ``allow_eos_literal=False`` keeps ``<|im_end|>`` out
    (it would be a fused hard stop in token-aligned parsing).
    """
    text = st.one_of(
        st.text(st.sampled_from(_HOSTILE + "ab "), min_size=1, max_size=20),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    )
    text = text.filter(lambda s: bool(s.strip()))
    if not allow_eos_literal:
        text = text.filter(lambda s: EOS_LITERAL not in s)
    return text


@st.composite
def coord_objects(draw: st.DrawFn, geometry: Geometry = "any") -> CoordObject:
    """A valid :class:`CoordObject` (box or canonical polygon as ``geometry`` allows)."""
    kind = draw(st.sampled_from(("bbox", "poly"))) if geometry == "any" else geometry
    if kind == "bbox":
        return CoordObject(draw(descs()), "bbox_2d", draw(boxes()))
    return CoordObject(draw(descs()), "poly", draw(canonical_polys()))


def coord_object_lists(
    min_size: int = 0, max_size: int = 6, geometry: Geometry = "any"
) -> st.SearchStrategy[list[CoordObject]]:
    """Lists of valid objects."""
    return st.lists(coord_objects(geometry), min_size=min_size, max_size=max_size)


def field_orders() -> st.SearchStrategy[str]:
    """``"desc_first"`` or ``"geometry_first"``."""
    return st.sampled_from(FIELD_ORDERS)


@attrs.frozen
class CoordJSONSample:
    """A canonical CoordJSON text (``layout.text``) with the objects and key order it serializes."""

    objects: tuple[CoordObject, ...]
    field_order: str
    layout: SerializedCoordJSON

    @property
    def text(self) -> str:
        return self.layout.text


@st.composite
def canonical_coordjson(
    draw: st.DrawFn, min_objects: int = 0, max_objects: int = 6, geometry: Geometry = "any"
) -> CoordJSONSample:
    """A canonical CoordJSON text in either field order."""
    objects = tuple(draw(coord_object_lists(min_objects, max_objects, geometry)))
    field_order = draw(field_orders())
    return CoordJSONSample(objects, field_order, serialize_with_spans(objects, field_order))


# ---------------------------------------------------------------------------------------------
# tokenizer-free tokenizations
# ---------------------------------------------------------------------------------------------

TOY_EOS_ID = 256
TOY_ENDOFTEXT_ID = 257
TOY_SPECIALS = ("<|im_end|>", "<|endoftext|>")
_TOY_COORD_BASE = 258
TOY_VOCAB_CAPACITY = 1 << 16
"""Upper bound on toy token ids (the ``num_embeddings`` of the toy :class:`CoordVocab`)."""


@lru_cache(maxsize=1)
def _toy_base() -> tuple[tuple[bytes, ...], CoordVocab]:
    # ids 0..255: one byte each; 256/257: eos tokens; 258..1257: the coord tokens in a fixed
    # shuffled order, so that the bin → id map is not monotone.
    order = np.random.default_rng(20261129).permutation(len(COORD_TOKENS))
    coord_strings = [COORD_TOKENS[k] for k in np.argsort(order)]
    strings = [bytes_to_byte_level(bytes([b])) for b in range(256)] + list(TOY_SPECIALS) + coord_strings
    table = tuple(byte_level_token_bytes(strings, added_tokens=(*TOY_SPECIALS, *COORD_TOKENS)))
    vocab = CoordVocab.from_lookup(
        {token: _TOY_COORD_BASE + index for index, token in enumerate(coord_strings)}, TOY_VOCAB_CAPACITY
    )
    return table, vocab


def toy_token_bytes() -> tuple[bytes, ...]:
    """The fixed part of the toy table (index = id): 256 byte tokens, 2 eos tokens, 1000 coord tokens."""
    return _toy_base()[0]


def toy_coord_vocab() -> CoordVocab:
    """The :class:`CoordVocab` of every :class:`ToyTokenization` (non-contiguous, shuffled ids)."""
    return _toy_base()[1]


@attrs.frozen
class ToyTokenization:
    """Token ids over a toy vocabulary whose table ``token_bytes`` (index = id) grows per example.

    Ids 0..255 are single bytes, :data:`TOY_EOS_ID` is ``<|im_end|>``, :data:`TOY_ENDOFTEXT_ID`
    ``<|endoftext|>``, then the 1000 coord tokens (see :func:`toy_coord_vocab`), then one id per
    distinct multi-byte chunk drawn for this example.
    """

    token_ids: tuple[int, ...]
    token_bytes: tuple[bytes, ...]
    vocab: CoordVocab


_COORD_BIN = {token: k for k, token in enumerate(COORD_TOKENS)}


def _coord_literal_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    start = text.find("<|coord_")
    while start >= 0:
        close = text.find("|>", start)
        if close < 0:
            break
        literal = text[start : close + 2]
        if literal in _COORD_BIN:
            spans.append((start, close + 2))
            start = text.find("<|coord_", close + 2)
        else:
            start = text.find("<|coord_", start + 1)
    return spans


@st.composite
def byte_tokenizations(
    draw: st.DrawFn,
    text: str,
    max_chunk: int = 6,
    special_eos_literal: bool = True,
) -> ToyTokenization:
    """Tokenize ``text`` without a tokenizer, like a byte-level BPE with added tokens would.

    Every canonical ``<|coord_k|>`` literal in ``text`` (also inside strings, as real added-token
    splitting does) becomes its coord token; ``<|im_end|>`` becomes :data:`TOY_EOS_ID` when
    ``special_eos_literal``; everything else is cut into random chunks of 1..``max_chunk`` UTF-8
    bytes, so multi-byte characters are regularly split across tokens.
    """
    base, vocab = _toy_base()
    rng = draw(st.randoms(use_true_random=False))
    table = list(base)
    chunk_ids: dict[bytes, int] = {}
    ids: list[int] = []

    def add_plain(segment: str) -> None:
        data = segment.encode("utf-8")
        at = 0
        while at < len(data):
            size = rng.randint(1, max_chunk)
            chunk = data[at : at + size]
            at += size
            if len(chunk) == 1:
                ids.append(chunk[0])
                continue
            if chunk not in chunk_ids:
                chunk_ids[chunk] = len(table)
                table.append(chunk)
            ids.append(chunk_ids[chunk])

    specials: list[tuple[int, int, int]] = [
        (start, end, vocab.id_of(_COORD_BIN[text[start:end]])) for start, end in _coord_literal_spans(text)
    ]
    if special_eos_literal:
        at = text.find(EOS_LITERAL)
        while at >= 0:
            specials.append((at, at + len(EOS_LITERAL), TOY_EOS_ID))
            at = text.find(EOS_LITERAL, at + len(EOS_LITERAL))
    cursor = 0
    for start, end, token_id in sorted(specials):
        if start < cursor:
            continue
        add_plain(text[cursor:start])
        ids.append(token_id)
        cursor = end
    add_plain(text[cursor:])
    if len(table) > TOY_VOCAB_CAPACITY:
        raise ValueError(f"toy tokenization needs {len(table)} ids, above {TOY_VOCAB_CAPACITY}")
    return ToyTokenization(tuple(ids), tuple(table), vocab)
