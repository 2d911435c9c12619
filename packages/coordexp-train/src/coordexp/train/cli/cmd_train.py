"""`coordexp train CONFIG [key=value ...]`: run the training recipe."""

from __future__ import annotations

import argparse
import logging
import os


def _run(args: argparse.Namespace) -> int:
    from coordexp.train.config import load_config
    from coordexp.train.recipes.train import run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = load_config(args.config, args.overrides, world_size=world_size)
    result = run_training(resolved, force_resume=args.force_resume, progress=not args.no_progress)
    if result.history:
        last = result.history[-1].metrics
        print(f"finished step {result.history[-1].step + 1}: loss/total={last.get('loss/total', float('nan')):.4f}")
    if result.final_checkpoint is not None:
        print(f"final checkpoint: {result.final_checkpoint}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train with a pipeline YAML (Accelerate; one CPU, many GPUs, many nodes)")
    p.add_argument("config", help="training config YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.max_steps=20")
    p.add_argument("--force-resume", action="store_true", help="resume even if the pipeline or strategy changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run)
