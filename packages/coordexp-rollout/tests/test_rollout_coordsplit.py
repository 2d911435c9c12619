"""Piecewise encoding between coord tokens gives the tokenizer's own ids (spec 03 §3.3, §3.6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.coordjson.serialize import serialize_with_spans
from coordexp.core.errors import CoordVocabError
from coordexp.rollout import coordsplit
from coordexp.rollout.codec import TableCodec
from coordexp.rollout.coordsplit import CoordSplitEncoder, coord_tokens_split_text
from coordexp.rollout.testing import tiny_test_codec, tiny_test_tokenizer
from coordexp.testing.strategies import coord_object_lists, field_orders

pieces = st.sampled_from(
    ["", " ", ", ", "]}", '"}', "{", "é", "e\u0301", "中", "\n", "<|im_end|>", "<|coord_07|>", "x"]
)


@settings(max_examples=150, deadline=None)
@given(
    coord_object_lists(min_size=0), field_orders(), st.lists(pieces, max_size=4), st.sampled_from([", ", ""])
)
def test_piecewise_encode_equals_whole_encode(objects, field_order, junk, lead) -> None:
    codec = tiny_test_codec()
    assert codec.splits_at_coord_tokens
    text = serialize_with_spans(objects, field_order, head=lead, tail="]}").text + "".join(junk)
    whole = tiny_test_tokenizer().encode(text, add_special_tokens=False).ids
    assert codec.encode(text) == whole
    assert codec.encode(text) == whole  # again, from the memo


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordsplit, "MEMO_LIMIT", 8)
    tokenizer = tiny_test_tokenizer()
    encoder = CoordSplitEncoder(
        lambda text: tokenizer.encode(text, add_special_tokens=False).ids, tiny_test_codec().coord_vocab
    )
    for k in range(50):
        text = f"word{k}<|coord_{k}|>"
        assert encoder.encode(text) == tokenizer.encode(text, add_special_tokens=False).ids
    assert len(encoder._memo) <= 8


def _rstrip_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken("<|im_end|>", special=True, normalized=False)])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False, rstrip=True) for t in COORD_TOKENS])
    # byte-level alphabet so that every text encodes
    tokenizer.add_tokens([chr(c) for c in range(32, 127)])
    return tokenizer


def test_stripping_coord_tokens_do_not_qualify() -> None:
    tokenizer = _rstrip_tokenizer()
    assert not coord_tokens_split_text(tokenizer)
    assert tiny_test_codec().splits_at_coord_tokens and coord_tokens_split_text(tiny_test_tokenizer())
    codec = TableCodec.from_tokenizers(tokenizer)
    assert not codec.splits_at_coord_tokens
    # Declaring it anyway is caught by the probe texts.
    with pytest.raises(CoordVocabError, match="does not cut text at the coord tokens"):
        TableCodec(
            codec.encode_fn,
            codec.table,
            codec.coord_vocab,
            codec.eos_id,
            codec.stop_ids,
            splits_at_coord_tokens=True,
        )
