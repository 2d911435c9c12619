"""The report's ``index.html``: self-contained (inline CSS and script, relative links only).

The inline script (in ``<head>``, so it sees every image error) runs on ``load``: it writes the image load status into the DOM
(``body[data-images-total|data-images-loaded|data-errors]``, ``img[data-natural-width]``) and
shows a banner when an image failed to load, so both a reader and a headless browser test can
see whether every figure rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import attrs

from coordexp.train.eval.table import format_value, metric_groups

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #141414; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; font-size: 13px; }
.status { display: none; }
.status.bad { display: block; background: #fde2e2; border: 1px solid #dc143c; padding: 8px; margin: 12px 0; }
table.metrics { border-collapse: collapse; font-size: 13px; }
table.metrics td, table.metrics th { padding: 3px 12px; border-bottom: 1px solid #eee; text-align: left; }
table.metrics td.value { text-align: right; font-variant-numeric: tabular-nums; }
table.metrics tr.group th { background: #f4f4f4; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #ccc; display: block; }
figcaption { font-size: 12px; color: #333; margin-top: 4px; max-width: 640px; overflow-wrap: anywhere; }
.legend span { display: inline-block; margin-right: 14px; font-size: 13px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; border: 2px solid; }
"""

_SCRIPT = """
(function () {
  var errors = 0;
  window.addEventListener('error', function () { errors += 1; }, true);
  var consoleError = console.error;
  console.error = function () { errors += 1; return consoleError.apply(console, arguments); };
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var loaded = 0;
    images.forEach(function (im) {
      im.setAttribute('data-natural-width', String(im.naturalWidth));
      if (im.complete && im.naturalWidth > 0) { loaded += 1; }
    });
    document.body.setAttribute('data-images-total', String(images.length));
    document.body.setAttribute('data-images-loaded', String(loaded));
    document.body.setAttribute('data-errors', String(errors));
    if (loaded < images.length) {
      var box = document.getElementById('image-status');
      box.textContent = (images.length - loaded) + ' of ' + images.length + ' images failed to load.';
      box.className = 'status bad';
    }
  });
})();
"""


@attrs.frozen
class Figure:
    """An image of the report: ``src`` relative to index.html, alt text and caption."""

    src: str
    alt: str
    caption: str


@attrs.frozen
class ReportPage:
    title: str
    meta_lines: tuple[str, ...]
    metrics: Mapping[str, float]
    metrics_note: str
    charts: tuple[Figure, ...]
    charts_note: str
    overlays: tuple[Figure, ...]
    legend: tuple[tuple[str, tuple[int, int, int]], ...]


def _figure(figure: Figure, link: bool) -> str:
    image = f'<img src="{escape(figure.src)}" alt="{escape(figure.alt)}">'
    if link:
        image = f'<a href="{escape(figure.src)}">{image}</a>'
    return f"<figure>{image}<figcaption>{escape(figure.caption)}</figcaption></figure>"


def _metrics_table(metrics: Mapping[str, float]) -> str:
    rows = ['<table class="metrics">', "<tr><th>metric</th><th>value</th></tr>"]
    for group, entries in metric_groups(metrics):
        rows.append(f'<tr class="group"><th colspan="2">{escape(group)}</th></tr>')
        rows += [
            f'<tr><td>{escape(key)}</td><td class="value">{escape(format_value(key, value))}</td></tr>'
            for key, value in entries
        ]
    rows.append("</table>")
    return "\n".join(rows)


def _legend(entries: Sequence[tuple[str, tuple[int, int, int]]]) -> str:
    spans = [
        f'<span><i style="border-color: rgb{color}"></i>{escape(text)}</span>' for text, color in entries
    ]
    return f'<p class="legend">{"".join(spans)}</p>'


def render_page(page: ReportPage) -> str:
    """The complete HTML document of ``page``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(page.title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head>",
        "<body>",
        f"<h1>{escape(page.title)}</h1>",
        *[f'<p class="meta">{escape(line)}</p>' for line in page.meta_lines],
        '<div id="image-status" class="status"></div>',
        "<h2>Metrics</h2>",
        f'<p class="meta">{escape(page.metrics_note)}</p>',
        _metrics_table(page.metrics) if page.metrics else "<p>no metrics</p>",
        "<h2>Training curves</h2>",
        f'<p class="meta">{escape(page.charts_note)}</p>',
        '<div class="grid">' + "".join(_figure(f, link=False) for f in page.charts) + "</div>",
        "<h2>Overlays</h2>",
        _legend(page.legend),
        '<div class="grid">' + "".join(_figure(f, link=True) for f in page.overlays) + "</div>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
