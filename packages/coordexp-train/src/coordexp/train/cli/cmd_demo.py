"""`coordexp demo`: synthesize data, create a tiny model, train Stage-1, infer, evaluate, report."""

from __future__ import annotations

import argparse
import json
import logging

from coordexp.rollout.decoding import COORD_PICKS
from coordexp.train.models.presets import PRESETS


def _run(args: argparse.Namespace) -> int:
    # Imported here: torch and transformers load with it (~6 s on 2 cores), after `main` noted the start
    # time, so that their import counts against the budget.
    from coordexp.train.recipes.demo import DemoSettings, run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    given = {"config": args.config, "n_train": args.train, "n_val": args.val, "seed": args.seed, "preset": args.preset,
             "vision_steps": args.vision_steps, "coord_pick": args.coord_pick}
    if args.budget is not None:  # minutes on the command line; 0 = no budget
        given["budget_s"] = None if args.budget == 0 else args.budget * 60.0
    settings = DemoSettings(
        **{k: v for k, v in given.items() if v is not None or k == "budget_s"},
        overrides=tuple(args.overrides),
    )
    summary = run_demo(args.out, settings, progress=not args.no_progress, started_at=args.started_at)
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"\nreport: {summary['report']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default (tiny model + synthetic data, CPU)")
    p.add_argument("--out", default="runs/demo")
    # Unset options take DemoSettings' defaults (one place for them).
    p.add_argument("--config", help="training config (default configs/demo/stage1.yaml)")
    p.add_argument("--train", type=int, help="synthetic training images")
    p.add_argument("--val", type=int, help="synthetic validation images")
    p.add_argument("--seed", type=int)
    p.add_argument("--preset", choices=tuple(PRESETS), help="model preset (default tiny3)")
    p.add_argument("--vision-steps", type=int, help="vision-tower pretraining steps before Stage-1 (0 = none)")
    p.add_argument(
        "--coord-pick",
        choices=COORD_PICKS,
        help="how the final val inference picks coord tokens (default expectation: the expected bin)",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="MINUTES",
        help="wall-clock budget (default 15): the Stage-1 (then the vision) step count is cut to fit "
        "this machine's measured speed; 0 runs them as given",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. training.max_steps=50")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run)
