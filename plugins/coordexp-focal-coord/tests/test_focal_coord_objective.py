"""coord_focal: the conformance suite, values and gradients vs a hand loop, validation, packaging."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError
from coordexp.core.plugins.protocol import Strategy
from coordexp.testing.conformance import ModuleConformance
from coordexp.testing.factory import make_context_set
from coordexp_focal_coord.objective import CoordFocal, CoordFocalConfig, focal_terms

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class TestCoordFocalConformance(ModuleConformance):
    module = CoordFocal
    configs = (CoordFocalConfig(), CoordFocalConfig(gamma=0.5, focal_weight=2.0))
    seeds = (0,)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.5])
@pytest.mark.parametrize(("channel", "n_iter"), [("A", 1), ("A", 2), ("B", 1)])
def test_values_and_gradients_match_a_hand_loop(gamma, channel, n_iter):
    ctxset = make_context_set(3, channel=channel, n_softctx_iter=n_iter, trainer_variant="stage2_two_channel")
    ctx = ctxset.coord_context
    term = CoordFocal().compute(ctxset, CoordFocalConfig(gamma=gamma)).atoms["coord_focal"][0]
    assert term.context == ctx.name.value
    expected = torch.zeros((), dtype=torch.float64)
    for row in torch.nonzero(ctx.coord_rows).reshape(-1).tolist():
        p = torch.softmax(ctx.logits[row, ctx.coord_ids].double(), 0)[int(ctx.coord_target[row])]
        expected = expected - (1 - p) ** gamma * torch.log(p)
    torch.testing.assert_close(term.num.double(), expected, rtol=1e-5, atol=1e-6)
    assert term.den == float(ctx.coord_rows.sum())
    (grad,) = torch.autograd.grad(term.num, ctx.logits, retain_graph=True)
    (ref,) = torch.autograd.grad(expected, ctx.logits)
    torch.testing.assert_close(grad.double(), ref.double(), rtol=1e-4, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), gamma=st.floats(0.1, 5.0), t=st.integers(0, 999))
def test_focal_is_at_most_the_plain_ce_and_shrinks_with_gamma(seed, gamma, t):
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4
    log_probs = torch.log_softmax(logits, -1)
    target = torch.tensor([t])
    focal, modulation = focal_terms(log_probs, target, gamma)
    plain = -log_probs[0, t]
    assert 0.0 <= float(focal[0]) <= float(plain) + 1e-12
    assert 0.0 < float(modulation[0]) <= 1.0
    stronger, _ = focal_terms(log_probs, target, gamma + 1.0)
    assert float(stronger[0]) <= float(focal[0]) + 1e-12


def test_gamma_zero_is_rejected_in_favour_of_coord_reg():
    strategy = Strategy(trainer_variant="stage1", packing="none", max_length=1024)
    with pytest.raises(ConfigError) as info:
        CoordFocal().validate(CoordFocalConfig(gamma=0.0), "stage1", strategy)
    assert info.value.path == "gamma" and "coord_ce_weight" in info.value.message
    with pytest.raises(ValueError, match="gamma"):
        CoordFocalConfig(gamma=-1.0)


def test_the_entry_point_names_the_class():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    target = project["entry-points"]["coordexp.objectives"]["coord_focal"]
    module_name, attr = target.split(":")
    assert module_name == CoordFocal.__module__ and attr == CoordFocal.__qualname__
    assert project["name"] == "coordexp-focal-coord"
