"""`coordexp eval DIR`: COCO mAP / F1 of a `gt_vs_pred.jsonl` (spec 06 §6.1–§6.6; never loads a model)."""

from __future__ import annotations

import argparse

from coordexp.core.errors import ConfigError


def _metric_list(text: str) -> tuple[str, ...]:
    from coordexp.train.eval.evaluate import check_metrics

    try:
        return check_metrics(tuple(part.strip() for part in text.split(",") if part.strip()))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"--metrics: {exc.message}") from None


def _eval(args: argparse.Namespace) -> int:
    from coordexp.train.eval.evaluate import evaluate_dir

    outcome = evaluate_dir(
        args.dir, metrics=args.metrics, backend=args.backend, score_source=args.score_source
    )
    return 1 if outcome.error is not None else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a gt_vs_pred.jsonl (COCO mAP, F1) and write metrics.json next to it",
        description=(
            "Evaluate DIR/gt_vs_pred.jsonl written by `coordexp infer` or the training eval step; "
            "writes DIR/metrics.json and prints a table. Exit 1 when the evaluation failed "
            "(metrics reported as 0.0), 2 on a malformed artifact."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="directory holding gt_vs_pred.jsonl")
    p.add_argument(
        "--metrics",
        type=_metric_list,
        default=("coco",),
        help="comma-separated families: coco, f1 (default: coco)",
    )
    p.add_argument(
        "--backend", choices=("faster", "pycocotools"), default="faster", help="COCOeval implementation"
    )
    p.add_argument(
        "--score-source",
        choices=("coord_logprob", "constant"),
        default=None,
        help="override the ranking: constant = every score 1.0 (default: the recorded scores)",
    )
    p.set_defaults(handler=_eval)
