"""`coordexp data {synth, validate, convert}`: the data contract tools of spec 01."""

from __future__ import annotations

import argparse

from coordexp.core.errors import ConfigError


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc


def _fraction_pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = text.split(",")
        return float(lo), float(hi)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two fractions), got {text!r}") from exc


def _validate(args: argparse.Namespace) -> int:
    from coordexp.train.data.commands import cmd_validate

    return cmd_validate(
        args.path,
        max_pixels=args.max_pixels,
        trainer_variant=args.trainer_variant,
        check_images=not args.no_images,
        max_errors_shown=args.max_errors,
    )


def _convert(args: argparse.Namespace) -> int:
    from coordexp.train.data.commands import cmd_convert

    return cmd_convert(
        args.src,
        args.dst,
        source_format=args.format,
        coord_form=args.coord_form,
        bbox_only=args.bbox_only,
        image_dir=args.image_dir,
        include_crowd=args.include_crowd,
        clip_to_image=args.clip_to_image,
    )


def _synth(args: argparse.Namespace) -> int:
    from coordexp.train.data.commands import cmd_synth
    from coordexp.train.data.synth import DEFAULT_IMAGE_SIZES, SIZE_RANGE

    if args.train < 0 or args.val < 0:
        raise ConfigError("--train/--val", "sample counts must be >= 0")
    return cmd_synth(
        args.out,
        n_train=args.train,
        n_val=args.val,
        seed=args.seed,
        image_sizes=tuple(args.size) if args.size else DEFAULT_IMAGE_SIZES,
        max_objects=args.max_objects,
        size_range=args.object_size or SIZE_RANGE,
        bbox_only=args.bbox_only,
        coord_form=args.coord_form,
        workers=args.workers,
        image_format=args.image_format,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthesize, validate and convert detection JSONL")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    v = dsub.add_parser("validate", help="check a JSONL file against the data contract (exit 1 on errors)")
    v.add_argument("path")
    v.add_argument("--max-pixels", type=int, default=None, help="template.max_pixels to enforce")
    v.add_argument("--trainer-variant", default=None, help="enables variant rules (e.g. bbox-only)")
    v.add_argument("--no-images", action="store_true", help="skip opening the images")
    v.add_argument("--max-errors", type=int, default=50, help="errors to print (all are counted)")
    v.set_defaults(handler=_validate)

    c = dsub.add_parser("convert", help="pixel-space JSONL or COCO JSON -> norm1000 contract JSONL")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--format", choices=("pixel_jsonl", "coco"), default="pixel_jsonl")
    c.add_argument("--coord-form", choices=("int", "token"), default="int")
    c.add_argument("--bbox-only", action="store_true", help="export polygons as their boxes")
    c.add_argument("--image-dir", default=None, help="COCO: directory holding the images")
    c.add_argument("--include-crowd", action="store_true", help="COCO: keep iscrowd annotations")
    c.add_argument("--clip-to-image", action="store_true", help="COCO: clip out-of-image pixels")
    c.set_defaults(handler=_convert)

    s = dsub.add_parser("synth", help="write the deterministic synthetic shapes data set")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=256)
    s.add_argument("--val", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=_size, action="append", help="allowed image size WxH (repeatable)")
    s.add_argument("--max-objects", type=int, default=5)
    s.add_argument(
        "--object-size", type=_fraction_pair, default=None, metavar="LO,HI",
        help="object side as a fraction of the shorter image side (default 0.15,0.45)",
    )
    s.add_argument("--bbox-only", action="store_true", help="polygons exported as boxes (stage2_two_channel)")
    s.add_argument("--coord-form", choices=("int", "token"), default="int")
    s.add_argument(
        "--workers", type=int, default=1, help="processes drawing images (the same files for any count)"
    )
    s.add_argument(
        "--image-format", choices=("png", "bmp"), default="png",
        help="png (default) or bmp: raw pixels, ~1.6x the size, ~5x faster to decode",
    )
    s.set_defaults(handler=_synth)
