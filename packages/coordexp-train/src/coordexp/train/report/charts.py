"""Line charts drawn with Pillow (no plotting library is a dependency).

A :class:`Chart` holds named :class:`Series` of (step, value) points; :func:`render_chart` draws
them on shared axes with "nice" ticks (1, 2, 2.5, 5 × 10^k), a grid, a title and a legend to the
right of the plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np
from PIL import Image, ImageDraw

from coordexp.train.report.style import (
    AXIS_COLOR,
    BACKGROUND,
    GRID_COLOR,
    SERIES_COLORS,
    TEXT_COLOR,
    font,
    text_size,
)

DEFAULT_SIZE = (760, 380)
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 72, 24, 40, 48
_MARKER_LIMIT = 60  # draw point markers when a series has at most this many points


def _finite_points(xs: Sequence[float], ys: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if len(xs) != len(ys):
        raise ValueError(f"a series needs as many steps as values, got {len(xs)} and {len(ys)}")
    kept = [
        (float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(float(x)) and math.isfinite(float(y))
    ]
    return tuple(x for x, _ in kept), tuple(y for _, y in kept)


@attrs.frozen
class Series:
    """One line: ``name`` and its points (non-finite points are dropped on construction)."""

    name: str
    steps: tuple[float, ...]
    values: tuple[float, ...]

    @classmethod
    def of(cls, name: str, steps: Sequence[float], values: Sequence[float]) -> Series:
        xs, ys = _finite_points(steps, values)
        return cls(name, xs, ys)


@attrs.frozen
class Chart:
    title: str
    y_label: str
    series: tuple[Series, ...] = attrs.field(converter=tuple)

    @property
    def empty(self) -> bool:
        return not any(s.steps for s in self.series)


def nice_step(span: float, target_ticks: int = 5) -> float:
    """The smallest of 1, 2, 2.5, 5, 10 × 10^k that is ≥ ``span / target_ticks`` (span > 0)."""
    raw = span / target_ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-12))


def axis_range(lo: float, hi: float, target_ticks: int = 5) -> tuple[float, float, list[float]]:
    """A padded range covering [lo, hi] with tick positions on multiples of a nice step."""
    if hi <= lo:
        pad = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target_ticks)
    start, stop = math.floor(lo / step) * step, math.ceil(hi / step) * step
    count = round((stop - start) / step)
    ticks = [round(start + i * step, 12) for i in range(count + 1)]
    return start, stop, ticks


def tick_label(value: float) -> str:
    return f"{value:.6g}"


def render_chart(chart: Chart, size: tuple[int, int] = DEFAULT_SIZE) -> Image.Image:
    """Draw ``chart``; raises ValueError when it has no points."""
    if chart.empty:
        raise ValueError(f"chart {chart.title!r} has no finite points to draw")
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, title_font = font(11), font(14)
    xs = np.concatenate([np.asarray(s.steps) for s in chart.series if s.steps])
    ys = np.concatenate([np.asarray(s.values) for s in chart.series if s.values])
    x_lo, x_hi, x_ticks = axis_range(float(xs.min()), float(xs.max()))
    y_lo, y_hi, y_ticks = axis_range(float(ys.min()), float(ys.max()))
    named = [s for s in chart.series if s.steps]
    legend_width = max(text_size(draw, s.name, small)[0] for s in named) + 24
    left, right = _MARGIN_LEFT, width - _MARGIN_RIGHT - legend_width
    if right - left < 120:
        raise ValueError(f"chart {chart.title!r}: {width} px leave no room for the plot next to the legend")
    top, bottom = _MARGIN_TOP, height - _MARGIN_BOTTOM

    def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = left + (x - x_lo) / (x_hi - x_lo) * (right - left)
        py = bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)
        return px, py

    for tick in y_ticks:
        _, py = to_px(np.array([x_lo]), np.array([tick]))
        draw.line((left, py[0], right, py[0]), fill=GRID_COLOR)
        text = tick_label(tick)
        tw, th = text_size(draw, text, small)
        draw.text((left - 6 - tw, py[0] - th / 2 - 2), text, fill=TEXT_COLOR, font=small)
    for tick in x_ticks:
        px, _ = to_px(np.array([tick]), np.array([y_lo]))
        draw.line((px[0], top, px[0], bottom), fill=GRID_COLOR)
        text = tick_label(tick)
        tw, _ = text_size(draw, text, small)
        draw.text((px[0] - tw / 2, bottom + 6), text, fill=TEXT_COLOR, font=small)
    draw.rectangle((left, top, right, bottom), outline=AXIS_COLOR)
    draw.text((left, 12), chart.title, fill=TEXT_COLOR, font=title_font)
    draw.text(((left + right) / 2 - 12, height - 20), "step", fill=TEXT_COLOR, font=small)
    draw.text((8, top - 16), chart.y_label, fill=TEXT_COLOR, font=small)

    legend_x, legend_y = right + 12, top + 2
    for index, series in enumerate(chart.series):
        if not series.steps:
            continue
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        px, py = to_px(np.asarray(series.steps), np.asarray(series.values))
        points = list(zip(px.tolist(), py.tolist()))
        if len(points) > 1:
            draw.line(points, fill=color, width=2, joint="curve")
        if len(points) <= _MARKER_LIMIT:
            for x, y in points:
                draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=color)
        draw.rectangle((legend_x, legend_y + 4, legend_x + 12, legend_y + 10), fill=color)
        draw.text((legend_x + 18, legend_y - 1), series.name, fill=TEXT_COLOR, font=small)
        legend_y += 16
    return image
