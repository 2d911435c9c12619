"""Shared drawing style of the visual report: colours, fonts, label boxes."""

from __future__ import annotations

import functools

from PIL import ImageDraw, ImageFont

RGB = tuple[int, int, int]

GT_COLOR: RGB = (30, 144, 255)
STATUS_COLORS: dict[str, RGB] = {
    "matched": (34, 177, 76),
    "wrong_class": (255, 140, 0),
    "fp": (220, 20, 60),
}
STATUS_LABELS: dict[str, str] = {
    "matched": "matched (IoU>=0.5, same desc)",
    "wrong_class": "wrong class (IoU>=0.5)",
    "fp": "false positive",
}
SERIES_COLORS: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
TEXT_COLOR: RGB = (20, 20, 20)
GRID_COLOR: RGB = (225, 225, 225)
AXIS_COLOR: RGB = (90, 90, 90)
BACKGROUND: RGB = (255, 255, 255)
MISSING_IMAGE_FILL: RGB = (200, 200, 200)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.lru_cache(maxsize=8)
def font(size: int) -> Font:
    """Pillow's bundled font at ``size`` px (Pillow falls back to its fixed-size bitmap font by
    itself when FreeType is missing). Pillow 10.0 has no ``size`` argument: bitmap font there."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, text_font: Font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font)
    return right - left, bottom - top


def label(
    draw: ImageDraw.ImageDraw,
    canvas: tuple[int, int],
    xy: tuple[float, float],
    text: str,
    color: RGB,
    text_font: Font,
) -> None:
    """White text on a ``color`` box whose top-left corner is ``xy``, moved inside ``canvas`` (w, h)."""
    width, height = text_size(draw, text, text_font)
    canvas_w, canvas_h = canvas
    x = min(max(0.0, xy[0]), max(0.0, canvas_w - width - 4))
    y = min(max(0.0, xy[1]), max(0.0, canvas_h - height - 6))
    draw.rectangle((x, y, x + width + 4, y + height + 6), fill=color)
    draw.text((x + 2, y + 1), text, fill=(255, 255, 255), font=text_font, anchor="la")
