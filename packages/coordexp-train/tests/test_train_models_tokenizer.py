"""Tokenizers: bundled BPE asset, id layouts, coord tokens as normal added tokens, byte mapping."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.errors import CoordVocabError
from coordexp.train.models import (
    CHAT_TEMPLATE,
    add_coord_tokens,
    build_tiny_tokenizer,
    coord_vocab_for,
    load_qwen3_tokenizer,
    present_coord_tokens,
    token_bytes_for,
    token_ids_of,
)
from coordexp.train.models.bpe_training import TINY_BPE_VOCAB_SIZE, train_tiny_bpe
from coordexp.train.models.special_tokens import CHAT_SPECIAL_TOKENS, ENDOFTEXT, IM_END
from coordexp.train.models.tokenizer import BUNDLED_BPE_ASSET

ANSWER = (
    '{"objects": [{"desc": "café \\"x\\"", "bbox_2d": '
    "[<|coord_5|>, <|coord_60|>, <|coord_700|>, <|coord_999|>]}]}"
)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def qwen3():
    return load_qwen3_tokenizer()


def test_bundled_asset_is_what_the_generator_produces():
    assert BUNDLED_BPE_ASSET.read_text(encoding="utf-8") == train_tiny_bpe().to_str(pretty=True) + "\n"


def test_bundled_id_layout(tiny):
    assert len(tiny) == 2048
    assert token_ids_of(tiny, CHAT_SPECIAL_TOKENS) == list(
        range(TINY_BPE_VOCAB_SIZE, TINY_BPE_VOCAB_SIZE + 7)
    )
    assert coord_vocab_for(tiny).ids == tuple(range(1048, 2048))
    assert tiny.eos_token == IM_END and tiny.pad_token == ENDOFTEXT
    assert tiny.chat_template == CHAT_TEMPLATE


@pytest.mark.parametrize("which", ["tiny", "qwen3"])
def test_coord_tokens_are_normal_added_tokens_and_survive_decoding(which, request):
    tok = request.getfixturevalue(which)
    decoder = tok.added_tokens_decoder
    coord_ids = coord_vocab_for(tok).ids
    assert not any(decoder[i].special for i in coord_ids)
    assert all(decoder[i].special for i in token_ids_of(tok, CHAT_SPECIAL_TOKENS))
    ids = tok.encode(ANSWER + IM_END, add_special_tokens=False)
    assert sum(i in set(coord_ids) for i in ids) == 4
    assert tok.decode(ids, skip_special_tokens=False) == ANSWER + IM_END
    assert tok.decode(ids, skip_special_tokens=True) == ANSWER


def test_real_qwen3_ids(qwen3):
    assert len(qwen3) == 152669
    assert token_ids_of(qwen3, ["<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|endoftext|>"]) == [
        151645,
        151652,
        151655,
        151643,
    ]
    assert coord_vocab_for(qwen3).ids == tuple(range(151669, 152669))
    assert qwen3.chat_template == CHAT_TEMPLATE


def test_real_qwen3_without_coord_tokens():
    tok = load_qwen3_tokenizer(with_coord_tokens=False)
    assert len(tok) == 151669
    assert present_coord_tokens(tok) == []
    with pytest.raises(CoordVocabError, match="do not encode to a single id"):
        coord_vocab_for(tok)


@pytest.mark.parametrize("which", ["tiny", "qwen3"])
def test_save_pretrained_round_trip(which, request, tmp_path):
    tok = request.getfixturevalue(which)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = (
        "<|im_start|>user\nDetect  all\n\nobjects 红色<|im_end|>\n<|im_start|>assistant\n" + ANSWER + IM_END
    )
    assert len(loaded) == len(tok)
    assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert loaded.chat_template == tok.chat_template
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert coord_vocab_for(loaded).ids == coord_vocab_for(tok).ids
    ids = tok.encode(text, add_special_tokens=False)
    assert loaded.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def test_add_coord_tokens_refuses_a_second_time(tiny):
    fresh = build_tiny_tokenizer(with_coord_tokens=False)
    assert add_coord_tokens(fresh) == range(1048, 2048)
    with pytest.raises(CoordVocabError, match="already holds 1000 coord tokens"):
        add_coord_tokens(fresh)


def test_coord_vocab_for_checks_embedding_rows(tiny):
    assert coord_vocab_for(tiny, 4096).num_embeddings == 4096
    with pytest.raises(CoordVocabError, match="out of range"):
        coord_vocab_for(tiny, 2000)


_pieces = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(COORD_TOKENS[:3] + COORD_TOKENS[-3:])),
    max_size=6,
)


def _expected_bytes(pieces: list[str]) -> bytes:
    # The tokenizer NFC-normalizes the text between added tokens, never across them.
    return "".join(p if p in COORD_TOKENS else unicodedata.normalize("NFC", p) for p in pieces).encode(
        "utf-8"
    )


@pytest.mark.parametrize("which", ["tiny", "qwen3"])
def test_token_bytes_invert_byte_level(which, request):
    tok = request.getfixturevalue(which)

    @settings(max_examples=100, deadline=None)
    @given(_pieces)
    def check(pieces):
        text = "".join(pieces)
        if any(s in text for s in CHAT_SPECIAL_TOKENS):
            return
        ids = tok.encode(text, add_special_tokens=False)
        chunks = token_bytes_for(tok, ids)
        assert len(chunks) == len(ids)
        assert b"".join(chunks) == _expected_bytes(pieces)

    check()


def test_token_bytes_split_multibyte_characters(tiny):
    ids = tiny.encode("红", add_special_tokens=False)
    chunks = token_bytes_for(tiny, ids)
    assert b"".join(chunks) == "红".encode()
    assert len(chunks) > 1  # the tiny BPE has no merge for it: one token per UTF-8 byte


def test_token_bytes_rejects_unknown_ids(tiny):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        token_bytes_for(tiny, [len(tiny) + 5])
