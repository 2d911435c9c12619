"""Skipping pairs provably below the gate never changes a match (spec 03 §3.4; E7)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.rollout import matching as matching_mod
from coordexp.rollout import maskiou as maskiou_mod
from coordexp.rollout.maskiou import Geometry, GeometryBatch, maskiou_between, maskiou_between_many
from coordexp.rollout.matching import MatchingConfig, match

bins = st.integers(0, 999)


@st.composite
def scene_shapes(draw) -> Geometry:
    x, y = draw(st.integers(0, 900)), draw(st.integers(0, 900))
    w, h = draw(st.integers(1, 999 - x)), draw(st.integers(1, 999 - y))
    if draw(st.booleans()):
        return Geometry("bbox_2d", (x, y, x + w, y + h))
    n = draw(st.integers(3, 7))
    pts = [(draw(st.integers(x, x + w)), draw(st.integers(y, y + h))) for _ in range(n)]
    return Geometry("poly", tuple(v for p in pts for v in p))


configs = st.builds(
    MatchingConfig,
    candidate_top_k=st.integers(1, 8),
    maskiou_gate=st.sampled_from([0.0, 0.05, 0.3, 0.6, 1.0]),
    maskiou_resolution=st.sampled_from([32, 256]),
)


@settings(max_examples=120, deadline=None)
@given(
    preds=st.lists(scene_shapes(), max_size=8),
    gts=st.lists(scene_shapes(), max_size=8),
    cfg=configs,
)
def test_gated_matching_equals_matching_on_exact_ious(preds, gts, cfg: MatchingConfig) -> None:
    gated = match(preds, gts, cfg)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            matching_mod,
            "maskiou_between_many",
            lambda items, resolution, gate=None: maskiou_between_many(items, resolution),
        )
        exact = match(preds, gts, cfg)
    assert gated == exact


@settings(max_examples=80, deadline=None)
@given(
    preds=st.lists(scene_shapes(), min_size=1, max_size=6),
    gts=st.lists(scene_shapes(), min_size=1, max_size=6),
    gate=st.sampled_from([0.05, 0.3, 0.7]),
)
def test_skipped_pairs_are_below_the_gate(preds, gts, gate: float) -> None:
    pred, gt = GeometryBatch.of(preds), GeometryBatch.of(gts)
    everything = np.ones((len(preds), len(gts)), dtype=bool)
    exact = maskiou_between(pred, gt, everything, 256).values
    gated = maskiou_between(pred, gt, everything, 256, gate=gate).values
    computed = np.isfinite(gated)
    np.testing.assert_array_equal(gated[computed], exact[computed])
    assert (exact[~computed] < gate).all()


def test_gate_skips_intersecting_pairs_that_cannot_match(monkeypatch: pytest.MonkeyPatch) -> None:
    rings: list[int] = []
    intersected: list[int] = []
    real_rasterize, real_rect = maskiou_mod.rasterize_rings, maskiou_mod.rect_intersections

    def rasterize_recording(points, offsets, resolution):
        rings.append(offsets.size - 1)
        return real_rasterize(points, offsets, resolution)

    def rect_recording(rasters, ring_ids, rects):
        intersected.append(ring_ids.size)
        return real_rect(rasters, ring_ids, rects)

    monkeypatch.setattr(maskiou_mod, "rasterize_rings", rasterize_recording)
    monkeypatch.setattr(maskiou_mod, "rect_intersections", rect_recording)
    # A big box that barely touches a small triangle: IoU <= overlap / |box| < 0.3.
    box = Geometry("bbox_2d", (0, 0, 600, 600))
    triangle = Geometry("poly", (580, 580, 700, 580, 640, 700))
    result = match([box], [triangle], MatchingConfig(maskiou_gate=0.3))
    assert result.pairs == () and result.gating_rejections == 1
    assert rings == [1]  # the triangle (for its area); an exact box's raster is its rectangle
    assert intersected == []  # the pair is provably below the gate: no intersection computed
    near = Geometry("bbox_2d", (580, 580, 700, 700))
    assert match([near], [triangle], MatchingConfig(maskiou_gate=0.3)).pairs[0][:2] == (0, 0)
    assert intersected == [1]
