"""The in-order shortcut of ``extract_coord_positions`` never changes its result (spec 03 §3.2; 07 E5).

``extract_coord_positions`` first tries ``_coord_tokens_in_record_order`` (every coord token belongs,
in order, to the valid records) and only otherwise runs the per-record searches. These tests run
each extraction twice — as shipped, and with the shortcut switched off — on canonical rollouts
whose ids were mutated at random (a coord id swapped for another bin, a coord literal spelled out
as bytes, a stray coord token inserted, the sequence cut), and require identical results.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.coordjson import aligned as aligned_mod
from coordexp.core.coordjson.aligned import EOS_LITERAL, extract_coord_positions, token_char_spans
from coordexp.core.coordjson.parse import parse
from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.testing.strategies import (
    byte_tokenizations,
    canonical_coordjson,
    toy_coord_vocab,
    toy_token_bytes,
)


@st.composite
def mutated_rollouts(draw: st.DrawFn) -> tuple[list[int], tuple[bytes, ...], object]:
    sample = draw(canonical_coordjson(max_objects=5))
    tokens = draw(byte_tokenizations(sample.text + EOS_LITERAL))
    vocab = tokens.vocab
    ids = list(tokens.token_ids)
    table = tokens.token_bytes
    for _ in range(draw(st.integers(0, 3))):
        coord_at = [k for k, i in enumerate(ids) if vocab.bins_of_array([i])[0] >= 0]
        op = draw(st.sampled_from(("swap_bin", "spell_out", "insert", "cut")))
        if op == "swap_bin" and coord_at:
            at = draw(st.sampled_from(coord_at))
            ids[at] = vocab.id_of(draw(st.integers(0, 999)))
        elif op == "spell_out" and coord_at:
            at = draw(st.sampled_from(coord_at))
            ids[at : at + 1] = list(table[ids[at]])  # the literal as single-byte tokens
        elif op == "insert":
            at = draw(st.integers(0, len(ids)))
            ids.insert(at, vocab.id_of(draw(st.integers(0, 999))))
        else:
            ids = ids[: draw(st.integers(0, len(ids)))]
    return ids, table, vocab


def _extract(ids, table, vocab):
    spans = token_char_spans([table[i] for i in ids])
    return extract_coord_positions(parse(spans.text, "rollout"), spans, ids, vocab)


@settings(max_examples=200, deadline=None)
@given(mutated_rollouts())
def test_in_order_shortcut_agrees_with_the_per_record_search(rollout) -> None:
    ids, table, vocab = rollout
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aligned_mod, "_coord_tokens_in_record_order", lambda *args: False)
        expected = _extract(ids, table, vocab)
    found = _extract(ids, table, vocab)
    assert found.result == expected.result
    assert found.coord_positions == expected.coord_positions


def _toy_ids(text: str) -> list[int]:
    """One id per byte, except each canonical coord literal, which is its coord token."""
    vocab = toy_coord_vocab()
    ids: list[int] = []
    at = 0
    while at < len(text):
        close = text.find("|>", at) if text.startswith("<|coord_", at) else -1
        if close >= 0:
            ids.append(vocab.id_of(COORD_TOKENS.index(text[at : close + 2])))
            at = close + 2
        else:
            ids.extend(text[at].encode("utf-8"))
            at += 1
    return ids


def test_shortcut_takes_the_usual_case_and_declines_a_stray_coord_token() -> None:
    text = serialize([CoordObject("cat", "bbox_2d", (1, 2, 3, 4))], "desc_first")
    vocab, table = toy_coord_vocab(), toy_token_bytes()
    for ids, taken in ((_toy_ids(text), True), (_toy_ids(text.replace("cat", "<|coord_9|>")), False)):
        spans = token_char_spans([table[i] for i in ids])
        result = parse(spans.text, "rollout")
        bins = vocab.bins_of_array(ids)
        coord_positions = (bins >= 0).nonzero()[0]
        positions: list[tuple[int, ...]] = [()] * len(result.records)
        valid = [r for r in result.records if r.valid]
        assert (
            aligned_mod._coord_tokens_in_record_order(valid, spans, bins, coord_positions, positions) is taken
        )
        # Taken: the record's four coord tokens; declined (a coord token inside the desc): untouched.
        assert positions == ([tuple(coord_positions.tolist())] if taken else [()])
        assert _extract(ids, table, vocab).result.objects() == result.objects()
