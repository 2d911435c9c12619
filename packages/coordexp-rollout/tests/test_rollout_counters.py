"""Rollout counters and their metrics (spec 03 §3.8, 02 §2.10)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson.parse import DROP_BUCKETS
from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.core.errors import PipelineError
from coordexp.core.metrics import LOSS_TOTAL, StepAggregator, check_metric
from coordexp.rollout.backend import RolloutOutput
from coordexp.rollout.counters import (
    F1_KEY,
    ROLLOUT_DERIVED,
    SampleCounters,
    rollout_metric_keys,
    rollout_metrics,
)
from coordexp.rollout.prepare import ROLLOUT_ALIGNED, PrepareConfig, RolloutPreparer
from coordexp.rollout.testing import tiny_test_codec

SPEC_TOTALS = (
    "samples",
    "invalid_rollout",
    "truncated",
    "valid_pred_objects",
    "parse_dropped",
    "dropped_incomplete_tail",
    "field_order_mismatch",
    "degenerate_pred_bbox",
    "gt_objects",
    "matched",
    "fp",
    "fn",
    "fn_appended",
    "gating_rejections",
    "excluded_from_supervision",
    "prompt_mismatch_dropped",
    "retokenize_fail",
    "overlength_fallback",
)
SPEC_MEANS = (
    "rollout/invalid_rollout_rate",
    "rollout/truncated_rate",
    "rollout/gating_rejection_rate",
    "rollout/excluded_rate",
    "rollout/gt_per_sample_mean",
    "rollout/pred_per_sample_mean",
    "rollout/fn_appended_per_sample_mean",
    "rollout/precision",
    "rollout/recall",
    "rollout/rollout_len_mean",
    "rollout/prefix_len_mean",
    "rollout/train_len_mean",
    "rollout/encoded_len_mean",
)
SPEC_MAXES = (
    "rollout/rollout_len_max",
    "rollout/prefix_len_max",
    "rollout/train_len_max",
    "rollout/encoded_len_max",
    "rollout/seed_base",
)
SPEC_TIMES = ("time/rollout_generate_s_sum", "time/rollout_parse_match_s_sum", "time/teacher_encode_s_sum")


def aggregate(*micro_batches) -> dict[str, float]:
    agg = StepAggregator(rollout_metric_keys(), derived=(LOSS_TOTAL, *ROLLOUT_DERIVED))
    for metrics in micro_batches:
        agg.add(metrics)
    return agg.reduce()


def test_declared_keys_are_the_spec_keys_with_their_reductions() -> None:
    declared = dict(rollout_metric_keys())
    assert len(declared) == len(rollout_metric_keys())
    expected = {f"rollout/{name}_total": "sum" for name in SPEC_TOTALS}
    expected |= {f"rollout/parse_dropped/{bucket}_total": "sum" for bucket in DROP_BUCKETS}
    expected |= {key: "mean" for key in SPEC_MEANS} | {key: "max" for key in SPEC_MAXES}
    expected |= {key: "sum" for key in SPEC_TIMES}
    assert declared == expected
    assert F1_KEY not in declared  # derived after reduction


def test_no_rollouts_emit_nothing() -> None:
    assert rollout_metrics([]) == []


counter_values = st.integers(0, 50)


@st.composite
def sample_counters(draw) -> SampleCounters:
    if draw(st.integers(0, 9)) == 0:
        return SampleCounters.prompt_mismatch()
    gt = draw(counter_values)
    matched = draw(st.integers(0, gt))
    excluded = draw(st.integers(0, gt - matched))
    fn = gt - matched - excluded
    fp = draw(counter_values) + excluded
    prefix = draw(st.integers(1, 400))
    train = prefix + draw(st.integers(2, 400))
    return SampleCounters(
        invalid_rollout=draw(st.integers(0, 1)),
        truncated=draw(st.integers(0, 1)),
        valid_pred_objects=matched + fp,
        gt_objects=gt,
        matched=matched,
        fp=fp,
        fn=fn,
        fn_appended=fn + excluded,
        excluded_from_supervision=excluded,
        gating_rejections=draw(counter_values),
        candidate_pairs=draw(counter_values),
        rollout_len=draw(st.integers(0, 500)),
        prefix_len=prefix,
        train_len=train,
        encoded_len=train + 30,
        parse_dropped_by_bucket={draw(st.sampled_from(DROP_BUCKETS)): draw(counter_values)},
    )


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(st.lists(sample_counters(), max_size=5), min_size=1, max_size=3),
    seed_base=st.integers(1, 2**31 - 1),
)
def test_step_reduction_is_the_ratio_of_sums(batches, seed_base) -> None:
    metrics = [rollout_metrics(b, seed_base=seed_base, timings={"rollout_generate": 0.5}) for b in batches]
    for batch in metrics:
        for metric in batch:
            check_metric(metric)
    reduced = aggregate(*metrics)
    everything = [s for b in batches for s in b]
    prepared = [s for s in everything if s.samples]

    def total(name):
        return sum(getattr(s, name) for s in everything)

    for name in SPEC_TOTALS:
        assert reduced[f"rollout/{name}_total"] == total(name)
    assert reduced["time/rollout_generate_s_sum"] == pytest.approx(0.5 * len(batches))
    assert reduced["rollout/seed_base"] == seed_base
    for bucket in DROP_BUCKETS:
        assert reduced[f"rollout/parse_dropped/{bucket}_total"] == sum(
            s.parse_dropped_by_bucket[bucket] for s in everything
        )
    ratios = {
        "rollout/precision": ("matched", "valid_pred_objects"),
        "rollout/recall": ("matched", "gt_objects"),
        "rollout/invalid_rollout_rate": ("invalid_rollout", "samples"),
        "rollout/gating_rejection_rate": ("gating_rejections", "candidate_pairs"),
        "rollout/fn_appended_per_sample_mean": ("fn_appended", "samples"),
    }
    for key, (num, den) in ratios.items():
        if total(den):
            assert reduced[key] == pytest.approx(total(num) / total(den))
        else:
            assert key not in reduced  # Σden = 0: dropped
    pairs = total("matched") + total("excluded_from_supervision")
    assert ("rollout/excluded_rate" in reduced) == bool(pairs)
    if prepared:
        assert reduced["rollout/train_len_max"] == max(s.train_len for s in prepared)
        assert reduced["rollout/prefix_len_mean"] == pytest.approx(
            sum(s.prefix_len for s in prepared) / len(prepared)
        )
    else:
        assert "rollout/train_len_max" not in reduced and "rollout/prefix_len_mean" not in reduced
    if "rollout/precision" in reduced and "rollout/recall" in reduced:
        p, r = reduced["rollout/precision"], reduced["rollout/recall"]
        assert reduced[F1_KEY] == pytest.approx(0.0 if p + r == 0 else 2 * p * r / (p + r))


def test_counters_of_a_prepared_sample() -> None:
    codec = tiny_test_codec()
    cat = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
    mug = CoordObject("mug", "bbox_2d", (700, 700, 900, 900))
    text = serialize([cat, CoordObject("x", "bbox_2d", (0, 0, 5, 5))], "desc_first")
    ids = codec.encode(text[:-2] + ', {"desc": 5, "bbox_2d": []}, {"desc": "tr')
    out = RolloutOutput((1, 2), ids, "length", len(ids), codec.stop_ids)
    prepared = RolloutPreparer(codec, PrepareConfig(ROLLOUT_ALIGNED, "desc_first")).prepare(out, [cat, mug])
    c = prepared.counters
    assert (c.samples, c.gt_objects, c.matched, c.fp, c.fn, c.fn_appended) == (1, 2, 1, 1, 1, 1)
    assert c.valid_pred_objects == 2 and c.parse_dropped == 1
    assert c.parse_dropped_by_bucket["missing_desc"] == 1
    assert (c.truncated, c.dropped_incomplete_tail, c.invalid_rollout) == (1, 1, 0)
    assert c.rollout_len == len(ids) and c.train_len == prepared.target.train_len
    flat = c.as_dict()
    assert flat["parse_dropped/missing_desc"] == 1 and flat["encoded_len"] == 2 + c.train_len
    reduced = aggregate(rollout_metrics([c]))
    assert reduced["rollout/precision"] == 0.5 and reduced["rollout/recall"] == 0.5
    assert math.isclose(reduced[F1_KEY], 0.5)


def test_only_drops_count_drops() -> None:
    reduced = aggregate(rollout_metrics([SampleCounters.prompt_mismatch()] * 3))
    assert reduced["rollout/prompt_mismatch_dropped_total"] == 3
    assert reduced["rollout/samples_total"] == 0
    assert "rollout/precision" not in reduced and "rollout/train_len_max" not in reduced


def test_invalid_counter_values_raise() -> None:
    with pytest.raises(PipelineError, match="matched"):
        SampleCounters(matched=-1)
    with pytest.raises(PipelineError, match="drop bucket"):
        SampleCounters(parse_dropped_by_bucket={"nonsense": 1})
    with pytest.raises(PipelineError, match="timing"):
        rollout_metrics([SampleCounters()], timings={"generate": 1.0})
