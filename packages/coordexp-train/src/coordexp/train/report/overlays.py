"""Per-image overlays: GT and predictions drawn over the image, with a legend strip.

GT objects are drawn in one colour. A prediction is ``matched`` when the desc-aware greedy
matching of spec 06 §6.5 pairs it with a GT object at IoU ≥ 0.5, ``wrong_class`` when it is not
matched but overlaps some GT object of another desc at IoU ≥ 0.5, and ``fp`` otherwise
(duplicates included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from coordexp.train.eval.f1 import MIN_IOU, match_image, same_desc_mask
from coordexp.train.eval.records import GTItem, ImageRecord, PredItem
from coordexp.train.report.style import (
    BACKGROUND,
    GT_COLOR,
    MISSING_IMAGE_FILL,
    STATUS_COLORS,
    STATUS_LABELS,
    TEXT_COLOR,
    RGB,
    font,
    label,
    text_size,
)

STATUSES: tuple[str, ...] = tuple(STATUS_COLORS)
DEFAULT_LONG_SIDE = 640
LEGEND_HEIGHT = 48
LINE_WIDTH = 2


def pred_statuses(record: ImageRecord) -> list[str]:
    """``matched`` / ``wrong_class`` / ``fp`` for each prediction of ``record`` (see module doc)."""
    if not record.pred:
        return []
    if not record.gt:
        return ["fp"] * len(record.pred)
    matches = match_image(record)
    other_desc_hit = ((matches.ious >= MIN_IOU) & ~same_desc_mask(record)).any(axis=1)
    matched = matches.by_desc.gt_of_pred >= 0
    return np.where(matched, "matched", np.where(other_desc_hit, "wrong_class", "fp")).tolist()


def resolve_image(image: str, search_dirs: Sequence[Path]) -> Path | None:
    """The file ``image`` names: itself when absolute, else the first ``search_dirs / image`` that exists."""
    path = Path(image)
    candidates = [path] if path.is_absolute() else [d / path for d in search_dirs]
    return next((c for c in candidates if c.is_file()), None)


def base_image(record: ImageRecord, image_path: Path | None) -> Image.Image:
    """The record's image as RGB at the record's ``width × height`` (a grey canvas when missing)."""
    size = (record.width, record.height)
    if image_path is None:
        return Image.new("RGB", size, MISSING_IMAGE_FILL)
    with Image.open(image_path) as source:
        rgb = source.convert("RGB")
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BILINEAR)


def _scaled(points: Sequence[int], scale: float) -> list[float]:
    return [v * scale for v in points]


def _draw_geometry(draw: ImageDraw.ImageDraw, item: GTItem | PredItem, scale: float, color: RGB) -> None:
    points = _scaled(item.points, scale)
    if item.type == "bbox_2d":
        draw.rectangle(points, outline=color, width=LINE_WIDTH)
    else:
        draw.polygon(points, outline=color, width=LINE_WIDTH)


def _legend(canvas: Image.Image, top: int, record: ImageRecord, statuses: Sequence[str]) -> None:
    draw = ImageDraw.Draw(canvas)
    text_font = font(12)
    x, y = 6, top + 6
    entries = [(GT_COLOR, f"GT ({len(record.gt)})")]
    entries += [(STATUS_COLORS[s], f"{STATUS_LABELS[s]} ({statuses.count(s)})") for s in STATUSES]
    for color, text in entries:
        width, _ = text_size(draw, text, text_font)
        if x + 18 + width > canvas.width and x > 6:
            x, y = 6, y + 18
        draw.rectangle((x, y + 2, x + 12, y + 14), outline=color, width=LINE_WIDTH)
        draw.text((x + 16, y + 1), text, fill=TEXT_COLOR, font=text_font)
        x += 16 + width + 14


def render_overlay(
    record: ImageRecord,
    image_path: Path | None,
    long_side: int = DEFAULT_LONG_SIDE,
) -> Image.Image:
    """The overlay of one record: image scaled so its long side is ``long_side`` px, GT and
    predictions drawn with desc labels (predictions also show their score), legend below."""
    image = base_image(record, image_path)
    scale = long_side / max(record.width, record.height)
    size = (max(1, round(record.width * scale)), max(1, round(record.height * scale)))
    canvas = Image.new("RGB", (size[0], size[1] + LEGEND_HEIGHT), BACKGROUND)
    canvas.paste(image.resize(size, Image.Resampling.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(canvas)
    text_font = font(12)
    if image_path is None:
        draw.text((6, 6), f"image not found: {record.image}", fill=TEXT_COLOR, font=text_font)
    statuses = pred_statuses(record)
    for item in record.gt:
        _draw_geometry(draw, item, scale, GT_COLOR)
    for item, status in zip(record.pred, statuses):
        _draw_geometry(draw, item, scale, STATUS_COLORS[status])
    for item in record.gt:
        x, y = min(item.points[0::2]) * scale, min(item.points[1::2]) * scale
        label(draw, size, (x, y - 18), item.desc, GT_COLOR, text_font)
    for item, status in zip(record.pred, statuses):
        x, y = min(item.points[0::2]) * scale, max(item.points[1::2]) * scale
        label(draw, size, (x, y + 1), f"{item.desc} {item.score:.2f}", STATUS_COLORS[status], text_font)
    _legend(canvas, size[1], record, statuses)
    return canvas
