"""Prediction scores (spec 06 §6.3) and fallback counting (invariant I5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.train.eval.evaluate import evaluate_records
from coordexp.train.eval.fixtures import simple_record
from coordexp.train.eval.records import GTItem, PredItem
from coordexp.train.eval.scores import ImageScores, score_prediction, score_predictions


def test_coord_logprob_is_exp_of_the_mean_log_probability() -> None:
    logprobs = [-5.0, -0.5, -1.0, -9.0, -1.5, -2.0]
    score, source = score_prediction(logprobs, [1, 2, 4, 5])
    assert source == "coord_logprob"
    assert score == pytest.approx(math.exp(-(0.5 + 1.0 + 1.5 + 2.0) / 4))
    # the geometric mean of the probabilities, not their mean
    assert score == pytest.approx(float(np.prod(np.exp([-0.5, -1.0, -1.5, -2.0])) ** 0.25))


def test_certain_tokens_score_one_and_tiny_probabilities_stay_positive() -> None:
    assert score_prediction([0.0, 0.0, 0.0, 0.0], [0, 1, 2, 3]) == (1.0, "coord_logprob")
    score, source = score_prediction([-1e4] * 4, [0, 1, 2, 3])
    assert source == "coord_logprob" and 0.0 < score < 1e-300


@pytest.mark.parametrize(
    ("logprobs", "positions"),
    [
        (None, [0, 1, 2, 3]),  # no trace
        ([-0.1, -0.1, -0.1], [0, 1, 2, 3]),  # position past the end
        ([-0.1] * 4, [-1, 0, 1, 2]),  # negative position
        ([-0.1] * 4, []),  # no coord tokens
        ([-0.1, float("nan"), -0.1, -0.1], [0, 1, 2, 3]),  # non-finite value
        ([-0.1, 0.3, -0.1, -0.1], [0, 1, 2, 3]),  # not a log-probability
        ([[-0.1, -0.1]], [0]),  # wrong shape
    ],
)
def test_missing_or_misaligned_trace_falls_back_to_constant(logprobs: object, positions: list[int]) -> None:
    assert score_prediction(logprobs, positions) == (1.0, "constant_fallback")


def test_one_bad_prediction_turns_the_whole_image_into_a_fallback() -> None:
    scores = score_predictions([-0.2] * 8, [[0, 1, 2, 3], [4, 5, 6, 99]])
    assert scores == ImageScores((1.0, 1.0), "constant_fallback", "score_trace_misaligned")
    missing = score_predictions(None, [[0, 1, 2, 3]])
    assert missing.fallback_reason == "score_trace_missing"


def test_constant_source_ignores_the_trace_and_empty_images_need_none() -> None:
    assert score_predictions(None, [[0], [1]], source="constant") == ImageScores((1.0, 1.0), "constant")
    assert score_predictions(None, []) == ImageScores((), "coord_logprob")
    with pytest.raises(ValueError, match="score source"):
        score_predictions(None, [], source="logits")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=-30.0, max_value=0.0), min_size=1, max_size=40),
    st.data(),
)
def test_vectorized_image_scores_equal_per_prediction_scores(
    logprobs: list[float], data: st.DataObject
) -> None:
    n = len(logprobs)
    positions = data.draw(
        st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=8), min_size=1, max_size=5)
    )
    image = score_predictions(logprobs, positions)
    assert image.source == "coord_logprob"
    for score, pos in zip(image.scores, positions):
        single, source = score_prediction(logprobs, pos)
        assert source == "coord_logprob"
        assert score == pytest.approx(single, rel=1e-12)
        assert 0.0 < score <= 1.0


def test_fallback_images_are_counted_by_the_evaluator() -> None:
    gt = [GTItem("bbox_2d", (10, 10, 100, 100), "cat")]
    pred = [PredItem("bbox_2d", (10, 10, 100, 100), "cat", 1.0, 0)]
    records = [
        simple_record(0, gt, pred, score_source="constant_fallback"),
        simple_record(1, gt, pred, score_source="constant_fallback"),
        simple_record(2, gt, [PredItem("bbox_2d", (10, 10, 100, 100), "cat", 0.4, 0)]),
        simple_record(3, gt, [], score_source="coord_logprob"),
    ]
    metrics = evaluate_records(records)
    assert metrics["rollout/score_fallback_count"] == 2.0
    assert metrics["rollout/eval_failed_count"] == 0.0
