"""Prediction scores for COCO ranking (spec 06 §6.3, D29; invariant I5).

``coord_logprob`` scores one prediction by ``exp(mean log p)`` over its coord tokens, where
``log p`` is the log-probability of the emitted token under the unfiltered τ = 1 distribution
(the backend supplies it per generated token). ``constant`` gives every prediction 1.0. When the
trace is missing or does not line up with a prediction's coord tokens, every prediction of that
image gets 1.0 and the image is marked ``constant_fallback`` (counted by the evaluator in
``rollout/score_fallback_count``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any, Literal, get_args

import attrs
import numpy as np

ScoreSource = Literal["coord_logprob", "constant"]
RecordedScoreSource = Literal["coord_logprob", "constant", "constant_fallback"]
SCORE_SOURCES: tuple[str, ...] = get_args(ScoreSource)
RECORDED_SCORE_SOURCES: tuple[str, ...] = get_args(RecordedScoreSource)
SCORE_VERSION = 1

FALLBACK_SOURCE = "constant_fallback"
TRACE_MISSING = "score_trace_missing"
TRACE_MISALIGNED = "score_trace_misaligned"

# exp(mean log p) underflows to 0.0 below about -745; the score range is (0, 1], so clamp to the
# smallest normal double instead of emitting a 0 score.
_MIN_SCORE = sys.float_info.min


def check_score_source(source: Any) -> ScoreSource:
    """Return ``source`` if it is a configurable score source, else raise ValueError."""
    if source not in SCORE_SOURCES:
        raise ValueError(f"score source must be one of {SCORE_SOURCES}, got {source!r}")
    return source


def _logprob_array(token_logprobs: Any) -> np.ndarray | None:
    if token_logprobs is None:
        return None
    array = np.asarray(token_logprobs, dtype=np.float64)
    return array if array.ndim == 1 else None


def _trace_problem(logprobs: np.ndarray | None, positions: np.ndarray) -> str | None:
    """Why ``positions`` cannot be scored from ``logprobs`` (None when they can)."""
    if logprobs is None:
        return TRACE_MISSING
    if positions.size == 0 or positions.min() < 0 or positions.max() >= logprobs.size:
        return TRACE_MISALIGNED
    picked = logprobs[positions]
    if not np.isfinite(picked).all() or (picked > 0.0).any():
        return TRACE_MISALIGNED
    return None


def _positions(coord_positions: Sequence[int]) -> np.ndarray:
    array = np.asarray(coord_positions)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(
            f"coord positions must be a 1-D sequence of integer token positions, got dtype "
            f"{array.dtype} shape {array.shape}"
        )
    return array.astype(np.int64, copy=False)


def _score_from_mean(mean_logprob: np.ndarray) -> np.ndarray:
    return np.clip(np.exp(mean_logprob), _MIN_SCORE, 1.0)


def score_prediction(token_logprobs: Any, coord_positions: Sequence[int]) -> tuple[float, str]:
    """Score one prediction: ``(exp(mean log p), "coord_logprob")`` or ``(1.0, "constant_fallback")``.

    ``token_logprobs``: float ``[T]`` log-probabilities of the generated tokens (None when the
    backend returned no trace). ``coord_positions``: the prediction's coord token positions into
    that array. The fallback applies when the trace is missing, a position is out of range, the
    positions are empty, or a selected value is not a log-probability (non-finite or > 0).
    """
    logprobs = _logprob_array(token_logprobs)
    positions = _positions(coord_positions)
    if _trace_problem(logprobs, positions) is not None:
        return 1.0, FALLBACK_SOURCE
    return float(_score_from_mean(np.mean(logprobs[positions]))), "coord_logprob"


@attrs.frozen
class ImageScores:
    """The scores of one image's predictions, in prediction order.

    ``scores``: floats in (0, 1]; ``source``: the recorded source (``coord_logprob``,
    ``constant`` or ``constant_fallback``); ``fallback_reason``: ``score_trace_missing`` or
    ``score_trace_misaligned`` for a fallback, else None.
    """

    scores: tuple[float, ...] = attrs.field(converter=lambda values: tuple(float(v) for v in values))
    source: str = attrs.field()
    fallback_reason: str | None = None

    @source.validator
    def _check_source(self, _attribute: attrs.Attribute, source: str) -> None:
        if source not in RECORDED_SCORE_SOURCES:
            raise ValueError(f"score source must be one of {RECORDED_SCORE_SOURCES}, got {source!r}")
        if source != "coord_logprob" and any(score != 1.0 for score in self.scores):
            raise ValueError(f"{source} scores must all be 1.0, got {self.scores}")
        if (source == FALLBACK_SOURCE) != (self.fallback_reason is not None):
            raise ValueError("fallback_reason is set exactly when the source is constant_fallback")
        bad = [s for s in self.scores if not (math.isfinite(s) and 0.0 < s <= 1.0)]
        if bad:
            raise ValueError(f"scores must lie in (0, 1], got {bad[:4]}")


def score_predictions(
    token_logprobs: Any,
    coord_positions: Sequence[Sequence[int]],
    source: ScoreSource = "coord_logprob",
) -> ImageScores:
    """Score all predictions of one image (``coord_positions[i]``: prediction i's coord tokens).

    ``source="constant"`` ignores the trace. With ``coord_logprob``, one unscorable prediction
    turns the whole image into ``constant_fallback`` (every score 1.0). An image without
    predictions needs no trace and keeps the requested source. Vectorized over predictions.
    """
    source = check_score_source(source)
    n_pred = len(coord_positions)
    if source == "constant":
        return ImageScores((1.0,) * n_pred, "constant")
    if n_pred == 0:
        return ImageScores((), "coord_logprob")
    logprobs = _logprob_array(token_logprobs)
    per_pred = [_positions(p) for p in coord_positions]
    for positions in per_pred:
        reason = _trace_problem(logprobs, positions)
        if reason is not None:
            return ImageScores((1.0,) * n_pred, FALLBACK_SOURCE, reason)
    lengths = np.array([p.size for p in per_pred], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    sums = np.add.reduceat(logprobs[np.concatenate(per_pred)], starts)
    return ImageScores(tuple(_score_from_mean(sums / lengths).tolist()), "coord_logprob")
