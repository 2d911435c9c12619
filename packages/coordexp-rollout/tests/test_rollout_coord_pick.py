"""Expectation decoding of coord tokens (`ExpectedCoordProcessor`) on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from coordexp.core.errors import ConfigError
from coordexp.rollout.coord_pick import ExpectedCoordProcessor
from coordexp.rollout.decoding import DecodeParams

# A 12-token vocabulary whose coord tokens (bins 0..4) sit at scattered ids, not in id order.
COORD_IDS = [7, 2, 9, 4, 11]
V = 12
STEP = torch.zeros(1, 1, dtype=torch.long)  # the processor never reads the ids so far


def scores_with(coord_probs: list[float], other_mass: float) -> torch.Tensor:
    """One row of logits whose softmax gives the coord tokens `coord_probs` (normalised to
    1 − other_mass) and spreads `other_mass` evenly over the other tokens."""
    p = np.full(V, other_mass / (V - len(COORD_IDS)))
    coord = np.asarray(coord_probs, dtype=float)
    p[COORD_IDS] = coord / coord.sum() * (1 - other_mass)
    with np.errstate(divide="ignore"):  # a bin of probability 0 has logit −inf
        return torch.tensor(np.log(p), dtype=torch.float32)[None]


def picked(out: torch.Tensor) -> int:
    row = out[0]
    assert int(torch.isfinite(row).sum()) == 1 and float(row.max()) == 0.0  # a one-hot in log space
    return int(row.argmax())


def test_a_coord_step_emits_the_expected_bin_not_the_most_likely_one():
    # mode at bin 0, mean at 0.4·0 + 0.3·3 + 0.3·4 = 2.1 -> bin 2
    out = ExpectedCoordProcessor(COORD_IDS)(STEP, scores_with([4, 0, 0, 3, 3], 0.2))
    assert picked(out) == COORD_IDS[2]


def test_a_step_where_coords_hold_half_the_mass_or_less_is_left_alone():
    scores = scores_with([1, 1, 8, 1, 1], 0.5)
    assert torch.equal(ExpectedCoordProcessor(COORD_IDS)(STEP, scores), scores)


def test_rows_are_decided_one_by_one_and_ties_round_to_even():
    coord = scores_with([1, 0, 0, 1, 0], 0.1)  # mean 1.5 -> bin 2 (half to even)
    text = scores_with([1, 1, 1, 1, 1], 0.9)
    out = ExpectedCoordProcessor(COORD_IDS)(torch.zeros(2, 1, dtype=torch.long), torch.cat([coord, text]))
    assert picked(out[:1]) == COORD_IDS[2]
    assert torch.equal(out[1], text[0])


@given(
    arrays(np.float64, len(COORD_IDS), elements=st.floats(0.01, 1.0)),
    st.floats(0.0, 0.45),
)
def test_the_pick_is_within_half_a_bin_of_the_distributions_mean(coord_probs, other_mass):
    out = ExpectedCoordProcessor(COORD_IDS)(STEP, scores_with(list(coord_probs), other_mass))
    mean = float(np.dot(coord_probs / coord_probs.sum(), np.arange(len(COORD_IDS))))
    assert abs(COORD_IDS.index(picked(out)) - mean) <= 0.5 + 1e-4


def test_scores_keep_their_dtype_and_device():
    scores = scores_with([1, 2, 3, 4, 5], 0.1).to(torch.bfloat16)
    out = ExpectedCoordProcessor(COORD_IDS)(STEP, scores)
    assert out.dtype == torch.bfloat16 and math.isinf(float(out[0, 0]))


def test_bad_coord_ids_and_picks_are_rejected_with_their_key():
    with pytest.raises(ConfigError, match="distinct coord token ids"):
        ExpectedCoordProcessor([3, 3, 4])
    with pytest.raises(ConfigError, match="coord_pick") as info:
        DecodeParams(max_new_tokens=4, coord_pick="mean")
    assert "token, expectation" in str(info.value)
    sampling = DecodeParams(max_new_tokens=4, coord_pick="expectation", temperature=0.5)
    assert sampling.greedy().coord_pick == "expectation"
