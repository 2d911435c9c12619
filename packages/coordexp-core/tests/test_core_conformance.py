"""The conformance suite accepts a correct module and catches each kind of broken one."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import pytest
import torch

from coordexp.core.metrics import MEAN, Metric
from coordexp.core.plugins.protocol import AtomTerm, DiagnosticModule, ModuleOutput, ObjectiveModule
from coordexp.testing import conformance
from coordexp.testing.conformance import DEFAULT_SCENARIOS, ModuleConformance, Scenario, check_module

FAST = (
    Scenario("stage1", "A"),
    Scenario("stage2_two_channel", "A", 2),
    Scenario("stage2_rollout_aligned", "B"),
)


@attrs.frozen(kw_only=True)
class ProbeConfig:
    ce_weight: float = attrs.field(default=1.0, validator=attrs.validators.ge(0.0))


class ProbeCE(ObjectiveModule):
    """Correct reference: weighted mean of −log p_t over the coord rows of the coord context."""

    name: ClassVar[str] = "probe_ce"
    atoms: ClassVar[tuple[str, ...]] = ("probe_ce",)
    Config: ClassVar[type] = ProbeConfig

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"probe_ce": cfg.ce_weight}

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"probe/{context}/p_gt_mean", MEAN)]

    def group(self, ctx: Any) -> str:
        return f"probe_ce/{ctx.name.value}/rows"

    def den(self, ctx: Any) -> float:
        return float(ctx.coord_row_weight.sum())

    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        return {self.group(ctxset.coord_context): self.den(ctxset.coord_context)}

    def numerator(self, ctx: Any) -> torch.Tensor:
        nll = -ctx.coord_log_probs.gather(1, ctx.coord_targets[:, None]).squeeze(1)
        return (ctx.coord_row_weight * nll).sum()

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        ctx = ctxset.coord_context
        p_gt = ctx.coord_probs.detach().gather(1, ctx.coord_targets[:, None]).sum()
        return ModuleOutput(
            atoms={"probe_ce": AtomTerm(ctx.name.value, self.numerator(ctx), self.group(ctx), self.den(ctx))},
            metrics=[Metric.mean(f"probe/{ctx.name.value}/p_gt_mean", p_gt, ctx.coord_row_index.numel())],
        )


def test_a_correct_module_passes_and_the_report_lists_what_ran():
    report = check_module(ProbeCE, [ProbeConfig(), ProbeConfig(ce_weight=0.5)], seeds=(0,))
    assert report.module == "probe_ce"
    assert len(report.ran) == 2 * len(DEFAULT_SCENARIOS) and not report.skipped
    assert "packing_invariance" in report.checks and "fp_neutral" in report.checks


class TestProbeAsPytestClass(ModuleConformance):
    module = ProbeCE
    scenarios = FAST
    seeds = (0,)


class SumNotMean(ProbeCE):
    def den(self, ctx: Any) -> float:
        return 1.0


class UndeclaredMetric(ProbeCE):
    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return []


class WrongDen(ProbeCE):
    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        out = super().compute(ctxset, cfg)
        term = out.atoms["probe_ce"][0]
        return ModuleOutput(atoms={"probe_ce": attrs.evolve(term, den=term.den + 1.0)}, metrics=out.metrics)


class BadGroupName(ProbeCE):
    def group(self, ctx: Any) -> str:
        return "rows"


class Noisy(ProbeCE):
    def numerator(self, ctx: Any) -> torch.Tensor:
        return super().numerator(ctx) + torch.rand(()) * 1e-3


class LeaksIntoGT(ProbeCE):
    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        out = super().compute(ctxset, cfg)
        term = out.atoms["probe_ce"][0]
        leak = sum(c.logits[:1, :1].sum() * 1e-3 for c in ctxset.contexts.values())
        return ModuleOutput(atoms={"probe_ce": attrs.evolve(term, num=term.num + leak)}, metrics=out.metrics)


class IgnoresPadding(ProbeCE):
    def den(self, ctx: Any) -> float:
        return float(ctx.coord_row_index.numel())

    def numerator(self, ctx: Any) -> torch.Tensor:
        return -ctx.coord_log_probs.gather(1, ctx.coord_targets[:, None]).sum()


class NaNOnDegenerate(ProbeCE):
    def numerator(self, ctx: Any) -> torch.Tensor:
        boxes = ctx.decoded_boxes
        target = ctx.target_boxes
        area = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
        return super().numerator(ctx) + ((boxes - target).abs().sum(-1) / area).sum()


@pytest.mark.parametrize(
    ("module", "check", "message"),
    [
        (SumNotMean, conformance.check_packing_invariance, "step denominators depend on packing"),
        (UndeclaredMetric, conformance.check_output_contract, "is not declared by metric_keys"),
        (WrongDen, conformance.check_output_contract, "pre-forward den"),
        (BadGroupName, conformance.check_output_contract, "must be named '<module>/<context>/<what>'"),
        (Noisy, conformance.check_deterministic, "differ between two identical runs"),
        (LeaksIntoGT, conformance.check_gradients_reach_logits, "leaks gradient"),
        (IgnoresPadding, conformance.check_empty_and_padding, "padding pack"),
        (NaNOnDegenerate, conformance.check_degenerate_and_extreme, "degenerate boxes.*not finite"),
    ],
)
def test_each_broken_module_is_caught_by_its_check_and_by_check_module(module, check, message):
    with pytest.raises(AssertionError, match=message):
        check(module, None, FAST, (0,))
    with pytest.raises(AssertionError):
        check_module(module, scenarios=FAST, seeds=(0,))


class NotFrozen(ProbeCE):
    @attrs.define
    class Config:
        ce_weight: float = 1.0


class Rejected(ProbeCE):
    def validate(self, cfg: Any, variant: str, strategy: Any) -> None:
        from coordexp.core.errors import ConfigError

        raise ConfigError("ce_weight", "never valid")


def test_protocol_and_config_failures_are_reported():
    with pytest.raises(AssertionError, match="frozen"):
        check_module(NotFrozen, scenarios=FAST, seeds=(0,))
    with pytest.raises(AssertionError, match="rejects this config in every scenario"):
        check_module(Rejected, scenarios=FAST, seeds=(0,))


class FineDiagnostic(DiagnosticModule):
    name: ClassVar[str] = "fine_diag"
    Config: ClassVar[type] = ProbeConfig

    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"fine_diag/{context}/rows_count", "sum")]

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        return ModuleOutput(
            metrics=[
                Metric.sum(f"fine_diag/{c.name.value}/rows_count", c.n_rows) for c in ctxset.contexts.values()
            ]
        )


class BadReductionDiagnostic(FineDiagnostic):
    def metric_keys(self, channel: str, context: str) -> list[tuple[str, str]]:
        return [(f"fine_diag/{context}/rows_count", "mean")]


def test_diagnostics_run_through_the_pipeline_and_bad_reductions_are_caught():
    check_module(FineDiagnostic, scenarios=FAST, seeds=(0,))
    with pytest.raises(AssertionError, match="requires sum"):
        conformance.check_metric_keys(BadReductionDiagnostic)
