"""`coordexp model {create, expand-vocab, pretrain-vision}`: offline checkpoints with the 1000 coord tokens."""

from __future__ import annotations

import argparse

from coordexp.train.models.presets import PRESETS


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


def _pretrain_vision(args: argparse.Namespace) -> int:
    import json

    from coordexp.train.recipes.pretrain_vision import VisionPretrainSettings, pretrain_vision

    given = {
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "logging_steps": args.logging_steps, "val_samples": args.val_samples, "subcells": args.subcells,
        "decay_fraction": args.decay_fraction,
    }
    settings = VisionPretrainSettings(**{k: v for k, v in given.items() if v is not None})
    result = pretrain_vision(
        args.src, args.data, args.out, settings, val_jsonl=args.val, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(json.dumps({"final": result.history[-1], "val": result.val}, sort_keys=True))
    print(f"wrote {result.out_dir} ({len(result.vocab.descs)} descs, {result.seconds:.0f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="create tiny models and add coord tokens to checkpoints")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    c = msub.add_parser("create", help="random-init Qwen3-VL from a preset, saved with tokenizer + processor")
    c.add_argument("--preset", default="tiny", choices=tuple(PRESETS))
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
    v = msub.add_parser(
        "pretrain-vision",
        help="train a checkpoint's vision tower to tell which object (desc) each merged token shows",
    )
    v.add_argument("src", help="source checkpoint directory (never modified)")
    v.add_argument("--data", required=True, help="training JSONL (contract format)")
    v.add_argument("--out", required=True, help="output checkpoint directory")
    v.add_argument("--val", help="held-out JSONL for the final accuracy")
    # Unset options take VisionPretrainSettings' defaults (one place for them).
    v.add_argument("--steps", type=int)
    v.add_argument("--batch-size", type=int)
    v.add_argument("--lr", type=float)
    v.add_argument("--seed", type=int)
    v.add_argument("--logging-steps", type=int)
    v.add_argument("--val-samples", type=int)
    v.add_argument("--subcells", type=int, help="labels per merged token = subcells² (finer box edges)")
    v.add_argument(
        "--decay-fraction",
        type=float,
        help="last fraction of the steps over which lr decays linearly (0 = constant)",
    )
    v.add_argument("--overwrite", action="store_true")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(handler=_pretrain_vision)
