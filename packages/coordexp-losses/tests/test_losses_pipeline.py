"""The built-in modules inside the real pipeline: L8, L9, G7, G11, and the diagnostics' values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coordexp.core.context import ContextSet
from coordexp.core.errors import ConfigError, PipelineError
from coordexp.core.geometry import box_iou, canonicalize_boxes
from coordexp.core.metrics import StepAggregator
from coordexp.core.pipeline.manifests import PIPELINE_PATHS, default_manifest
from coordexp.core.pipeline.runner import PipelineRunner
from coordexp.core.pipeline.spec import resolve_pipeline
from coordexp.core.plugins.protocol import Strategy
from coordexp.core.plugins.registry import ModuleRegistry
from coordexp.core.tokens import TokenType
from coordexp.losses.box_diag import BoxDiag
from coordexp.losses.coord_diag import CoordDiag, CoordDiagConfig
from coordexp.testing.factory import make_context_set, make_samples, pack_samples

BUILT_IN_ATOMS = {
    "struct_ce",
    "desc_ce",
    "coord_token_ce",
    "coord_soft_ce",
    "coord_w1",
    "coord_entropy",
    "coord_el1",
    "coord_ehuber",
    "coord_gate",
    "text_gate",
    "bbox_smoothl1",
    "bbox_ciou",
}


@pytest.fixture(scope="module")
def registry() -> ModuleRegistry:
    return ModuleRegistry(environ={})


def strategy(variant: str, n_iter: int = 1) -> Strategy:
    return Strategy(
        trainer_variant=variant,
        packing="none",
        max_length=2048,
        n_softctx_iter=n_iter,
        b_ratio=0.5 if variant == "stage2_two_channel" else None,
    )


def resolve(registry, raw, variant="stage2_two_channel", n_iter=1):
    return resolve_pipeline(
        raw,
        variant=variant,
        path=PIPELINE_PATHS[variant],
        strategy=strategy(variant, n_iter),
        registry=registry,
    )


def run_step(
    runner: PipelineRunner, ctxsets: list[ContextSet]
) -> tuple[list[torch.Tensor], dict[str, float]]:
    channel = ctxsets[0].channel
    aggregator = StepAggregator(runner.step_keys(channel, [n.value for n in ctxsets[0].contexts]))
    denominators = runner.denominators(ctxsets)
    losses = []
    for ctxset in ctxsets:
        loss, metrics = runner.run(ctxset, denominators)
        losses.append(loss)
        aggregator.add(metrics)
    return losses, aggregator.reduce()


def test_l8_total_is_the_sum_of_atoms_and_struct_plus_desc_is_token_ce(registry):
    resolved = resolve(registry, None, "stage1")
    runner = PipelineRunner(resolved)
    ctxset = make_context_set(11, channel="A", n_samples=3)
    _, reduced = run_step(runner, [ctxset])
    atoms = {k: v for k, v in reduced.items() if k.startswith("loss/") and k != "loss/total"}
    assert reduced["loss/total"] == pytest.approx(math.fsum(atoms.values()), rel=1e-12)
    ctx = ctxset.text_context
    text = (ctx.token_type != TokenType.COORD) & (ctx.row_mult > 0)
    token_ce = F.cross_entropy(
        ctx.logits[text].detach().double(), ctx.target_ids[text]
    )  # default weights: all 1.0
    assert reduced["loss/gt/struct_ce"] + reduced["loss/gt/desc_ce"] == pytest.approx(
        float(token_ce), rel=1e-5
    )
    for key in atoms:
        _, context, atom = key.split("/")
        assert context == "gt" and atom in BUILT_IN_ATOMS  # G11: only canonical loss keys


def test_l8_over_micro_batches_and_contexts(registry):
    raw = default_manifest("stage2_two_channel")
    raw["objective"][0]["config"] = {"self_context_struct_weight": 0.5}
    runner = PipelineRunner(resolve(registry, raw, n_iter=2))
    sets = [
        make_context_set(seed, channel="A", n_softctx_iter=2, trainer_variant="stage2_two_channel")
        for seed in (1, 2)
    ]
    losses, reduced = run_step(runner, sets)
    atoms = [v for k, v in reduced.items() if k.count("/") == 2 and k.startswith("loss/")]
    assert reduced["loss/total"] == pytest.approx(math.fsum(atoms), rel=1e-12)
    assert float(sum(loss.detach() for loss in losses)) == pytest.approx(reduced["loss/total"], rel=1e-5)
    assert {"loss/self_context/struct_ce", "loss/gt/struct_ce", "loss/self_context/coord_w1"} <= set(reduced)
    assert "loss/gt/coord_w1" not in reduced  # coord terms move to self_context with N >= 2


@pytest.mark.parametrize(
    ("variant", "n_iter", "entry", "path", "fragment"),
    [
        (
            "stage1",
            1,
            {"name": "token_ce", "config": {"rollout_fn_desc_weight": 0.3}},
            "stage1.pipeline.objective[0].config.rollout_fn_desc_weight",
            "Channel B",
        ),
        (
            "stage2_two_channel",
            1,
            {"name": "token_ce", "config": {"self_context_struct_weight": 0.3}},
            "stage2_ab.pipeline.objective[0].config.self_context_struct_weight",
            "n_softctx_iter = 1",
        ),
        (
            "stage1",
            1,
            {"name": "token_ce", "config": {"struct_ce_weight": 0.0, "desc_ce_weight": 0}},
            "stage1.pipeline.objective[0].config",
            "every token_ce weight",
        ),
        (
            "stage1",
            1,
            {"name": "coord_reg", "config": {"soft_ce_weight": 0, "w1_weight": 0, "coord_gate_weight": 0}},
            "stage1.pipeline.objective[0].config",
            "every atom weight",
        ),
        (
            "stage2_rollout_aligned",
            1,
            {"name": "bbox_geo", "config": {"smoothl1_weight": 0, "ciou_weight": 0.0}},
            "rollout_matching.pipeline.objective[0].config",
            "every atom weight",
        ),
        (
            "stage1",
            1,
            {"name": "coord_reg", "config": {"temperature": 0}},
            "stage1.pipeline.objective[0].config.temperature",
            "> 0",
        ),
        (
            "stage1",
            1,
            {"name": "coord_reg", "config": {"coord_soft_ce_weight": 1.0}},
            "stage1.pipeline.objective[0].config.coord_soft_ce_weight",
            "use `soft_ce_weight`",
        ),
        (
            "stage1",
            1,
            {"name": "token_ce", "config": {"desc_ce_weight": "1.0"}},
            "stage1.pipeline.objective[0].config.desc_ce_weight",
            "expected a number",
        ),
    ],
)
def test_l9_inert_inapplicable_and_all_zero_settings_raise_with_their_path(
    registry, variant, n_iter, entry, path, fragment
):
    raw = {"objective": [entry]}
    if entry["name"] != "token_ce":
        raw["objective"].append({"name": "token_ce"})
    with pytest.raises(ConfigError) as info:
        resolve(registry, raw, variant, n_iter)
    assert info.value.path == path
    assert fragment in info.value.message


def test_g7_channel_scoping_and_disabled_modules(registry):
    raw = {
        "objective": [
            {"name": "token_ce", "channels": ["A"]},
            {"name": "bbox_geo", "enabled": False},
            {"name": "coord_reg"},
        ],
        "diagnostics": [{"name": "coord_diag", "channels": ["B"]}],
    }
    resolved = resolve(registry, raw)
    runner = PipelineRunner(resolved)
    b_keys = {k for k, _ in runner.step_keys("B", ["rollout"])}
    assert not any("struct_ce" in k or "desc_ce" in k or "text_diag" in k for k in b_keys)
    assert not any("bbox" in k or "box_terms" in k for k in b_keys)
    _, reduced = run_step(runner, [make_context_set(3, channel="B")])
    assert not any("struct_ce" in k or "bbox" in k for k in reduced)
    assert "coord_diag/rollout/p_gt_mean" in reduced
    _, reduced_a = run_step(runner, [make_context_set(3, channel="A", trainer_variant="stage2_two_channel")])
    assert "loss/gt/struct_ce" in reduced_a and not any(k.startswith("coord_diag") for k in reduced_a)
    raw["objective"][1]["enabled"] = True
    assert resolve(registry, raw).checksum != resolved.checksum  # disabled modules are checksummed


def test_g11_a_failing_diagnostic_never_changes_the_loss(registry, monkeypatch):
    raw = default_manifest("stage1")
    raw["diagnostics"].append({"name": "box_diag"})
    ctx_seed = 7
    clean = PipelineRunner(resolve(registry, raw, "stage1"))
    loss_clean, reduced_clean = run_step(clean, [make_context_set(ctx_seed, channel="A")])

    def explode(self, ctxset, cfg):
        raise RuntimeError("diagnostic bug")

    monkeypatch.setattr(CoordDiag, "compute", explode)
    warnings: list[str] = []
    failing = PipelineRunner(resolve(registry, raw, "stage1"), warn=warnings.append)
    loss_failing, reduced = run_step(failing, [make_context_set(ctx_seed, channel="A")])
    assert torch.equal(loss_failing[0].detach(), loss_clean[0].detach())
    assert reduced["health/diag_failed/coord_diag_count"] == 1.0
    assert reduced["loss/total"] == reduced_clean["loss/total"]
    assert "box_diag/gt/iou_mean" in reduced  # the other diagnostic still ran
    assert failing.apply_step_health(reduced) == ["coord_diag"]
    assert "coord_diag" not in {m.name for m in failing.diagnostics("A")}
    assert len(warnings) == 1 and "diagnostic bug" in warnings[0]


def test_g11_a_failing_objective_raises(registry, monkeypatch):
    from coordexp.losses.coord_reg import CoordReg

    def explode(self, ctxset, cfg):
        raise ValueError("objective bug")

    monkeypatch.setattr(CoordReg, "compute", explode)
    runner = PipelineRunner(resolve(registry, None, "stage1"))
    with pytest.raises(PipelineError, match="coord_reg.*objective bug"):
        run_step(runner, [make_context_set(0, channel="A")])


def test_coord_diag_values_match_a_hand_computation():
    samples = make_samples(9, context="rollout", n_samples=3, max_objects=4)
    ctx = pack_samples(samples, row_mult=[1.0, 0.0, 1.0])
    ctxset = ContextSet.for_channel("B", {"rollout": ctx})
    with torch.no_grad():
        metrics = {m.key: m for m in CoordDiag().compute(ctxset, CoordDiagConfig(acc_top_k=3)).metrics}
    assert set(metrics) == {k for k, _ in CoordDiag().metric_keys("B", "rollout")}
    rows = [r for r in range(ctx.n_rows) if ctx.coord_rows[r] and ctx.row_mult[r] > 0]
    sums = dict.fromkeys(["mass", "p_gt", "top1", "topk", "margin", "mae", "w1"], 0.0)
    bins = torch.arange(1000, dtype=torch.float64)
    for r in rows:
        z = ctx.logits[r].detach().double()
        s = z[ctx.coord_ids]
        p = torch.softmax(s, 0)
        t = int(ctx.coord_target[r])
        sums["mass"] += float(torch.softmax(z, 0)[ctx.coord_ids].sum())
        sums["p_gt"] += float(p[t])
        sums["top1"] += float(int(s.argmax()) == t)
        sums["topk"] += float(t in s.topk(3).indices.tolist())
        sums["margin"] += float(s.max() - s[t])
        sums["mae"] += abs(float(p @ bins) - t)
        sums["w1"] += float((p * (bins - t).abs()).sum())
    names = {
        "mass": "coord_vocab_mass_mean",
        "p_gt": "p_gt_mean",
        "top1": "acc_top1_rate",
        "topk": "acc_topk_rate",
        "margin": "margin_mean",
        "mae": "expected_bin_mae_mean",
        "w1": "w1_to_delta_mean",
    }
    assert metrics["coord_diag/rollout/coord_rows_count"].value == len(rows)
    for short, key in names.items():
        metric = metrics[f"coord_diag/rollout/{key}"]
        assert float(metric.den) == len(rows)
        assert float(metric.num) == pytest.approx(sums[short], rel=1e-4, abs=1e-4)
    text = [r for r in range(ctx.n_rows) if ctx.token_type[r] != TokenType.COORD and ctx.row_mult[r] > 0]
    text_mass = sum(
        float(torch.softmax(ctx.logits[r].detach().double(), 0)[ctx.coord_ids].sum()) for r in text
    )
    metric = metrics["coord_diag/rollout/text_coord_vocab_mass_mean"]
    assert float(metric.den) == len(text) and float(metric.num) == pytest.approx(text_mass, rel=1e-4)


def test_box_diag_values_match_a_hand_computation():
    ctxset = make_context_set(
        6, channel="A", n_softctx_iter=2, trainer_variant="stage2_two_channel", max_objects=4
    )
    with torch.no_grad():
        metrics = {m.key: m for m in BoxDiag().compute(ctxset, BoxDiag.Config()).metrics}
    for name, ctx in ctxset.contexts.items():
        pred = canonicalize_boxes(ctx.decoded_boxes.detach())
        target = canonicalize_boxes(ctx.target_boxes)
        iou = box_iou(pred, target)
        prefix = f"box_diag/{name.value}"
        assert metrics[f"{prefix}/boxes_count"].value == ctx.bbox_groups.n_groups
        assert float(metrics[f"{prefix}/iou_mean"].num) == pytest.approx(float(iou.sum()), rel=1e-5)
        assert float(metrics[f"{prefix}/iou50_rate"].num) == float((iou >= 0.5).sum())
        err = float(((pred - target).abs() * 999).mean(-1).sum())
        assert float(metrics[f"{prefix}/abs_err_bins_mean"].num) == pytest.approx(err, rel=1e-4)
