"""Metric naming rules and the packed step reducer (spec 02 §2.10; invariants G10, L8)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import PipelineError
from coordexp.core.metrics import (
    LOSS_TOTAL_KEY,
    Metric,
    StepAggregator,
    allowed_reductions,
    check_metric,
    f1_metric,
    is_internal,
    reduction_for_key,
)


@pytest.mark.parametrize(
    ("key", "reduction"),
    [
        ("loss/gt/struct_ce", "mean"),
        ("loss/total", "mean"),
        ("rollout/invalid_rollout_total", "sum"),
        ("coord_diag/gt/coord_rows_count", "sum"),
        ("time/step_prepare_s_sum", "sum"),
        ("x/y_num", "sum"),
        ("x/y_den", "sum"),
        ("stage2/packs_per_rank_max", "max"),
        ("match_diag/matched_maskiou_p90", "max"),
        ("coord_diag/gt/p_gt_mean", "mean"),
        ("coord_diag/gt/acc_top1_rate", "mean"),
        ("x/fill_frac", "mean"),
        ("stage2_ab/b_ratio_realized", "mean"),
    ],
)
def test_reduction_for_key_follows_the_naming_table(key: str, reduction: str) -> None:
    assert reduction_for_key(key) == reduction


def test_loss_prefix_wins_over_suffixes() -> None:
    assert allowed_reductions("loss/gt/foo_total") == {"mean"}


def test_unsuffixed_keys_allow_mean_or_documented_max() -> None:
    assert allowed_reductions("stage2_ab/step_is_b") == {"mean", "max"}
    check_metric(Metric.max("stage2_ab/step_is_b", 1.0))
    check_metric(Metric.mean("stage2_ab/b_ratio_realized", 1.0, 2.0))


@pytest.mark.parametrize(
    "metric",
    [
        Metric.sum("loss/gt/struct_ce", 1.0),
        Metric.max("loss/gt/struct_ce", 1.0),
        Metric.mean("rollout/x_total", 1.0, 1.0),
        Metric.max("a/b_count", 1.0),
        Metric.sum("a/b_max", 1.0),
        Metric.max("a/b_mean", 1.0),
        Metric.sum("a/b_rate", 1.0),
        Metric.sum("a/unsuffixed", 1.0),
    ],
)
def test_pattern_reduction_conflicts_raise(metric: Metric) -> None:
    with pytest.raises(PipelineError, match="requires"):
        check_metric(metric)


def test_internal_keys() -> None:
    assert is_internal("_tp")
    assert is_internal("rollout/_tp_total")
    assert not is_internal("rollout/tp_total")
    assert not is_internal("a_b/c_")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": "a", "reduction": "mean", "num": 1.0},
        {"key": "a", "reduction": "mean", "num": 1.0, "den": 1.0, "value": 1.0},
        {"key": "a_total", "reduction": "sum"},
        {"key": "a_total", "reduction": "sum", "value": 1.0, "num": 1.0},
        {"key": "a_total", "reduction": "sum", "value": True},
        {"key": "a_total", "reduction": "sum", "value": "1"},
        {"key": "a_total", "reduction": "sum", "value": torch.ones(2)},
        {"key": "a", "reduction": "median", "value": 1.0},
        {"key": "", "reduction": "max", "value": 1.0},
    ],
)
def test_malformed_metrics_are_rejected(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        Metric(**kwargs)


def test_tensor_values_are_detached_scalars() -> None:
    value = torch.tensor([2.0], requires_grad=True)
    metric = Metric.sum("x_total", value * 3)
    assert isinstance(metric.value, torch.Tensor)
    assert metric.value.shape == () and not metric.value.requires_grad
    assert Metric.sum("x_total", 3).value == 3.0


def test_undeclared_key_and_wrong_reduction_raise() -> None:
    agg = StepAggregator([("a_total", "sum")])
    with pytest.raises(PipelineError, match="not declared"):
        agg.add([Metric.sum("b_total", 1.0)])
    agg2 = StepAggregator([("a/x", "mean")])
    with pytest.raises(PipelineError, match="declared 'mean'"):
        agg2.add([Metric.max("a/x", 1.0)])


def test_declaration_errors() -> None:
    with pytest.raises(PipelineError, match="requires"):
        StepAggregator([("loss/gt/a", "sum")])
    with pytest.raises(PipelineError, match="two reductions"):
        StepAggregator([("a/x", "mean"), ("a/x", "max")])
    with pytest.raises(PipelineError, match="derived"):
        StepAggregator([(LOSS_TOTAL_KEY, "mean")])
    assert StepAggregator([("a/x", "mean"), ("a/x", "mean")]).keys == (("a/x", "mean"),)


def test_reduce_drops_unobserved_zero_den_and_internal_keys() -> None:
    agg = StepAggregator(
        [
            ("a/seen_total", "sum"),
            ("a/unseen_total", "sum"),
            ("a/zero_mean", "mean"),
            ("a/_hidden_total", "sum"),
            ("a/peak_max", "max"),
            ("a/never_max", "max"),
        ]
    )
    agg.add(
        [
            Metric.sum("a/seen_total", 0.0),
            Metric.mean("a/zero_mean", 0.0, 0.0),
            Metric.sum("a/_hidden_total", 5.0),
        ]
    )
    agg.add([Metric.max("a/peak_max", -3.0), Metric.mean("a/zero_mean", 0.0, 0.0)])
    assert agg.reduce() == {"a/seen_total": 0.0, "a/peak_max": -3.0}


def test_derived_keys_see_internal_keys() -> None:
    agg = StepAggregator([("r/_p", "mean"), ("r/_r", "mean")], derived=(f1_metric("r/f1", "r/_p", "r/_r"),))
    agg.add([Metric.mean("r/_p", 1.0, 2.0), Metric.mean("r/_r", 1.0, 1.0)])
    out = agg.reduce()
    assert out == {"r/f1": pytest.approx(2 * 0.5 * 1.0 / 1.5)}
    empty = StepAggregator([("r/_p", "mean")], derived=(f1_metric("r/f1", "r/_p", "r/_r"),))
    assert empty.reduce() == {}


def test_loss_total_is_the_sum_of_reduced_atoms() -> None:
    agg = StepAggregator(
        [("loss/gt/struct_ce", "mean"), ("loss/gt/desc_ce", "mean"), ("loss/rollout/x", "mean")]
    )
    agg.add([Metric.mean("loss/gt/struct_ce", 3.0, 4.0), Metric.mean("loss/gt/desc_ce", 1.0, 4.0)])
    agg.add([Metric.mean("loss/gt/struct_ce", 1.0, 4.0), Metric.mean("loss/gt/desc_ce", 1.0, 4.0)])
    out = agg.reduce()
    assert out["loss/gt/struct_ce"] == pytest.approx(0.5)
    assert out["loss/gt/desc_ce"] == pytest.approx(0.25)
    assert "loss/rollout/x" not in out
    assert out[LOSS_TOTAL_KEY] == pytest.approx(0.75)
    assert StepAggregator([("a/x", "mean")]).reduce() == {}


def test_both_collectives_always_run_in_fixed_order() -> None:
    calls: list[tuple[str, int]] = []

    def in_place(tensor: torch.Tensor, op: str) -> None:
        calls.append((op, tensor.numel()))
        return None

    agg = StepAggregator([("a_total", "sum")])
    agg.add([Metric.sum("a_total", 2.0)])
    assert agg.reduce(in_place) == {"a_total": 2.0}
    assert [c[0] for c in calls] == ["sum", "max"]
    assert all(n >= 1 for _, n in calls)


def test_misaligned_collective_raises() -> None:
    agg = StepAggregator([("a_total", "sum")])
    with pytest.raises(PipelineError, match="different metric key lists"):
        agg.reduce(lambda t, op: torch.zeros(t.numel() + 1, dtype=t.dtype))


KEYS = [
    ("m/a_total", "sum"),
    ("m/b_mean", "mean"),
    ("m/c_max", "max"),
    ("m/_d_count", "sum"),
    ("loss/gt/e", "mean"),
]

observation = st.one_of(
    st.none(),
    st.tuples(
        st.floats(-1e3, 1e3, allow_nan=False, width=32),
        st.floats(0.0, 1e3, allow_nan=False, width=32) | st.just(0.0),
    ),
)
micro_batch = st.fixed_dictionaries({k: observation for k, _ in KEYS})
ranks = st.lists(st.lists(micro_batch, min_size=0, max_size=4), min_size=1, max_size=4)


def _metric(key: str, reduction: str, obs: tuple[float, float], as_tensor: bool) -> Metric:
    a, b = (torch.tensor(obs[0]), torch.tensor(obs[1])) if as_tensor else obs
    if reduction == "mean":
        return Metric.mean(key, a, b)
    return Metric(key, reduction, value=a)


@settings(max_examples=120, deadline=None)
@given(ranks=ranks, as_tensor=st.booleans())
def test_g10_reduction_over_micro_batches_and_simulated_ranks(ranks: list, as_tensor: bool) -> None:
    aggregators = [StepAggregator(KEYS) for _ in ranks]
    for agg, batches in zip(aggregators, ranks, strict=True):
        for batch in batches:
            agg.add([_metric(k, r, batch[k], as_tensor) for k, r in KEYS if batch[k] is not None])
    packed = [agg.packed() for agg in aggregators]
    reduced_sum = torch.stack([p[0] for p in packed]).sum(0)
    reduced_max = torch.stack([p[1] for p in packed]).amax(0)

    def simulated(rank: int):
        def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
            expected = packed[rank][0 if op == "sum" else 1]
            assert torch.equal(tensor, expected)
            return (reduced_sum if op == "sum" else reduced_max).clone()

        return all_reduce

    results = [agg.reduce(simulated(r)) for r, agg in enumerate(aggregators)]
    assert all(res == results[0] for res in results)  # all ranks log the same dict

    observed = {k: [b[k] for batches in ranks for b in batches if b[k] is not None] for k, _ in KEYS}
    expected: dict[str, float] = {}
    if observed["m/a_total"]:
        expected["m/a_total"] = math.fsum(o[0] for o in observed["m/a_total"])
    for key in ("m/b_mean", "loss/gt/e"):
        den = math.fsum(o[1] for o in observed[key])
        if observed[key] and den != 0.0:
            expected[key] = math.fsum(o[0] for o in observed[key]) / den
    if observed["m/c_max"]:
        expected["m/c_max"] = max(o[0] for o in observed["m/c_max"])
    if "loss/gt/e" in expected:
        expected[LOSS_TOTAL_KEY] = expected["loss/gt/e"]
    result = results[0]
    assert set(result) == set(expected)  # unobserved, zero-den and `_` keys are dropped
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-4)
