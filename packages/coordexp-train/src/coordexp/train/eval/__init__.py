"""Detection evaluation: ``gt_vs_pred.jsonl`` records, scores, COCO mAP and F1 (spec 06 §6.2–§6.6)."""

from coordexp.train.eval.evaluate import (
    METRIC_FAMILIES,
    STATS_KEYS,
    EvalOutcome,
    evaluate_dir,
    evaluate_outcome,
    evaluate_records,
    metric_keys,
)
from coordexp.train.eval.records import (
    GT_VS_PRED_FILE,
    GTItem,
    ImageRecord,
    ParseSummary,
    PredItem,
    image_record,
    read_records,
    write_records,
)
from coordexp.train.eval.scores import ImageScores, score_prediction, score_predictions

__all__ = [
    "GT_VS_PRED_FILE",
    "METRIC_FAMILIES",
    "STATS_KEYS",
    "EvalOutcome",
    "GTItem",
    "ImageRecord",
    "ImageScores",
    "ParseSummary",
    "PredItem",
    "evaluate_dir",
    "evaluate_outcome",
    "evaluate_records",
    "image_record",
    "metric_keys",
    "read_records",
    "score_prediction",
    "score_predictions",
    "write_records",
]
