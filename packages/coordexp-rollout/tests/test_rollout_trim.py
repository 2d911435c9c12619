"""Suffix-only trimming to an append-ready prefix (spec 03 §3.3; invariant E2)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.coordjson.aligned import hard_stop, token_char_spans
from coordexp.core.coordjson.parse import parse
from coordexp.core.coordjson.serialize import OPEN_PREFIX, CoordObject, serialize
from coordexp.core.errors import CoordexpError
from coordexp.rollout.codec import TableCodec
from coordexp.rollout.testing import tiny_test_codec
from coordexp.rollout.trim import (
    NO_CONTAINER,
    NO_OPEN_END,
    NOT_APPEND_READY,
    RETOKENIZE_FAIL,
    fallback_prefix_ids,
    invalid_trim,
    is_append_ready,
    trim_rollout,
)
from coordexp.testing.strategies import (
    TOY_ENDOFTEXT_ID,
    TOY_EOS_ID,
    canonical_coordjson,
    toy_coord_vocab,
    toy_token_bytes,
)

CODEC = tiny_test_codec()
CAT = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
DOG = CoordObject("dog", "poly", (500, 500, 700, 520, 600, 700))
_LITERAL = re.compile(r"<\|coord_\d{1,4}\|>|<\|im_end\|>|<\|endoftext\|>")


def toy_codec(extra_tokens: tuple[bytes, ...] = ()) -> TableCodec:
    """Byte-per-id codec over the shared toy vocabulary, plus ``extra_tokens`` (ids from 1258 on)."""
    vocab = toy_coord_vocab()
    specials = {"<|im_end|>": TOY_EOS_ID, "<|endoftext|>": TOY_ENDOFTEXT_ID}
    specials.update({token: vocab.id_of(k) for k, token in enumerate(COORD_TOKENS)})

    def encode(text: str) -> list[int]:
        out: list[int] = []
        cursor = 0
        for found in _LITERAL.finditer(text):
            if found.group() in specials:
                out += text[cursor : found.start()].encode("utf-8")
                out.append(specials[found.group()])
                cursor = found.end()
        return out + list(text[cursor:].encode("utf-8"))

    table = toy_token_bytes() + extra_tokens
    return TableCodec(encode, table, vocab, TOY_EOS_ID, {TOY_EOS_ID, TOY_ENDOFTEXT_ID})


def run_trim(ids, codec=CODEC):
    """The §3.2 steps before trimming (spans, hard stop, parse) and the trim itself."""
    ids = np.asarray(ids, dtype=np.int64)
    per_token = codec.token_bytes(ids)
    full = token_char_spans(per_token)
    stop = hard_stop(ids, full, codec.stop_ids)
    kept = full.truncated(stop.n_tokens, stop.n_chars)
    result = parse(kept.text, "rollout")
    n = stop.n_tokens
    trim = trim_rollout(
        ids[:n],
        per_token[:n],
        full.starts[:n],
        full.ends[:n],
        kept.text,
        result,
        codec,
        fallback_prefix_ids(codec),
    )
    return trim, kept.text, result


def assert_suffix_only(trim, ids, codec=CODEC) -> None:
    """E2: ids unchanged up to the cut, at most the last token replaced (by a byte prefix of it),
    the prefix decodes to the text up to the cut and is append-ready."""
    ids = [int(i) for i in ids]
    k = trim.kept_tokens
    assert list(trim.prefix_ids[:k]) == ids[:k]
    assert trim.prefix_ids[k:] == trim.replacement
    if trim.replacement:
        replaced = b"".join(codec.token_bytes(trim.replacement))
        assert replaced and codec.token_bytes([ids[k]])[0].startswith(replaced)
        assert replaced != codec.token_bytes([ids[k]])[0]
    assert b"".join(codec.token_bytes(trim.prefix_ids)).decode("utf-8", "replace") == trim.prefix_text
    assert is_append_ready(trim.prefix_text)


@settings(max_examples=150, deadline=None)
@given(sample=canonical_coordjson(max_objects=5), data=st.data())
def test_truncated_canonical_rollouts_trim_suffix_only(sample, data) -> None:
    ids = CODEC.encode(sample.text)
    n = data.draw(st.integers(0, len(ids)), label="tokens generated")
    trim, text, result = run_trim(ids[:n])
    if not trim.valid:
        assert trim.invalid_reason in (NO_CONTAINER, NO_OPEN_END)
        assert trim.prefix_ids == tuple(CODEC.encode(OPEN_PREFIX))
        assert result.open_end is None
        return
    assert trim.cut == result.complete_end
    assert trim.prefix_text == text[: trim.cut]
    assert_suffix_only(trim, ids)
    # the prefix holds exactly the complete elements of the truncated text (B5 at the token level)
    reparsed = parse(trim.prefix_text, "rollout")
    assert [r.span for r in reparsed.records] == [r.span for r in result.records]
    assert reparsed.objects() == result.objects()
    complete = [
        obj
        for obj, (_, end) in zip(sample.objects, sample.layout.record_spans, strict=True)
        if end <= len(text)
    ]
    assert result.objects() == complete


@settings(max_examples=100, deadline=None)
@given(sample=canonical_coordjson(min_objects=1, max_objects=4), data=st.data())
def test_arbitrary_token_boundaries_trim_suffix_only(sample, data) -> None:
    """Generated ids need not be the canonical tokenization: cut the text anywhere into pieces and
    encode each piece alone, so any token may straddle a record end."""
    text = sample.text
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12), label="piece boundaries"))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    ids = [i for piece in pieces for i in CODEC.encode(piece)]
    n = data.draw(st.integers(0, len(ids)), label="tokens generated")
    trim, text_cut, result = run_trim(ids[:n])
    if trim.valid:
        assert_suffix_only(trim, ids)
        assert trim.prefix_text == text_cut[: result.complete_end]
    else:
        assert trim.prefix_ids == fallback_prefix_ids(CODEC)


def test_fused_separator_token_is_retokenized() -> None:
    text = serialize([CAT, DOG], "geometry_first")[:-2] + ', {"desc": "tr'
    ids = CODEC.encode(text)
    pieces = CODEC.token_bytes(ids)
    assert b'"},' in pieces  # the BPE fuses the record end with the separator
    trim, _, result = run_trim(ids)
    assert trim.valid and trim.retokenized
    assert trim.prefix_text.endswith('"dog"}')
    assert trim.replacement == tuple(CODEC.encode('"}'))
    assert pieces[trim.kept_tokens] == b'"},'
    assert_suffix_only(trim, ids)
    assert len(result.records) == 2


def test_closed_container_cuts_before_the_closure() -> None:
    text = serialize([CAT, DOG], "geometry_first")
    ids = CODEC.encode(text) + [CODEC.eos_id]
    assert CODEC.token_bytes(ids)[-2] == b'"}]}'
    trim, _, _ = run_trim(ids)
    assert trim.valid and trim.prefix_text == text[:-2]
    assert trim.replacement == tuple(CODEC.encode('"}'))
    assert_suffix_only(trim, ids)


def test_empty_container_keeps_the_open_prefix() -> None:
    ids = CODEC.encode('{"objects": []}')
    trim, _, _ = run_trim(ids)
    assert trim.valid and trim.prefix_text == OPEN_PREFIX
    assert b"".join(CODEC.token_bytes(trim.prefix_ids)) == OPEN_PREFIX.encode()
    assert_suffix_only(trim, ids)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", NO_CONTAINER),
        ("   ", NO_CONTAINER),
        ('Sure! {"objects": [', NO_CONTAINER),
        ('{"objects": ', NO_OPEN_END),
        ('{"obj', NO_OPEN_END),
        ('{"items": [', NO_CONTAINER),
        ('{"objects": [5, {"desc": "x"', NOT_APPEND_READY),
        ('{"objects": ["just text"]}', NOT_APPEND_READY),
    ],
)
def test_invalid_rollouts_get_the_canonical_prefix(text, reason) -> None:
    trim, _, _ = run_trim(CODEC.encode(text))
    assert not trim.valid and trim.invalid_reason == reason
    assert trim.prefix_ids == tuple(CODEC.encode(OPEN_PREFIX))
    assert trim.prefix_text == OPEN_PREFIX and trim.open_end == len(OPEN_PREFIX)
    assert trim.cut is None and trim.kept_tokens == 0


def test_whitespace_after_the_last_record_is_append_ready() -> None:
    assert is_append_ready('{"objects": [ \n')
    assert is_append_ready('{"objects": [{"a": 1}  \t')
    assert not is_append_ready('{"objects": [{"a": 1},')
    assert not is_append_ready("")


def _rollout_with_token(
    token: bytes, head: str, tail: str, raw_bytes: bytes = b""
) -> tuple[TableCodec, list[int]]:
    """Toy ids of ``head``, then one id per byte of ``raw_bytes``, the extra ``token``, ``tail``."""
    codec = toy_codec((token,))
    ids = codec.encode(head) + list(raw_bytes) + [len(toy_token_bytes())] + codec.encode(tail)
    return codec, ids


def test_straddler_starting_inside_a_character_fails_retokenization() -> None:
    # "é" is c3 a9; the straddling token starts with the continuation byte a9
    head = '{"objects": [{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "desc": "caf'
    codec, ids = _rollout_with_token(b'\xa9"},', head, ' {"desc', raw_bytes=b"\xc3")
    full = b"".join(codec.token_bytes(ids)).decode()
    assert 'caf\u00e9"}, {"desc' in full
    trim, _, result = run_trim(ids, codec)
    assert len(result.records) == 1
    assert trim.invalid_reason == RETOKENIZE_FAIL
    assert trim.prefix_ids == fallback_prefix_ids(codec)


def test_straddler_holding_invalid_utf8_fails_retokenization() -> None:
    head = '{"objects": [{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "desc": "x'
    codec, ids = _rollout_with_token(b'\xff"},', head, ' {"desc')
    trim, text, result = run_trim(ids, codec)
    assert "\ufffd" in text and len(result.records) == 1 and result.records[0].valid
    assert trim.invalid_reason == RETOKENIZE_FAIL


def test_straddler_with_clean_bytes_is_replaced() -> None:
    head = '{"objects": [{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "desc": "x'
    codec, ids = _rollout_with_token(b'"}, {', head, '"desc')
    trim, _, _ = run_trim(ids, codec)
    assert trim.valid and trim.replacement == tuple(codec.encode('"}'))
    assert_suffix_only(trim, ids, codec)


def test_fallback_prefix_must_round_trip() -> None:
    broken = TableCodec(
        lambda text: CODEC.encode(text.replace("objects", "object")),
        CODEC.token_bytes(range(1422)),
        CODEC.coord_vocab,
        CODEC.eos_id,
        CODEC.stop_ids,
    )
    with pytest.raises(CoordexpError, match="round-trip"):
        fallback_prefix_ids(broken)


def test_invalid_trim_rejects_unknown_reasons() -> None:
    with pytest.raises(CoordexpError, match="unknown invalid-rollout reason"):
        invalid_trim((1, 2), "because")
