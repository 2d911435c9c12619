"""`coordexp report DIR`: a static HTML report (overlays, curves, metrics) of a gt_vs_pred.jsonl."""

from __future__ import annotations

import argparse


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _report(args: argparse.Namespace) -> int:
    from coordexp.train.report.build import build_report

    files = build_report(
        args.dir,
        out_dir=args.out,
        samples=args.samples,
        run=args.run,
        seed=args.seed,
        image_root=args.image_root,
    )
    print(f"wrote {files.index} ({len(files.overlays)} overlays, {len(files.charts)} charts)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report (overlays, training curves, metrics) for a gt_vs_pred.jsonl",
        description="Render DIR/gt_vs_pred.jsonl into DIR/report/index.html (or --out).",
    )
    p.add_argument(
        "dir", metavar="DIR", help="directory holding gt_vs_pred.jsonl (and metrics.json, if evaluated)"
    )
    p.add_argument(
        "--samples", type=_non_negative, default=12, help="images to draw overlays for (default 12)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the image sample (default 0)")
    p.add_argument(
        "--run", metavar="RUN_DIR", default=None, help="run logging dir (or its metrics.jsonl) for the curves"
    )
    p.add_argument(
        "--image-root", default=None, help="directory that relative image paths are resolved against"
    )
    p.add_argument("--out", default=None, help="output directory (default DIR/report)")
    p.set_defaults(handler=_report)
