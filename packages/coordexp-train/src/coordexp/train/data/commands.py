"""Plain functions behind `coordexp data {validate, convert, synth}`; each prints and returns an exit code.

Exit codes: 0 success; 1 the data has contract errors (validate only). User errors in arguments
raise `ConfigError`/`DataContractError`, which the CLI prints as one line (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from coordexp.core.errors import ConfigError
from coordexp.train.data.coco import convert_coco
from coordexp.train.data.convert import convert_pixel_jsonl
from coordexp.train.data.jsonl import validate_jsonl
from coordexp.train.data.synth import DEFAULT_IMAGE_SIZES, SIZE_RANGE, synthesize

SOURCE_FORMATS: tuple[str, ...] = ("pixel_jsonl", "coco")


def cmd_validate(
    path: str | Path,
    *,
    max_pixels: int | None = None,
    trainer_variant: str | None = None,
    check_images: bool = True,
    max_errors_shown: int = 50,
    out: TextIO | None = None,
) -> int:
    """Validate a contract JSONL: print every error (up to `max_errors_shown`) and a summary.

    Returns 0 when the file is clean, 1 when it has errors.
    """
    stream = out if out is not None else sys.stdout
    report = validate_jsonl(
        path, max_pixels=max_pixels, trainer_variant=trainer_variant, check_images=check_images
    )
    for error in report.errors[:max_errors_shown]:
        print(f"error: {error}", file=stream)
    hidden = len(report.errors) - max_errors_shown
    if hidden > 0:
        print(f"... and {hidden} more errors", file=stream)
    for line in report.summary_lines():
        print(line, file=stream)
    return 0 if report.ok else 1


def cmd_convert(
    src: str | Path,
    dst: str | Path,
    *,
    source_format: str = "pixel_jsonl",
    coord_form: str = "int",
    bbox_only: bool = False,
    image_dir: str | Path | None = None,
    include_crowd: bool = False,
    clip_to_image: bool = False,
    out: TextIO | None = None,
) -> int:
    """Convert pixel-space JSONL or COCO JSON to contract JSONL and print the counts (returns 0)."""
    stream = out if out is not None else sys.stdout
    if source_format == "pixel_jsonl":
        if image_dir is not None or include_crowd or clip_to_image:
            raise ConfigError(
                "source_format", "image_dir, include_crowd and clip_to_image apply to COCO input only"
            )
        summary = convert_pixel_jsonl(src, dst, coord_form=coord_form, bbox_only=bbox_only)
    elif source_format == "coco":
        summary = convert_coco(
            src,
            dst,
            image_dir=image_dir,
            coord_form=coord_form,
            geometry="bbox" if bbox_only else "poly",
            include_crowd=include_crowd,
            clip_to_image=clip_to_image,
        )
    else:
        raise ConfigError(
            "source_format", f"got {source_format!r}; expected one of {', '.join(SOURCE_FORMATS)}"
        )
    for line in summary.summary_lines():
        print(line, file=stream)
    return 0


def cmd_synth(
    out_dir: str | Path,
    *,
    n_train: int,
    n_val: int,
    seed: int,
    image_sizes: Sequence[tuple[int, int]] = DEFAULT_IMAGE_SIZES,
    max_objects: int = 5,
    size_range: tuple[float, float] = SIZE_RANGE,
    bbox_only: bool = False,
    coord_form: str = "int",
    workers: int = 1,
    image_format: str = "png",
    out: TextIO | None = None,
) -> int:
    """Write the synthetic data set, validate both files and print a summary (0 when they validate)."""
    stream = out if out is not None else sys.stdout
    result = synthesize(
        out_dir,
        n_train=n_train,
        n_val=n_val,
        seed=seed,
        image_sizes=image_sizes,
        max_objects=max_objects,
        size_range=size_range,
        bbox_only=bbox_only,
        coord_form=coord_form,
        workers=workers,
        image_format=image_format,
    )
    for line in result.summary_lines():
        print(line, file=stream)
    status = 0
    variant = "stage2_two_channel" if bbox_only else None
    for path in (result.train_jsonl, result.val_jsonl):
        report = validate_jsonl(path, trainer_variant=variant)
        for error in report.errors:
            print(f"error: {error}", file=stream)
        status = status or int(not report.ok)
    return status
