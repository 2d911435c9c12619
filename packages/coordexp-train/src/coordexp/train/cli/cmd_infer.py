"""`coordexp infer SOURCE --data VAL.jsonl --out DIR`: greedy detection into gt_vs_pred.jsonl."""

from __future__ import annotations

import argparse

from coordexp.rollout.decoding import COORD_PICKS


def _run(args: argparse.Namespace) -> int:
    from coordexp.train.recipes.infer import run_inference

    path = run_inference(
        args.source,
        args.data,
        args.out,
        max_new_tokens=args.max_new_tokens,
        decode_batch_size=args.batch_size,
        coord_pick=args.coord_pick,
        max_samples=args.max_samples,
        score_source=args.score_source,
        prompt_overrides={
            "variant": args.prompt_variant,
            "ordering": args.object_ordering,
            "field_order": args.field_order,
        },
        progress=not args.no_progress,
    )
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="batched greedy detection on a JSONL file -> gt_vs_pred.jsonl")
    p.add_argument("source", help="run directory, training config YAML, or checkpoint directory")
    p.add_argument("--data", required=True, help="contract JSONL to run on (e.g. the val split)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4, help="generate batch (decode_batch_size)")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument(
        "--coord-pick",
        choices=COORD_PICKS,
        default="token",
        help="coord tokens: the greedy token, or the expected bin of their distribution at coord steps",
    )
    p.add_argument("--score-source", choices=("coord_logprob", "constant"), default="coord_logprob")
    p.add_argument("--prompt-variant", default=None)
    p.add_argument("--object-ordering", choices=("sorted", "random"), default=None)
    p.add_argument("--field-order", choices=("desc_first", "geometry_first"), default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run)
