"""`coordexp report`: overlays, training curves and a metrics table in one static HTML page.

Layout under ``out_dir`` (default ``{eval_dir}/report``)::

    index.html
    overlays/image_{image_id:06d}.png
    curves/{loss,loss_atoms,map,f1,lr}.png      (with a run's metrics.jsonl; charts with data only)
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import attrs

from coordexp.core.errors import ConfigError
from coordexp.train.eval.evaluate import METRICS_FILE, evaluate_outcome
from coordexp.train.eval.records import GT_VS_PRED_FILE, ImageRecord, read_records
from coordexp.train.report.charts import render_chart
from coordexp.train.report.curves import load_training_charts
from coordexp.train.report.html import Figure, ReportPage, render_page
from coordexp.train.report.overlays import pred_statuses, render_overlay, resolve_image
from coordexp.train.report.style import GT_COLOR, STATUS_COLORS, STATUS_LABELS

DEFAULT_SAMPLES = 12
REPORT_DIR = "report"
INDEX_FILE = "index.html"


@attrs.frozen
class ReportFiles:
    """What :func:`build_report` wrote (absolute paths)."""

    index: Path
    overlays: tuple[Path, ...]
    charts: tuple[Path, ...]


def select_sample(records: Sequence[ImageRecord], count: int, seed: int) -> list[ImageRecord]:
    """``count`` records drawn without replacement with ``random.Random(seed)``, in image-id order."""
    if count < 0:
        raise ConfigError("--samples", f"must be >= 0, got {count}")
    picked = random.Random(seed).sample(range(len(records)), min(count, len(records)))
    return [records[i] for i in sorted(picked)]


def _load_metrics(eval_dir: Path, records: Sequence[ImageRecord]) -> tuple[dict[str, float], str]:
    path = eval_dir / METRICS_FILE
    if path.is_file():
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(str(path), f"not valid JSON: {exc}") from None
        if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
            raise ConfigError(str(path), "expected a JSON object of metric name -> number")
        return {k: float(v) for k, v in metrics.items()}, f"from {path.name}"
    outcome = evaluate_outcome(records, metrics=("coco", "f1"))
    note = f"computed now (no {METRICS_FILE} in {eval_dir}; coco + f1, recorded scores)"
    if outcome.error is not None:
        note += f"; evaluation failed: {outcome.error}"
    return outcome.metrics, note


def _caption(record: ImageRecord) -> str:
    statuses = pred_statuses(record)
    parts = [
        f"image_id {record.image_id}",
        record.image,
        f"{record.width}x{record.height}",
        f"GT {len(record.gt)}",
        f"pred {len(record.pred)}",
        f"matched {statuses.count('matched')}, wrong class {statuses.count('wrong_class')}, FP {statuses.count('fp')}",
        f"scores: {record.pred_score_source}",
    ]
    flags = [name for name in ("invalid_rollout", "truncated") if getattr(record, name)]
    if flags:
        parts.append("flags: " + ", ".join(flags))
    if record.errors:
        parts.append("errors: " + ", ".join(record.errors))
    return " · ".join(parts)


def build_report(
    eval_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    run: str | Path | None = None,
    seed: int = 0,
    image_root: str | Path | None = None,
) -> ReportFiles:
    """Write the report of ``{eval_dir}/gt_vs_pred.jsonl`` (see module docstring).

    Images named by relative paths are looked up under ``image_root``, ``eval_dir`` and the
    working directory, in that order; a missing image is drawn as a grey canvas.
    """
    eval_dir = Path(eval_dir)
    source = eval_dir / GT_VS_PRED_FILE
    if not source.is_file():
        raise ConfigError(
            str(eval_dir), f"no {GT_VS_PRED_FILE} here; pass the directory `coordexp infer` wrote"
        )
    records = read_records(source)
    out = Path(out_dir) if out_dir is not None else eval_dir / REPORT_DIR
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    search_dirs = [Path(image_root)] if image_root is not None else []
    search_dirs += [eval_dir, Path.cwd()]

    overlay_paths, overlay_figures = [], []
    for record in select_sample(records, samples, seed):
        name = f"overlays/image_{record.image_id:06d}.png"
        render_overlay(record, resolve_image(record.image, search_dirs)).save(out / name)
        overlay_paths.append(out / name)
        overlay_figures.append(Figure(name, f"overlay of image {record.image_id}", _caption(record)))

    chart_paths, chart_figures = [], []
    if run is not None:
        metrics_file, charts = load_training_charts(run)
        (out / "curves").mkdir(exist_ok=True)
        for named in charts:
            name = f"curves/{named.stem}.png"
            render_chart(named.chart).save(out / name)
            chart_paths.append(out / name)
            chart_figures.append(Figure(name, named.chart.title, named.chart.title))
        charts_note = f"from {metrics_file}" + ("" if charts else " (no plottable metrics)")
    else:
        charts_note = "no run given (coordexp report DIR --run RUN_DIR draws them from its metrics.jsonl)"

    metrics, metrics_note = _load_metrics(eval_dir, records)
    page = ReportPage(
        title=f"coordexp detection report: {eval_dir.name or eval_dir}",
        meta_lines=(
            f"source: {source}",
            f"{len(records)} images; overlays of {len(overlay_figures)} sampled with seed {seed}",
        ),
        metrics=metrics,
        metrics_note=metrics_note,
        charts=tuple(chart_figures),
        charts_note=charts_note,
        overlays=tuple(overlay_figures),
        legend=(("GT", GT_COLOR),) + tuple((STATUS_LABELS[s], STATUS_COLORS[s]) for s in STATUS_COLORS),
    )
    index = out / INDEX_FILE
    index.write_text(render_page(page), encoding="utf-8")
    return ReportFiles(
        index.resolve(), tuple(p.resolve() for p in overlay_paths), tuple(p.resolve() for p in chart_paths)
    )
