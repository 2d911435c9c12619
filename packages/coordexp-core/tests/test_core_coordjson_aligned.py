"""Token-aligned parsing (spec 03 §3.2, D44; invariants 07 E1, E3, E5)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.coordjson.aligned import (
    BYTE_TO_UNICODE,
    EOS_LITERAL,
    HardStop,
    TokenBytesError,
    TokenText,
    byte_level_token_bytes,
    bytes_to_byte_level,
    extract_coord_positions,
    hard_stop,
    parse_tokens,
    token_char_spans,
)
from coordexp.core.coordjson.parse import parse
from coordexp.core.coordjson.serialize import CoordObject, serialize, serialize_with_spans
from coordexp.testing.strategies import (
    TOY_ENDOFTEXT_ID,
    TOY_EOS_ID,
    byte_tokenizations,
    canonical_coordjson,
    toy_coord_vocab,
    toy_token_bytes,
)

EOS_IDS = (TOY_EOS_ID, TOY_ENDOFTEXT_ID)
CAT = CoordObject("black cat", "bbox_2d", (50, 100, 500, 501))
SIGN = CoordObject("road sign", "poly", (300, 200, 360, 260, 240, 260))
MUG = CoordObject("mug", "bbox_2d", (610, 420, 700, 555))


def _byte_ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def _tokenize(text: str, spelled_out: tuple[tuple[int, int], ...] = ()) -> list[int]:
    """Deterministic toy tokenization: one id per byte, each canonical coord literal as its coord
    token unless its span is in ``spelled_out``, and ``<|im_end|>`` as the eos token."""
    vocab = toy_coord_vocab()
    ids: list[int] = []
    at = 0
    while at < len(text):
        if text.startswith(EOS_LITERAL, at):
            ids.append(TOY_EOS_ID)
            at += len(EOS_LITERAL)
            continue
        close = text.find("|>", at) if text.startswith("<|coord_", at) else -1
        if close >= 0 and text[at : close + 2] in COORD_TOKENS and (at, close + 2) not in spelled_out:
            ids.append(vocab.id_of(COORD_TOKENS.index(text[at : close + 2])))
            at = close + 2
            continue
        ids.extend(_byte_ids(text[at]))
        at += 1
    return ids


def _run(ids, **kwargs):
    return parse_tokens(ids, toy_token_bytes(), toy_coord_vocab(), EOS_IDS, **kwargs)


# --- byte-level tables -----------------------------------------------------------------------


def test_byte_alphabet_shape():
    assert len(set(BYTE_TO_UNICODE)) == 256
    assert all(char.isprintable() and not char.isspace() for char in BYTE_TO_UNICODE)
    assert BYTE_TO_UNICODE[ord(" ")] == "\u0120" and BYTE_TO_UNICODE[ord("\n")] == "\u010a"
    assert BYTE_TO_UNICODE[0xAD] == "\u0143" and BYTE_TO_UNICODE[0x7F] == "\u0121"
    assert BYTE_TO_UNICODE[ord("a")] == "a" and BYTE_TO_UNICODE[0xE9] == "\u00e9"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=10))
def test_byte_level_roundtrip(chunks):
    strings = [bytes_to_byte_level(chunk) for chunk in chunks]
    assert byte_level_token_bytes(strings, added_tokens=()) == chunks


def test_added_tokens_map_to_their_utf8_text():
    table = byte_level_token_bytes(
        ["<|im_end|>", "\u0120cat", "<|coord_7|>", "h\u00e9"], ["<|im_end|>", "<|coord_7|>"]
    )
    assert table == [b"<|im_end|>", b" cat", b"<|coord_7|>", b"h\xe9"]


@pytest.mark.parametrize("bad", [" cat", "\x00", "\u20ac", "tab\t", None])
def test_non_byte_level_strings_are_rejected(bad):
    with pytest.raises(TokenBytesError, match="token id 1"):
        byte_level_token_bytes(["ok", bad], added_tokens=())


# --- E1: byte-based spans --------------------------------------------------------------------


def _random_chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in pairwise(points)]
    return chunks or [b""]


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=30), st.lists(st.integers(0, 200), max_size=40))
def test_e1_spans_cover_split_multibyte_characters(text, cuts):
    data = text.encode("utf-8")
    chunks = _random_chunks(data, cuts)
    spans = token_char_spans(chunks)
    assert spans.text == text and len(spans) == len(chunks)
    # oracle: the characters whose bytes intersect the token's bytes
    char_of_byte = [i for i, char in enumerate(text) for _ in char.encode("utf-8")]
    offset = 0
    for chunk, start, end in zip(chunks, spans.starts.tolist(), spans.ends.tolist()):
        if chunk:
            covered = char_of_byte[offset : offset + len(chunk)]
            assert (start, end) == (covered[0], covered[-1] + 1)
        else:
            assert start == end
        offset += len(chunk)
    covered_chars = set()
    for start, end in zip(spans.starts.tolist(), spans.ends.tolist()):
        covered_chars.update(range(start, end))
    assert covered_chars == set(range(len(text)))
    assert np.all(np.diff(spans.starts) >= 0) and np.all(np.diff(spans.ends) >= 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.lists(st.integers(0, 40), max_size=20))
def test_e1_invalid_utf8_decodes_like_replace(data, cuts):
    chunks = _random_chunks(data, cuts)
    spans = token_char_spans(chunks)
    assert spans.text == data.decode("utf-8", errors="replace")
    assert np.all(np.diff(spans.starts) >= 0) and np.all(np.diff(spans.ends) >= 0)
    assert np.all(spans.starts <= spans.ends)
    for chunk, start, end in zip(chunks, spans.starts.tolist(), spans.ends.tolist()):
        assert (end > start) == bool(chunk)
    covered = set()
    for start, end in zip(spans.starts.tolist(), spans.ends.tolist()):
        covered.update(range(start, end))
    assert covered == set(range(len(spans.text)))


def test_e1_split_example():
    data = "h\u00e9\U0001f600".encode()  # 1 + 2 + 4 bytes
    spans = token_char_spans([data[:2], data[2:4], data[4:6], data[6:]])
    assert spans.starts.tolist() == [0, 1, 2, 2] and spans.ends.tolist() == [2, 3, 3, 3]
    replaced = token_char_spans([b"a\xe2\x82", b"b\xff", b"\xf0\x9f", b""])
    assert replaced.text == "a\ufffdb\ufffd\ufffd"
    assert replaced.starts.tolist() == [0, 2, 4, 5] and replaced.ends.tolist() == [2, 4, 5, 5]


# --- hard stop -------------------------------------------------------------------------------


def _stop(ids):
    table = toy_token_bytes()
    return hard_stop(ids, token_char_spans([table[i] for i in ids]), EOS_IDS)


def test_hard_stop_cases():
    body = _byte_ids('{"objects": []}')
    assert _stop(body + [TOY_EOS_ID] + _byte_ids("junk")) == HardStop(len(body), len(body), True, "eos_id")
    assert _stop(body + [TOY_ENDOFTEXT_ID]).kind == "eos_id"
    fused = _stop(body + _byte_ids("<|im_end|>") + [TOY_EOS_ID])
    assert (fused.n_tokens, fused.n_chars, fused.ends_with_eos, fused.kind) == (
        len(body),
        len(body),
        True,
        "eos_literal",
    )
    straddling = _stop(body + _byte_ids("<|im_e") + _byte_ids("nd|>"))
    assert straddling.n_chars == len(body) and straddling.kind == "eos_literal"
    assert _stop(body) == HardStop(len(body), len(body), False, "none")
    assert _stop([]) == HardStop(0, 0, False, "none")
    with pytest.raises(ValueError, match="token spans"):
        hard_stop([1, 2], token_char_spans([b"a"]), EOS_IDS)
    with pytest.raises(ValueError, match="eos_literal"):
        hard_stop([1], token_char_spans([b"a"]), EOS_IDS, eos_literal="")


def test_hard_stop_literal_inside_a_token_keeps_the_straddling_token():
    spans = token_char_spans([b"]}", b"}<|im", b"_end|>"])
    stop = hard_stop([1, 2, 3], spans, EOS_IDS)
    assert (stop.n_tokens, stop.n_chars) == (2, 3)
    kept = spans.truncated(stop.n_tokens, stop.n_chars)
    assert kept.text == "]}}" and kept.ends.tolist() == [2, 3]


# --- E5 and extraction -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_e5_extraction_of_canonical_rollouts(data):
    sample = data.draw(canonical_coordjson())
    tokens = data.draw(byte_tokenizations(sample.text + EOS_LITERAL))
    aligned = parse_tokens(
        tokens.token_ids, tokens.token_bytes, tokens.vocab, EOS_IDS, field_order=sample.field_order
    )
    assert aligned.stop.ends_with_eos and aligned.stop.kind == "eos_id"
    result = aligned.result
    assert result.strict_ok and result.objects() == list(sample.objects)
    assert result.drop_counts.total == 0
    ids = np.asarray(tokens.token_ids)
    for record in result.records:
        positions = aligned.positions_of(record.index)
        assert len(positions) == len(record.values)
        assert all(a < b for a, b in pairwise(positions))
        assert tokens.vocab.bins_of_array(ids[list(positions)]).tolist() == list(record.values)
        geom_start, geom_end = record.geom_span
        for position in positions:
            start, end = aligned.token_text.starts[position], aligned.token_text.ends[position]
            assert geom_start <= start < end <= geom_end


def test_values_come_from_ids_and_disagreement_is_misaligned():
    text = serialize([CAT, SIGN, MUG], "desc_first")
    layout = serialize_with_spans([CAT, SIGN, MUG], "desc_first")
    spelled = (layout.coord_spans[1][2],)  # one literal of SIGN typed as plain characters
    aligned = _run(_tokenize(text, spelled))
    assert [r.drop_reason for r in aligned.result.records] == [None, "coord_misaligned", None]
    assert aligned.result.drop_counts["coord_misaligned"] == 1
    assert aligned.coord_positions[1] == () and len(aligned.coord_positions[2]) == 4
    assert aligned.result.objects() == [CAT, MUG]


def test_bins_disagreeing_with_text_are_misaligned():
    text = serialize([CAT], "desc_first")
    ids = _tokenize(text)
    spans = token_char_spans([toy_token_bytes()[i] for i in ids])
    result = parse(spans.text)
    vocab = toy_coord_vocab()
    swapped = list(ids)
    swapped[swapped.index(vocab.id_of(100))] = vocab.id_of(101)  # same text spans, other bin
    assert extract_coord_positions(result, spans, ids, vocab).result.objects() == [CAT]
    misaligned = extract_coord_positions(result, spans, swapped, vocab)
    assert misaligned.result.records[0].drop_reason == "coord_misaligned"
    with pytest.raises(ValueError, match="token spans"):
        extract_coord_positions(result, spans, ids[:-1], vocab)


def test_misalignment_updates_field_order_mismatch():
    objects = [CAT, MUG]
    text = serialize(objects, "geometry_first")
    layout = serialize_with_spans(objects, "geometry_first")
    clean = _run(_tokenize(text), field_order="desc_first")
    assert clean.result.field_order_mismatch == 2
    broken = _run(_tokenize(text, (layout.coord_spans[0][0],)), field_order="desc_first")
    assert broken.result.field_order_mismatch == 1 and broken.result.drop_counts["coord_misaligned"] == 1


def test_coord_token_inside_a_desc_is_not_a_coordinate():
    obj = CoordObject("see <|coord_7|> here", "bbox_2d", (1, 2, 3, 4))
    text = serialize([obj], "geometry_first")
    ids = _tokenize(text)
    assert toy_coord_vocab().id_of(7) in ids
    aligned = _run(ids)
    assert aligned.result.objects() == [obj]
    assert [ids[p] for p in aligned.coord_positions[0]] == [toy_coord_vocab().id_of(k) for k in (1, 2, 3, 4)]


def test_tensor_ids_and_table_range():
    ids = _tokenize(serialize([CAT], "desc_first")) + [TOY_EOS_ID]
    assert _run(torch.tensor(ids)) == _run(ids) == _run(np.array(ids, dtype=np.int32))
    with pytest.raises(ValueError, match="token_bytes table"):
        _run(ids + [len(toy_token_bytes())])
    with pytest.raises(ValueError, match="one-dimensional"):
        _run(torch.tensor([ids]))


# --- E3 --------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_e3_nothing_after_the_hard_stop_matters(data):
    sample = data.draw(canonical_coordjson(max_objects=4))
    cut = data.draw(st.integers(0, len(sample.text)))  # rollouts may stop anywhere
    fused = data.draw(st.booleans())
    tokens = data.draw(byte_tokenizations(sample.text[:cut] + EOS_LITERAL, special_eos_literal=not fused))
    table_size = len(tokens.token_bytes)
    junk = st.lists(
        st.one_of(
            st.integers(0, table_size - 1),
            st.sampled_from((*EOS_IDS, tokens.vocab.id_of(5), ord("}"), ord("]"))),
        ),
        max_size=12,
    )

    def run(tail):
        ids = list(tokens.token_ids) + tail
        return parse_tokens(ids, tokens.token_bytes, tokens.vocab, EOS_IDS, mode="rollout")

    reference = run([])
    assert reference.stop.ends_with_eos and reference.stop.kind == ("eos_literal" if fused else "eos_id")
    assert reference.token_text.text == sample.text[:cut]
    for _ in range(3):
        assert run(data.draw(junk)) == reference
    expected = parse(sample.text[:cut], "rollout")
    assert reference.result.valid_records == expected.valid_records


def test_e3_fused_literal_after_a_split_character():
    text = serialize([CoordObject("caf\u00e9", "bbox_2d", (1, 2, 3, 4))], "desc_first")
    data = text.encode()
    split = data.index(b"\xc3") + 1  # cut inside the 2-byte é
    table = list(toy_token_bytes()) + [data[:split], data[split:] + b"<|im", b"_end|>", b"\xe2\x82"]
    base = len(toy_token_bytes())
    reference = parse_tokens([base, base + 1, base + 2], table, toy_coord_vocab(), EOS_IDS)
    with_junk = parse_tokens([base, base + 1, base + 2, base + 3, 5], table, toy_coord_vocab(), EOS_IDS)
    assert reference == with_junk
    # the coordinates were typed as text, so the record is misaligned, not silently accepted
    assert reference.result.records[0].drop_reason == "coord_misaligned"
    assert reference.token_text.text == text


# --- 30-object rollout ------------------------------------------------------------------------------------


def test_rollout_of_30_objects_parses_from_a_tensor():
    # Speed is measured by bench/parse_scaling.py; this checks the 30-object case's result.
    objects = [CoordObject(f"object {i}", "bbox_2d", (i, 2 * i, 10 * i + 5, 20 * i + 9)) for i in range(30)]
    ids = _tokenize(serialize(objects, "desc_first")) + [TOY_EOS_ID]
    aligned = _run(torch.tensor(ids))
    assert aligned.result.objects() == objects


def test_token_text_equality_and_cut_validation():
    spans = token_char_spans([b"ab", b"c"])
    assert spans == TokenText("abc", np.array([0, 2]), np.array([2, 3]))
    assert spans != TokenText("abc", np.array([0, 1]), np.array([2, 3]))
    with pytest.raises(ValueError, match="cannot cut"):
        spans.truncated(3, 1)
