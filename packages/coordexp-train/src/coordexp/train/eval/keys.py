"""The eval key families of spec 06 §6.6 (the fixed key set a config enables)."""

from __future__ import annotations

MAP_KEY = "rollout/mAP"
# COCOeval stat name → logged key, in COCOeval's stat order (the last 3 stats have no key).
COCO_STAT_KEYS: dict[str, str] = {
    "AP": MAP_KEY,
    "AP50": "rollout/AP50",
    "AP75": "rollout/AP75",
    "AP_small": "rollout/AP_small",
    "AP_medium": "rollout/AP_medium",
    "AP_large": "rollout/AP_large",
    "AR1": "rollout/AR1",
    "AR10": "rollout/AR10",
    "AR100": "rollout/AR100",
}
COCO_KEYS: tuple[str, ...] = tuple(COCO_STAT_KEYS.values())
F1_KEYS: tuple[str, ...] = (
    "rollout/f1@0.50",
    "rollout/precision@0.50",
    "rollout/recall@0.50",
    "rollout/f1@0.75",
    "rollout/f1@[.50:.95]",
    "rollout/f1_loc@0.50",
)
FAILED_KEY = "rollout/eval_failed_count"
STATS_KEYS: tuple[str, ...] = (
    "rollout/eval_samples_count",
    "rollout/eval_invalid_rollout_rate",
    "rollout/eval_truncated_rate",
    "rollout/eval_pred_per_image_mean",
    "rollout/unmapped_pred_count",
    "rollout/score_fallback_count",
    FAILED_KEY,
)
