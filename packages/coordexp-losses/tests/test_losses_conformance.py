"""The built-in modules pass the plugin author's conformance suite (coordexp.testing.conformance)."""

from __future__ import annotations

from coordexp.losses.bbox_geo import BBoxGeo, BBoxGeoConfig
from coordexp.losses.box_diag import BoxDiag
from coordexp.losses.coord_diag import CoordDiag, CoordDiagConfig
from coordexp.losses.coord_reg import CoordReg, CoordRegConfig
from coordexp.losses.token_ce import TokenCE, TokenCEConfig
from coordexp.testing.conformance import ModuleConformance


class TestTokenCEConformance(ModuleConformance):
    module = TokenCE
    configs = (
        TokenCEConfig(),
        TokenCEConfig(desc_ce_weight=0.0, rollout_fn_desc_weight=0.5, self_context_struct_weight=0.3),
    )
    seeds = (0,)


class TestCoordRegConformance(ModuleConformance):
    module = CoordReg
    configs = (
        CoordRegConfig(),
        CoordRegConfig(
            coord_ce_weight=1.0,
            entropy_weight=-0.2,
            el1_weight=1.0,
            ehuber_weight=1.0,
            text_gate_weight=0.5,
            temperature=0.7,
            target_truncate=3,
        ),
    )
    seeds = (0,)


class TestBBoxGeoConformance(ModuleConformance):
    module = BBoxGeo
    configs = (BBoxGeoConfig(), BBoxGeoConfig(ciou_weight=0.0, smoothl1_beta=0.1))
    seeds = (0,)


class TestCoordDiagConformance(ModuleConformance):
    module = CoordDiag
    configs = (CoordDiagConfig(), CoordDiagConfig(acc_top_k=1000))
    seeds = (0,)


class TestBoxDiagConformance(ModuleConformance):
    module = BoxDiag
    seeds = (0,)
