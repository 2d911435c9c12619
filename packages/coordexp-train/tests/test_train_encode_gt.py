"""GT encoding with the real bundled tokenizer (spec 01 §1.3–§1.5, 02 §2.1, 03 §3.2).

Any valid record renders to CoordJSON whose token-aligned parse recovers exactly its objects and
the coord-token indices the encoder labelled; labels exist only on the assistant span; every row
has exactly one type and eos sits only on `<|im_end|>`.
"""

from __future__ import annotations

import unicodedata

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson.aligned import parse_tokens
from coordexp.core.tokens import SpanKind, TokenType
from coordexp.testing.strategies import coord_object_lists, field_orders
from coordexp.train.encode.gt import encode_gt
from coordexp.train.encode.prompt import EncodedPrompt
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.models import build_tiny_tokenizer
from coordexp.train.models.tokenizer import vocab_token_bytes


@pytest.fixture(scope="module")
def info() -> TokenizerInfo:
    return TokenizerInfo.build(build_tiny_tokenizer())


def _prompt(n: int = 7) -> EncodedPrompt:
    return EncodedPrompt(
        text="p", input_ids=torch.arange(n), pixel_values=torch.zeros(4, 8), image_grid_thw=torch.tensor([[1, 2, 2]])
    )


def nfc_objects():
    """Object lists whose descs are NFC (the data contract's `desc_not_nfc` rule guarantees it)."""
    return coord_object_lists().map(
        lambda objs: [attrs.evolve(o, desc=unicodedata.normalize("NFC", o.desc)) for o in objs]
    )


@settings(max_examples=60, deadline=None)
@given(objects=nfc_objects(), field_order=field_orders())
def test_token_aligned_parse_recovers_objects_and_coord_indices(info, objects, field_order):
    prompt = _prompt()
    sample = encode_gt(info, prompt, objects, field_order=field_order, sample_id=0)
    rows = sample.rows
    assistant = sample.input_ids[sample.prompt_len :].tolist()
    parsed = parse_tokens(assistant, vocab_token_bytes(info.tokenizer), info.coord_vocab, info.stop_ids, mode="strict")
    assert parsed.result.objects() == list(objects)
    assert parsed.stop.ends_with_eos
    # coord token indices of the parse == the encoder's coord rows, object by object
    local = rows.positions - sample.prompt_len
    for i, record in enumerate(parsed.result.records):
        mine = local[(rows.object_index == i) & (rows.token_type == int(TokenType.COORD))]
        assert tuple(mine.tolist()) == parsed.positions_of(record.index)
        assert rows.coord_target[rows.object_index == i].tolist() == list(objects[i].values)


@settings(max_examples=40, deadline=None)
@given(objects=nfc_objects(), field_order=field_orders(), prompt_len=st.integers(1, 40))
def test_rows_cover_exactly_the_assistant_span_with_one_type_each(info, objects, field_order, prompt_len):
    sample = encode_gt(info, _prompt(prompt_len), objects, field_order=field_order, sample_id=0)
    rows = sample.rows
    assert rows.positions.tolist() == list(range(prompt_len, sample.length))
    assert set(np.unique(rows.token_type)) <= {t.value for t in TokenType}
    eos = rows.token_type == int(TokenType.EOS)
    assert eos.sum() == 1 and eos[-1] and rows.target_ids[-1] == info.eos_id
    assert (rows.span_kind[eos] == int(SpanKind.EOS)).all()
    coord = rows.token_type == int(TokenType.COORD)
    assert info.coord_mask[rows.target_ids[coord]].all()
    assert not info.coord_mask[rows.target_ids[~coord]].any()
    closure = rows.span_kind == int(SpanKind.CLOSURE)
    assert closure.any() and (rows.token_type[closure] == int(TokenType.STRUCT)).all()
    n_boxes = sum(o.geom_key == "bbox_2d" for o in objects)
    assert rows.n_groups == n_boxes
