"""G2 across packages: the default manifests of spec 05 §5.4, resolved with the real installed
modules (coordexp-losses entry points), hash to the golden checksums and run end to end."""

from __future__ import annotations

import math

import pytest
import torch

from coordexp.core.metrics import StepAggregator
from coordexp.core.pipeline.checksum import canonical
from coordexp.core.pipeline.manifests import PIPELINE_PATHS
from coordexp.core.pipeline.runner import PipelineRunner
from coordexp.core.pipeline.spec import resolve_pipeline
from coordexp.core.plugins.protocol import Strategy
from coordexp.core.plugins.registry import ModuleRegistry
from coordexp.core.tokens import SpanKind, TokenType
from coordexp.losses.masking import token_row_weights
from coordexp.losses.token_ce import TokenCE
from coordexp.testing.factory import make_context_set
from coordexp.testing.golden import GOLDEN_CHECKSUMS as GOLDEN, STAGE1_PAYLOAD

BBOX_GEO_ENTRY_CONFIG = {"ciou_weight": 1.0, "smoothl1_beta": 0.02, "smoothl1_weight": 1.0}


def strategy(variant: str, n_iter: int = 1) -> Strategy:
    return Strategy(
        trainer_variant=variant,
        packing="none",
        max_length=4096,
        n_softctx_iter=n_iter,
        b_ratio=0.5 if variant == "stage2_two_channel" else None,
    )


def default(variant: str, n_iter: int = 1, flat_knobs=None):
    return resolve_pipeline(
        None,
        variant=variant,
        path=PIPELINE_PATHS[variant],
        strategy=strategy(variant, n_iter),
        registry=ModuleRegistry(environ={}),
        flat_knobs=flat_knobs,
    )


@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_default_manifests_hash_to_the_golden_checksums_with_the_real_modules(variant):
    resolved = default(variant)
    assert resolved.is_default
    assert resolved.checksum == GOLDEN[variant]
    for module in resolved.objective + resolved.diagnostics:
        assert module.module_cls.__module__.startswith("coordexp.losses.")


def test_the_stage1_payload_is_byte_exact_and_stage2_inserts_bbox_geo():
    assert canonical(default("stage1").payload()) == STAGE1_PAYLOAD
    for variant in ("stage2_two_channel", "stage2_rollout_aligned"):
        objective = default(variant).payload()["objective"]
        assert [entry["name"] for entry in objective] == ["token_ce", "bbox_geo", "coord_reg"]
        assert objective[1]["config"] == BBOX_GEO_ENTRY_CONFIG


def test_n_softctx_iter_is_a_strategy_key_and_stays_out_of_the_checksum():
    assert default("stage2_two_channel", n_iter=3).checksum == GOLDEN["stage2_two_channel"]


def test_g6_the_flat_desc_weight_reaches_gt_and_fn_desc_rows():
    resolved = default("stage2_two_channel", flat_knobs={"desc_ce_weight": 0.5})
    token_ce = resolved.objective[0]
    assert isinstance(token_ce.module, TokenCE)
    assert token_ce.config.desc_ce_weight == 0.5 and token_ce.config.rollout_fn_desc_weight == 0.5
    assert resolved.checksum != GOLDEN["stage2_two_channel"]
    weights = token_ce.config.token_weights()
    gt = make_context_set(0, channel="A", trainer_variant="stage2_two_channel").text_context
    rollout = make_context_set(1, channel="B", max_objects=4).text_context
    for ctx, span in ((gt, None), (rollout, SpanKind.FN)):
        row_weight = token_row_weights(ctx, weights)
        desc = ctx.token_type == TokenType.DESC
        if span is not None:
            desc &= ctx.span_kind == span
        assert desc.any() and torch.all(row_weight[desc] == 0.5)


@pytest.mark.parametrize(
    ("variant", "channel", "n_iter"),
    [
        ("stage1", "A", 1),
        ("stage2_two_channel", "A", 1),
        ("stage2_two_channel", "A", 2),
        ("stage2_two_channel", "B", 1),
        ("stage2_rollout_aligned", "B", 1),
    ],
)
def test_the_default_pipeline_runs_a_step(variant, channel, n_iter):
    runner = PipelineRunner(default(variant, n_iter))
    sets = [
        make_context_set(seed, channel=channel, n_softctx_iter=n_iter, trainer_variant=variant)
        for seed in (0, 1)
    ]
    names = [name.value for name in sets[0].contexts]
    aggregator = StepAggregator(runner.step_keys(channel, names))
    denominators = runner.denominators(sets)
    for ctxset in sets:
        loss, metrics = runner.run(ctxset, denominators)
        assert torch.isfinite(loss) and loss.requires_grad
        loss.backward()
        aggregator.add(metrics)
    reduced = aggregator.reduce()
    atoms = {k: v for k, v in reduced.items() if k.startswith("loss/") and k != "loss/total"}
    assert reduced["loss/total"] == pytest.approx(math.fsum(atoms.values()), rel=1e-12)
    text = "rollout" if channel == "B" else "gt"
    coord = "self_context" if n_iter >= 2 else text
    assert {f"loss/{text}/struct_ce", f"loss/{text}/desc_ce", f"loss/{coord}/coord_soft_ce"} <= set(atoms)
    assert (f"loss/{coord}/bbox_ciou" in atoms) == (variant != "stage1")
    assert f"coord_diag/{text}/p_gt_mean" in reduced
    assert not runner.failed_diagnostics()
