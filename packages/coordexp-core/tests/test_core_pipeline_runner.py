"""PipelineRunner: step-global normalization, key declaration, isolation (spec 02 §2.9–§2.10;
invariants G7, G10, G11, L7, L8).

Contexts are small fakes: ``logits`` is a per-row value tensor ``P[param] * x`` of a shared
parameter ``P``, ``mask`` marks supervised rows. Simulated ranks share ``P``, so ``P.grad`` after
all backward passes is the sum DDP would average over ``world_size``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import PipelineError
from coordexp.core.metrics import LOSS_TOTAL_KEY, Metric, StepAggregator
from coordexp.core.pipeline.runner import PipelineRunner, diag_failed_key, reduce_denominators
from coordexp.core.pipeline.spec import resolve_pipeline
from coordexp.core.plugins.protocol import AtomTerm, DiagnosticModule, ModuleOutput, ObjectiveModule, Strategy
from coordexp.core.plugins.registry import KIND_GROUPS, ModuleRegistry

CALLS: list[tuple[str, str]] = []
GRAD_ENABLED_IN_DIAGNOSTICS: list[bool] = []


@attrs.frozen
class FakeCtx:
    logits: torch.Tensor | None
    mask: torch.Tensor


@attrs.frozen
class FakeCtxSet:
    channel: str
    contexts: dict[str, FakeCtx]

    @property
    def text_context(self) -> FakeCtx:
        return next(iter(self.contexts.values()))

    @property
    def coord_context(self) -> FakeCtx:
        return list(self.contexts.values())[-1]


class Alpha(ObjectiveModule):
    """Two atoms over the masked rows of every context: Σ v and Σ v²."""

    name = "alpha"
    atoms = ("alpha_lin", "alpha_sq")

    @attrs.frozen
    class Config:
        lin_weight: float = 1.0
        sq_weight: float = 0.5

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"alpha_lin": cfg.lin_weight, "alpha_sq": cfg.sq_weight}

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"alpha/{context}/rows_count", "sum")]

    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        return {f"alpha/{name}/rows": float(ctx.mask.sum()) for name, ctx in ctxset.contexts.items()}

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        CALLS.append((self.name, ctxset.channel))
        lin, sq, metrics = [], [], []
        for name, ctx in ctxset.contexts.items():
            den = float(ctx.mask.sum())
            values = ctx.logits * ctx.mask
            lin.append(AtomTerm(name, values.sum(), f"alpha/{name}/rows", den))
            sq.append(AtomTerm(name, (values**2).sum(), f"alpha/{name}/rows", den))
            metrics.append(Metric.sum(f"alpha/{name}/rows_count", den))
        return ModuleOutput({"alpha_lin": lin, "alpha_sq": sq}, metrics)


class Beta(ObjectiveModule):
    """One atom over all rows of the coord context, with its own denominator group."""

    name = "beta"
    atoms = ("beta_all",)

    @attrs.frozen
    class Config:
        weight: float = 1.0

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"beta_all": cfg.weight}

    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        return {"beta/coord/all": float(ctxset.coord_context.mask.numel())}

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        CALLS.append((self.name, ctxset.channel))
        ctx = ctxset.coord_context
        name = [n for n, c in ctxset.contexts.items() if c is ctx][0]
        term = AtomTerm(name, torch.tanh(ctx.logits).sum(), "beta/coord/all", float(ctx.mask.numel()))
        return ModuleOutput({"beta_all": term})


Misbehavior = Literal[
    "none",
    "raise",
    "bad_reduction",
    "undeclared",
    "loss_key",
    "den_mismatch",
    "unknown_atom",
    "bad_output",
    "foreign_group",
    "shared_group",
]


class Gamma(Alpha):
    """Alpha with a configurable contract violation."""

    name = "gamma"
    atoms = ("gamma_lin", "gamma_sq")

    @attrs.frozen
    class Config:
        misbehave: Misbehavior = "none"

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"gamma_lin": 1.0, "gamma_sq": 0.0}

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"gamma/{context}/rows_count", "sum"), (f"gamma/{context}/v_mean", "mean")]

    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        prefix = "alpha" if "shared_group" in cfg.misbehave else "gamma"
        return {f"{prefix}/{name}/rows": float(ctx.mask.sum()) for name, ctx in ctxset.contexts.items()}

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        mode = cfg.misbehave
        if mode == "raise":
            raise RuntimeError("gamma exploded")
        if mode == "bad_output":
            return {"gamma_lin": 1.0}  # type: ignore[return-value]
        name, ctx = next(iter(ctxset.contexts.items()))
        den = float(ctx.mask.sum())
        group = f"gamma/{name}/rows" if mode != "foreign_group" else "gamma/other"
        den_reported = den + 1.0 if mode == "den_mismatch" else den
        atom = "gamma_nope" if mode == "unknown_atom" else "gamma_lin"
        metrics = {
            "none": [Metric.sum(f"gamma/{name}/rows_count", den)],
            "bad_reduction": [Metric.mean(f"gamma/{name}/rows_count", 1.0, 1.0)],
            "undeclared": [Metric.sum(f"gamma/{name}/other_count", 1.0)],
            "loss_key": [Metric.mean(f"loss/{name}/gamma_lin", 1.0, 1.0)],
        }.get(mode, [])
        return ModuleOutput(
            {atom: AtomTerm(name, (ctx.logits * ctx.mask).sum(), group, den_reported)}, metrics
        )


class Probe(DiagnosticModule):
    name = "probe"

    @attrs.frozen
    class Config:
        fail_above: float = math.inf
        emit_bad_reduction: bool = False

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"probe/{context}/value_mean", "mean"), (f"probe/{context}/value_max", "max")]

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        CALLS.append((self.name, ctxset.channel))
        GRAD_ENABLED_IN_DIAGNOSTICS.append(torch.is_grad_enabled())
        metrics = []
        for name, ctx in ctxset.contexts.items():
            values = ctx.logits[ctx.mask]
            if values.numel() and float(values.max()) > cfg.fail_above:
                raise FloatingPointError(f"value above {cfg.fail_above}")
            metrics.append(Metric.mean(f"probe/{name}/value_mean", values.sum(), values.numel()))
            if values.numel():
                metrics.append(Metric.max(f"probe/{name}/value_max", values.max()))
        if cfg.emit_bad_reduction:
            metrics.append(Metric.sum(f"probe/{name}/value_mean", 1.0))
        return ModuleOutput({}, metrics)


class Silent(Probe):
    name = "silent"

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"silent/{context}/bad_count", "max")]  # conflicts with the naming table


@attrs.frozen
class FakeEntryPoint:
    name: str
    group: str
    target: Any
    dist: Any = attrs.field(factory=lambda: type("D", (), {"name": "tests", "version": "0"})())
    value: str = "tests:fake"

    def load(self) -> Any:
        return self.target


ENTRY_POINTS = [FakeEntryPoint(c.name, KIND_GROUPS["objective"], c) for c in (Alpha, Beta, Gamma)] + [
    FakeEntryPoint(c.name, KIND_GROUPS["diagnostic"], c) for c in (Probe, Silent)
]


def resolved_pipeline(
    objective: list[dict], diagnostics: list[dict] | None = None, variant: str = "stage2_two_channel"
):
    strategy = Strategy(
        trainer_variant=variant,
        packing="none",
        max_length=64,
        b_ratio=0.5 if variant == "stage2_two_channel" else None,
    )
    return resolve_pipeline(
        {"objective": objective, "diagnostics": diagnostics or []},
        variant=variant,
        path="stage2_ab.pipeline",
        strategy=strategy,
        registry=ModuleRegistry(lambda group: [e for e in ENTRY_POINTS if e.group == group], environ={}),
    )


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()
    GRAD_ENABLED_IN_DIAGNOSTICS.clear()


Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # param index, x, mask


def make_sample(gen: torch.Generator, n_params: int, length: int) -> Sample:
    return (
        torch.randint(0, n_params, (length,), generator=gen),
        torch.randn(length, generator=gen, dtype=torch.float64),
        torch.rand(length, generator=gen) < 0.6,
    )


def ctxset(
    samples: list[Sample], params: torch.Tensor | None, channel: str = "A", contexts=("gt",)
) -> FakeCtxSet:
    index = torch.cat([s[0] for s in samples])
    x = torch.cat([s[1] for s in samples])
    mask = torch.cat([s[2] for s in samples])
    logits = None if params is None else params[index] * x
    return FakeCtxSet(channel, {name: FakeCtx(logits, mask) for name in contexts})


def simulated_reduce(aggregators: list[StepAggregator]) -> list[dict[str, float]]:
    packed = [agg.packed() for agg in aggregators]
    sums = torch.stack([p[0] for p in packed]).sum(0)
    maxes = torch.stack([p[1] for p in packed]).amax(0)
    return [agg.reduce(lambda t, op: (sums if op == "sum" else maxes).clone()) for agg in aggregators]


def run_step(
    runners: list[PipelineRunner],
    ranks: list[list[list[Sample]]],
    params: torch.Tensor,
    channel: str = "A",
    contexts=("gt",),
) -> tuple[list[dict[str, float]], list[float]]:
    """One optimizer step over simulated ranks; returns each rank's reduced metrics and losses."""
    local = [
        r.denominators([ctxset(mb, None, channel, contexts) for mb in rank])
        for r, rank in zip(runners, ranks, strict=True)
    ]
    groups = sorted(set().union(*local))
    totals = {g: math.fsum(d.get(g, 0.0) for d in local) for g in groups}
    aggregators = [StepAggregator(r.step_keys(channel, contexts)) for r in runners]
    losses = []
    for runner, aggregator, rank in zip(runners, aggregators, ranks, strict=True):
        for micro_batch in rank:
            loss, metrics = runner.run(ctxset(micro_batch, params, channel, contexts), totals)
            if loss.requires_grad:
                loss.backward()
            losses.append(float(loss.detach()))
            aggregator.add(metrics)
    return simulated_reduce(aggregators), losses


def global_objective(
    samples: list[Sample], params: torch.Tensor, weights: dict[str, float]
) -> dict[str, torch.Tensor]:
    """Alpha + Beta computed directly over all samples (the value the split must not change)."""
    index = torch.cat([s[0] for s in samples])
    mask = torch.cat([s[2] for s in samples]).to(torch.float64)
    values = params[index] * torch.cat([s[1] for s in samples])
    rows = mask.sum()
    out = {
        "loss/gt/alpha_lin": weights["alpha"] * (values * mask).sum() / rows,
        "loss/gt/alpha_sq": weights["alpha"] * 0.5 * ((values * mask) ** 2).sum() / rows,
        "loss/gt/beta_all": weights["beta"] * torch.tanh(values).sum() / values.numel(),
    }
    out[LOSS_TOTAL_KEY] = sum(out.values())
    return out


# ------------------------------------------------------------------ L7 / L8 / G10


splits = st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), layout=splits, w_alpha=st.floats(0.1, 3.0), w_beta=st.floats(0.1, 3.0))
def test_l7_l8_g10_loss_is_step_global_for_any_split(
    seed: int, layout: list[list[int]], w_alpha: float, w_beta: float
) -> None:
    gen = torch.Generator().manual_seed(seed)
    n_samples = sum(sum(rank) for rank in layout)
    samples = [make_sample(gen, 5, int(torch.randint(1, 6, (1,), generator=gen))) for _ in range(n_samples)]
    samples[0][2][0] = True  # at least one supervised row in the step
    resolved = resolved_pipeline([{"name": "alpha", "weight": w_alpha}, {"name": "beta", "weight": w_beta}])
    world_size = len(layout)
    runners = [PipelineRunner(resolved, world_size=world_size) for _ in layout]
    ranks, cursor = [], 0
    for rank in layout:
        micro_batches = []
        for size in rank:
            micro_batches.append(samples[cursor : cursor + size])
            cursor += size
        ranks.append(micro_batches)

    params = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    reduced, _ = run_step(runners, ranks, params)

    reference_params = params.detach().clone().requires_grad_(True)
    expected = global_objective(samples, reference_params, {"alpha": w_alpha, "beta": w_beta})
    expected[LOSS_TOTAL_KEY].backward()

    assert all(r == reduced[0] for r in reduced)
    assert set(reduced[0]) == set(expected) | {"alpha/gt/rows_count"}
    for key, value in expected.items():
        assert reduced[0][key] == pytest.approx(float(value.detach()), rel=1e-9, abs=1e-12)
    assert reduced[0][LOSS_TOTAL_KEY] == pytest.approx(
        math.fsum(v for k, v in reduced[0].items() if k.count("/") == 2 and k.startswith("loss/"))
    )
    assert reduced[0]["alpha/gt/rows_count"] == float(sum(int(s[2].sum()) for s in samples))
    # DDP averages gradients over ranks; world_size · Σ W·w·num/D undoes it exactly.
    torch.testing.assert_close(params.grad / world_size, reference_params.grad, rtol=1e-9, atol=1e-12)


def test_empty_groups_contribute_nothing_and_are_not_logged() -> None:
    gen = torch.Generator().manual_seed(0)
    sample = make_sample(gen, 3, 4)
    empty = (sample[0], sample[1], torch.zeros(4, dtype=torch.bool))
    resolved = resolved_pipeline([{"name": "alpha"}])
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    reduced, losses = run_step([PipelineRunner(resolved)], [[[empty]]], params)
    assert losses == [0.0] and params.grad is None
    assert reduced[0] == {"alpha/gt/rows_count": 0.0}


def test_zero_weight_atoms_are_neither_declared_nor_logged() -> None:
    resolved = resolved_pipeline([{"name": "alpha", "config": {"sq_weight": 0.0}}])
    runner = PipelineRunner(resolved)
    keys = dict(runner.step_keys("A", ["gt", "self_context"]))
    assert "loss/gt/alpha_lin" in keys and "loss/self_context/alpha_lin" in keys
    assert not any("alpha_sq" in k for k in keys)
    gen = torch.Generator().manual_seed(1)
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    reduced, _ = run_step([runner], [[[make_sample(gen, 3, 6)]]], params)
    assert not any("alpha_sq" in k for k in reduced[0])


def test_atoms_in_two_contexts_log_one_key_per_context() -> None:
    resolved = resolved_pipeline([{"name": "alpha"}])
    gen = torch.Generator().manual_seed(2)
    sample = make_sample(gen, 3, 6)
    sample[2][0] = True
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    reduced, _ = run_step([PipelineRunner(resolved)], [[[sample]]], params, contexts=("gt", "self_context"))
    loss_keys = sorted(k for k in reduced[0] if k.startswith("loss/"))
    assert loss_keys == [
        "loss/gt/alpha_lin",
        "loss/gt/alpha_sq",
        "loss/self_context/alpha_lin",
        "loss/self_context/alpha_sq",
        "loss/total",
    ]
    assert reduced[0]["loss/gt/alpha_lin"] == pytest.approx(reduced[0]["loss/self_context/alpha_lin"])


def test_world_size_scales_the_backpropagated_loss() -> None:
    gen = torch.Generator().manual_seed(3)
    sample = make_sample(gen, 3, 6)
    sample[2][0] = True
    resolved = resolved_pipeline([{"name": "alpha"}])
    params = torch.randn(3, dtype=torch.float64)
    view = ctxset([sample], params)
    dens = PipelineRunner(resolved).denominators([ctxset([sample], None)])
    one, _ = PipelineRunner(resolved, world_size=1).run(view, dens)
    four, _ = PipelineRunner(resolved, world_size=4).run(view, dens)
    assert float(four) == pytest.approx(4 * float(one))
    with pytest.raises(ValueError, match="world_size"):
        PipelineRunner(resolved, world_size=0)


def test_reduce_denominators_packs_sorted_groups() -> None:
    seen = []

    def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
        seen.append(op)
        return tensor * 2

    assert reduce_denominators({"b": 1.0, "a": 2.5}, all_reduce) == {"a": 5.0, "b": 2.0}
    assert seen == ["sum"]
    assert reduce_denominators({"a": 1.0}, None) == {"a": 1.0}


# ------------------------------------------------------------------ G7 scoping


def test_g7_channel_scoping_means_no_compute_and_no_keys() -> None:
    resolved = resolved_pipeline(
        [{"name": "alpha", "channels": ["A"]}, {"name": "beta", "channels": ["B"]}],
        [{"name": "probe", "channels": ["B"]}],
    )
    runner = PipelineRunner(resolved)
    keys_a = [k for k, _ in runner.step_keys("A", ["gt"])]
    keys_b = [k for k, _ in runner.step_keys("B", ["rollout"])]
    assert not any(k.startswith(("loss/gt/beta", "probe/", "health/")) for k in keys_a)
    assert not any("alpha" in k for k in keys_b)
    assert diag_failed_key("probe") in keys_b

    gen = torch.Generator().manual_seed(4)
    sample = make_sample(gen, 3, 5)
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    run_step([runner], [[[sample]]], params, channel="A")
    assert CALLS == [("alpha", "A")]
    CALLS.clear()
    run_step([runner], [[[sample]]], params, channel="B", contexts=("rollout",))
    assert CALLS == [("beta", "B"), ("probe", "B")]


def test_g7_disabled_modules_emit_nothing() -> None:
    resolved = resolved_pipeline(
        [{"name": "alpha"}, {"name": "beta", "enabled": False}], [{"name": "probe", "enabled": False}]
    )
    runner = PipelineRunner(resolved)
    assert not any("beta" in k or "probe" in k for k, _ in runner.step_keys("A", ["gt"]))
    gen = torch.Generator().manual_seed(5)
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    reduced, _ = run_step([runner], [[[make_sample(gen, 3, 5)]]], params)
    assert CALLS == [("alpha", "A")]
    assert not any("beta" in k or "probe" in k for k in reduced[0])
    assert len(resolved.payload()["objective"]) == 2


# ------------------------------------------------------------------ G11 isolation


def test_g11_failing_diagnostic_keeps_the_loss_and_is_disabled_on_all_ranks() -> None:
    gen = torch.Generator().manual_seed(6)
    samples = [make_sample(gen, 4, 5) for _ in range(4)]
    for s in samples:
        s[2][:] = True
    hot = (samples[0][0], samples[0][1] * 0 + 50.0, samples[0][2])  # rank 0 holds a value above the limit

    warnings: list[str] = []
    plain = resolved_pipeline([{"name": "alpha"}])
    guarded = resolved_pipeline([{"name": "alpha"}], [{"name": "probe", "config": {"fail_above": 10.0}}])
    runners = [PipelineRunner(guarded, world_size=2, warn=warnings.append) for _ in range(2)]
    ranks = [[[hot], [hot, samples[1]]], [[samples[2]], [samples[3]]]]

    params = torch.ones(4, dtype=torch.float64, requires_grad=True)
    reduced, losses = run_step(runners, ranks, params)
    reference = torch.ones(4, dtype=torch.float64, requires_grad=True)
    reduced_plain, losses_plain = run_step(
        [PipelineRunner(plain, world_size=2) for _ in range(2)], ranks, reference
    )

    assert losses == losses_plain
    torch.testing.assert_close(params.grad, reference.grad)
    assert len(warnings) == 1 and "FloatingPointError" in warnings[0]  # once per (module, type)
    assert runners[0].failed_diagnostics() == ("probe",) and runners[1].failed_diagnostics() == ()
    assert reduced[0][diag_failed_key("probe")] == 1.0  # skipped after its first failure on rank 0
    rank1_values = torch.cat([samples[2][1], samples[3][1]])  # params are 1, every row supervised
    assert reduced[0]["probe/gt/value_mean"] == pytest.approx(
        float(rank1_values.mean())
    )  # rank 1 kept reporting
    assert {k: v for k, v in reduced[0].items() if k.startswith("loss/")} == {
        k: v for k, v in reduced_plain[0].items() if k.startswith("loss/")
    }

    for runner, step_metrics in zip(runners, reduced, strict=True):
        assert runner.apply_step_health(step_metrics) == ["probe"]
        assert runner.disabled_diagnostics == {"probe"} and runner.failed_diagnostics() == ()
    assert runners[0].step_keys("A", ["gt"]) == runners[1].step_keys("A", ["gt"])
    assert not any(k.startswith(("probe/", "health/")) for k, _ in runners[0].step_keys("A", ["gt"]))
    CALLS.clear()
    run_step(runners, [[[samples[2]]], [[samples[3]]]], params)
    assert ("probe", "A") not in CALLS


def test_diagnostics_run_without_grad() -> None:
    resolved = resolved_pipeline([{"name": "alpha"}], [{"name": "probe"}])
    gen = torch.Generator().manual_seed(7)
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    run_step([PipelineRunner(resolved)], [[[make_sample(gen, 3, 5)]]], params)
    assert GRAD_ENABLED_IN_DIAGNOSTICS == [False]


def test_diagnostic_reduction_conflicts_disable_it() -> None:
    warnings: list[str] = []
    resolved = resolved_pipeline(
        [{"name": "alpha"}], [{"name": "probe", "config": {"emit_bad_reduction": True}}]
    )
    runner = PipelineRunner(resolved, warn=warnings.append)
    gen = torch.Generator().manual_seed(8)
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    reduced, _ = run_step([runner], [[[make_sample(gen, 3, 5)]]], params)
    assert reduced[0][diag_failed_key("probe")] == 1.0 and "requires" in warnings[0]
    assert not any(k.startswith("probe/") for k in reduced[0])


def test_diagnostic_with_an_invalid_declaration_is_disabled_deterministically() -> None:
    warnings: list[str] = []
    resolved = resolved_pipeline([{"name": "alpha"}], [{"name": "silent"}])
    runner = PipelineRunner(resolved, warn=warnings.append)
    keys = runner.step_keys("A", ["gt"])
    assert not any("silent" in k for k, _ in keys)
    assert runner.disabled_diagnostics == {"silent"} and "silent" in warnings[0]


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("raise", "objective 'gamma' .* failed: RuntimeError: gamma exploded"),
        ("bad_output", "must return a ModuleOutput"),
        ("bad_reduction", "requires sum"),
        ("undeclared", "was not declared by metric_keys"),
        ("loss_key", "requires|not declared"),
        ("den_mismatch", "pre-forward denominator"),
        ("unknown_atom", "unknown atom 'gamma_nope'"),
        ("foreign_group", "does not return"),
    ],
)
def test_g11_objective_violations_are_fatal_and_name_the_module(mode: str, match: str) -> None:
    resolved = resolved_pipeline([{"name": "alpha"}, {"name": "gamma", "config": {"misbehave": mode}}])
    runner = PipelineRunner(resolved)
    gen = torch.Generator().manual_seed(9)
    sample = make_sample(gen, 3, 5)
    dens = runner.denominators([ctxset([sample], None)])
    with pytest.raises(PipelineError, match=match) as info:
        runner.run(ctxset([sample], torch.randn(3, dtype=torch.float64)), dens)
    assert "gamma" in str(info.value)


def test_denominator_groups_belong_to_one_module() -> None:
    resolved = resolved_pipeline(
        [{"name": "alpha"}, {"name": "gamma", "config": {"misbehave": "shared_group"}}]
    )
    gen = torch.Generator().manual_seed(10)
    with pytest.raises(PipelineError, match="returned by both 'alpha' and 'gamma'"):
        PipelineRunner(resolved).denominators([ctxset([make_sample(gen, 3, 5)], None)])


def test_missing_step_denominator_raises() -> None:
    resolved = resolved_pipeline([{"name": "alpha"}])
    gen = torch.Generator().manual_seed(11)
    with pytest.raises(PipelineError, match="missing from the step denominators"):
        PipelineRunner(resolved).run(
            ctxset([make_sample(gen, 3, 5)], torch.randn(3, dtype=torch.float64)), {}
        )


def test_g11_only_canonical_loss_keys_are_emitted() -> None:
    resolved = resolved_pipeline(
        [{"name": "alpha"}, {"name": "beta"}, {"name": "gamma"}], [{"name": "probe"}]
    )
    runner = PipelineRunner(resolved)
    gen = torch.Generator().manual_seed(12)
    sample = make_sample(gen, 3, 6)
    sample[2][0] = True
    params = torch.randn(3, dtype=torch.float64, requires_grad=True)
    reduced, _ = run_step([runner], [[[sample]]], params)
    atoms = {"alpha_lin", "alpha_sq", "beta_all", "gamma_lin"}
    loss_keys = {k for k in reduced[0] if k.startswith("loss")}
    assert loss_keys == {f"loss/gt/{a}" for a in atoms} | {LOSS_TOTAL_KEY}
