"""Default pipeline manifests (spec 05 §5.4, D7) and the stage-2 flat knobs (spec 05 §5.6).

Manifests are raw YAML-shaped mappings; they go through the same structuring and validation as an
authored ``pipeline`` so that the default and an equivalent authored pipeline hash identically.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

PIPELINE_PATHS: Mapping[str, str] = {
    "stage1": "stage1.pipeline",
    "stage2_two_channel": "stage2_ab.pipeline",
    "stage2_rollout_aligned": "rollout_matching.pipeline",
}
"""Where each trainer variant authors its pipeline (spec 05 §5.2)."""

_STAGE2_MANIFEST: Mapping[str, object] = {
    "objective": [{"name": "token_ce"}, {"name": "bbox_geo"}, {"name": "coord_reg"}],
    "diagnostics": [{"name": "coord_diag"}],
}
DEFAULT_MANIFESTS: Mapping[str, Mapping[str, object]] = {
    "stage1": {
        "objective": [{"name": "token_ce"}, {"name": "coord_reg"}],
        "diagnostics": [{"name": "coord_diag"}],
    },
    "stage2_two_channel": _STAGE2_MANIFEST,
    "stage2_rollout_aligned": _STAGE2_MANIFEST,
}

FLAT_KNOB_TARGETS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "stage2_two_channel": {
        "desc_ce_weight": ("token_ce", "desc_ce_weight"),
        "fmt_struct_ce_weight": ("token_ce", "self_context_struct_weight"),
        "bbox_smoothl1_weight": ("bbox_geo", "smoothl1_weight"),
        "bbox_ciou_weight": ("bbox_geo", "ciou_weight"),
        "coord_ce_weight": ("coord_reg", "coord_ce_weight"),
        "coord_soft_ce_weight": ("coord_reg", "soft_ce_weight"),
        "coord_w1_weight": ("coord_reg", "w1_weight"),
        "coord_gate_weight": ("coord_reg", "coord_gate_weight"),
        "text_gate_weight": ("coord_reg", "text_gate_weight"),
    },
}
"""Per variant: flat ``<section>.<knob>`` → (module, config key). Only two_channel has any (D36)."""


def default_manifest(variant: str) -> dict[str, object]:
    """A fresh, mutable copy of the variant's default pipeline mapping."""
    try:
        return copy.deepcopy(dict(DEFAULT_MANIFESTS[variant]))
    except KeyError:
        raise ValueError(f"no default manifest for trainer variant {variant!r}") from None


def flat_knob_targets(variant: str) -> Mapping[str, tuple[str, str]]:
    """The flat knobs of ``variant`` (empty for stage1 and rollout_aligned)."""
    return FLAT_KNOB_TARGETS.get(variant, {})
