"""Codec: norm1000 bins, pixels, token strings and CoordVocab (spec 01 §1.2; invariants 07 A1–A5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core import codec
from coordexp.core.codec import (
    COORD_TOKENS,
    MAX_BIN,
    NUM_BINS,
    CoordVocab,
    bin_to_pixel,
    bin_to_pixel_int,
    coord_token,
    decode,
    encode,
    parse_coord_token,
    pixel_to_bin,
    round_half_up,
)
from coordexp.core.errors import CoordVocabError
from coordexp.testing.strategies import bins

unit_floats = st.floats(0.0, 1.0, allow_nan=False)


# --- A1 / A2 ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(unit_floats)
def test_a1_encode_range_and_roundtrip_error(c):
    k = encode(c)
    assert 0 <= k <= MAX_BIN
    assert abs(decode(k) - c) <= 1 / 1998 + 1e-12


def test_a1_edges():
    assert encode(0.0) == 0
    assert encode(1.0) == 999
    assert encode(-1e-9) == 0 and encode(1.0 + 1e-9) == 999  # float noise clamps
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            encode(bad)


@settings(max_examples=200, deadline=None)
@given(bins())
def test_a2_bin_roundtrips(k):
    assert encode(decode(k)) == k
    assert parse_coord_token(coord_token(k)) == k
    assert coord_token(k) == f"<|coord_{k}|>" == COORD_TOKENS[k]


@pytest.mark.parametrize(
    "bad",
    [
        "<|coord_1000|>",
        "<|coord_01|>",
        "<|coord_007|>",
        "<|coord_-1|>",
        "<|coord_|>",
        "<|coord_1.0|>",
        " <|coord_1|>",
        "<|coord_1|> ",
        "<|coord_\u0661|>",  # ARABIC-INDIC DIGIT ONE: not an ASCII digit
        "<coord_1>",
        "",
    ],
)
def test_a2_malformed_tokens_rejected(bad):
    with pytest.raises(ValueError, match="not a coord token"):
        parse_coord_token(bad)


def test_a2_token_and_decode_validate_bins():
    for bad in (-1, 1000, 1.0, True, "3"):
        with pytest.raises(ValueError):
            coord_token(bad)
        with pytest.raises(ValueError):
            decode(bad)
    assert len(COORD_TOKENS) == NUM_BINS == 1000 and len(set(COORD_TOKENS)) == 1000
    assert coord_token(np.int64(7)) == "<|coord_7|>"


# --- A3 --------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a3_integer_pixels_roundtrip(data):
    width = data.draw(st.integers(2, 1000))
    x = data.draw(st.integers(0, width - 1))
    assert bin_to_pixel_int(pixel_to_bin(x, width), width) == x


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a3_float_pixel_error_bound(data):
    width = data.draw(st.integers(2, 20000))
    x = data.draw(st.floats(0.0, float(width - 1)))
    back = bin_to_pixel(pixel_to_bin(x, width), width)
    assert abs(back - x) <= 0.5 * (width - 1) / 999 + 1e-9


def test_a3_degenerate_side_of_one_pixel():
    # max(1, W-1) keeps the divisor at 1 for W = 1.
    assert pixel_to_bin(0, 1) == 0 and pixel_to_bin(1, 1) == 999
    assert bin_to_pixel_int(999, 1) == 0  # clamped to W-1


def test_pixel_range_is_a_data_error():
    assert pixel_to_bin(640, 640) == 999  # x = W clamps
    for bad in (-0.001, 640.5, math.nan):
        with pytest.raises(ValueError, match="outside"):
            pixel_to_bin(bad, 640)
    for bad_size in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="image size"):
            pixel_to_bin(1, bad_size)


# --- A4 --------------------------------------------------------------------------------------


def test_a4_worked_example_640x480():
    width, height = 640, 480
    pixel_box = (32, 48, 320, 240)
    sizes = (width, height, width, height)
    assert [pixel_to_bin(v, s) for v, s in zip(pixel_box, sizes)] == [50, 100, 500, 501]
    assert [round(decode(k), 5) for k in (50, 100, 500, 501)] == [0.05005, 0.1001, 0.5005, 0.5015]
    back = [bin_to_pixel(k, s) for k, s in zip((50, 100, 500, 501), sizes)]
    assert [round(v, 2) for v in back] == [31.98, 47.95, 319.82, 240.22]
    assert [bin_to_pixel_int(k, s) for k, s in zip((50, 100, 500, 501), sizes)] == list(pixel_box)


def test_a4_check_1000x800():
    sizes = (1000, 800, 1000, 800)
    assert [bin_to_pixel_int(k, s) for k, s in zip((10, 20, 200, 220), sizes)] == [10, 16, 200, 176]


def test_a4_half_up_not_bankers():
    assert encode(0.5 / 999) == 1
    assert [round_half_up(v) for v in (0.5, 1.5, 2.5, -0.5, -1.5, 2.4999)] == [1, 2, 3, 0, -1, 2]
    with pytest.raises(ValueError):
        round_half_up(math.nan)


# --- vectorized twins ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(unit_floats, max_size=20), st.integers(1, 5000), st.lists(bins(), max_size=20))
def test_vectorized_twins_match_scalars(cs, size, ks):
    assert codec.encode_array(cs).tolist() == [encode(c) for c in cs]
    assert codec.decode_array(np.array(ks, dtype=np.int64)).tolist() == [decode(k) for k in ks]
    pixels = [c * size for c in cs]
    assert codec.pixels_to_bins(pixels, size).tolist() == [pixel_to_bin(x, size) for x in pixels]
    assert codec.bins_to_pixels(np.array(ks, dtype=np.int64), size).tolist() == [
        bin_to_pixel(k, size) for k in ks
    ]
    assert codec.bins_to_pixels_int(np.array(ks, dtype=np.int64), size).tolist() == [
        bin_to_pixel_int(k, size) for k in ks
    ]


def test_vectorized_twins_validate():
    with pytest.raises(ValueError, match="finite"):
        codec.encode_array([0.1, math.nan])
    with pytest.raises(ValueError, match="0..999"):
        codec.decode_array([0, 1000])
    with pytest.raises(ValueError, match="integer"):
        codec.decode_array([0.5])
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        codec.pixels_to_bins([1.0, 10.5], 10)


# --- A5: CoordVocab --------------------------------------------------------------------------


def _shuffled_lookup(seed: int = 0, offset: int = 5000) -> dict[str, int]:
    # Non-contiguous, non-monotone ids with gaps: contiguity is not required.
    ids = offset + 3 * np.random.default_rng(seed).permutation(NUM_BINS)
    return {token: int(i) for token, i in zip(COORD_TOKENS, ids)}


def test_a5_vocab_from_mapping_and_callable():
    lookup = _shuffled_lookup()
    vocab = CoordVocab.from_lookup(lookup, num_embeddings=9000)
    same = CoordVocab.from_lookup(lookup.get, num_embeddings=9000)
    assert torch.equal(vocab.coord_ids, same.coord_ids)
    assert vocab.coord_ids.dtype == torch.long and vocab.coord_ids.shape == (1000,)
    assert vocab.id_of(7) == lookup["<|coord_7|>"]
    assert vocab.min_id == min(lookup.values()) and vocab.max_id == max(lookup.values())


def test_a5_bins_of_is_the_inverse_and_keeps_shape():
    lookup = _shuffled_lookup()
    vocab = CoordVocab.from_lookup(lookup, num_embeddings=9000)
    ids = torch.tensor(
        [[lookup["<|coord_0|>"], 3, -100], [lookup["<|coord_999|>"], 8999, lookup["<|coord_5|>"] + 1]]
    )
    bins_ = vocab.bins_of(ids.to(torch.int32))
    assert bins_.dtype == torch.long and bins_.shape == ids.shape
    assert bins_.tolist() == [[0, -1, -1], [999, -1, -1]]
    assert vocab.is_coord(ids).tolist() == [[True, False, False], [True, False, False]]
    assert torch.equal(vocab.bins_of(vocab.coord_ids), torch.arange(1000))
    assert vocab.bins_of_array(np.array([lookup["<|coord_42|>"], -1, 10**9])).tolist() == [42, -1, -1]


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_bins_of_follows_the_ids_device(device):
    vocab = CoordVocab.from_lookup(_shuffled_lookup(), num_embeddings=9000)
    ids = vocab.coord_ids.flip(0).to(device)
    bins_ = vocab.bins_of(ids)
    assert bins_.device == ids.device
    assert bins_.cpu().tolist() == list(range(999, -1, -1))


def test_a5_missing_token_fails_at_startup():
    lookup = _shuffled_lookup()
    del lookup["<|coord_17|>"]
    with pytest.raises(CoordVocabError, match=r"1 missing: <\|coord_17\|>"):
        CoordVocab.from_lookup(lookup, num_embeddings=9000)


def test_a5_duplicated_id_fails_at_startup():
    lookup = _shuffled_lookup()
    lookup["<|coord_3|>"] = lookup["<|coord_900|>"]
    with pytest.raises(CoordVocabError, match=r"<\|coord_900\|> and <\|coord_3\|> share id"):
        CoordVocab.from_lookup(lookup, num_embeddings=9000)


def test_a5_unk_style_lookup_reports_duplicates():
    with pytest.raises(CoordVocabError, match="999 duplicated"):
        CoordVocab.from_lookup(lambda token: 0, num_embeddings=10)


def test_a5_out_of_range_id_fails_at_startup():
    lookup = _shuffled_lookup()
    with pytest.raises(CoordVocabError, match=r"out of range \[0, 7000\)"):
        CoordVocab.from_lookup(lookup, num_embeddings=7000)


def test_a5_direct_construction_is_validated():
    with pytest.raises(CoordVocabError, match="shape"):
        CoordVocab(torch.arange(999), 2000)
    with pytest.raises(CoordVocabError, match="integer"):
        CoordVocab(torch.arange(1000, dtype=torch.float32), 2000)
    ids = torch.arange(1000)
    ids[10] = 11
    with pytest.raises(CoordVocabError, match="distinct"):
        CoordVocab(ids, 2000)
    with pytest.raises(CoordVocabError, match="out of range"):
        CoordVocab(torch.arange(1000) - 1, 2000)
