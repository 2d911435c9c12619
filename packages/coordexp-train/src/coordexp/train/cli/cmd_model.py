"""`coordexp model {create, expand-vocab}`: offline checkpoints with the 1000 coord tokens."""

from __future__ import annotations

import argparse


def _create(args: argparse.Namespace) -> int:
    from coordexp.train.models import create_model

    path = create_model(
        args.preset, args.tokenizer, args.seed, args.out,
        max_pixels=args.max_pixels, overwrite=args.overwrite,
    )
    print(f"created {args.preset} model ({args.tokenizer} tokenizer) at {path}")
    return 0


def _expand(args: argparse.Namespace) -> int:
    from coordexp.train.models import expand_vocab

    result = expand_vocab(args.src, args.dst, if_present="noop" if args.allow_present else "error")
    print(
        f"{args.dst}: added {result.added} coord tokens (ids {min(result.coord_ids)}..{max(result.coord_ids)}), "
        f"{result.num_embeddings} embedding rows, tied={result.tied}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="create tiny models and add coord tokens to checkpoints")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    c = msub.add_parser("create", help="random-init Qwen3-VL from a preset, saved with tokenizer + processor")
    c.add_argument("--preset", default="tiny", choices=("tiny", "small"))
    c.add_argument("--tokenizer", default="bundled", choices=("bundled", "qwen3"))
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-pixels", type=int, default=1024 * 1024)
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--out", required=True)
    c.set_defaults(handler=_create)
    e = msub.add_parser("expand-vocab", help="add <|coord_0|>..<|coord_999|> to a checkpoint + tokenizer")
    e.add_argument("src")
    e.add_argument("dst")
    e.add_argument("--allow-present", action="store_true", help="no-op when the tokens already exist")
    e.set_defaults(handler=_expand)
