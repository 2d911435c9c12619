"""Training curves from a run's ``metrics.jsonl`` (lines ``{"step", "kind", **metrics}``).

The executor writes ``{logging_dir}/metrics.jsonl``: ``kind = "train"`` lines carry the reduced
step metrics (``loss/total``, ``loss/<ctx>/<atom>``, ``train/lr_max``, …) and ``kind = "eval"``
lines the eval keys (``val/loss/...``, ``rollout/mAP``, ``rollout/f1@0.50``, …). Non-finite values
are logged as null and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from coordexp.core.errors import ConfigError
from coordexp.train.report.charts import Chart, Series
from coordexp.train.run.logsink import read_metrics

METRICS_JSONL = "metrics.jsonl"


def find_metrics_file(run: str | Path) -> Path:
    """``run`` itself when it is a file, ``run/metrics.jsonl``, or the single ``metrics.jsonl`` below ``run``."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise ConfigError("--run", f"{run} is neither a metrics.jsonl file nor a directory")
    direct = run / METRICS_JSONL
    if direct.is_file():
        return direct
    found = sorted(run.rglob(METRICS_JSONL))
    if len(found) != 1:
        listing = ", ".join(str(p) for p in found[:5]) or "none"
        raise ConfigError(
            "--run",
            f"expected exactly one {METRICS_JSONL} under {run}, found {len(found)} ({listing}); pass the file",
        )
    return found[0]


def _series(rows: Sequence[Mapping[str, Any]], kind: str, key: str, name: str) -> Series:
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if row.get("kind") == kind and isinstance(value, (int, float)) and not isinstance(value, bool):
            steps.append(float(row["step"]))
            values.append(float(value))
    return Series.of(name, steps, values)


def _keys(rows: Sequence[Mapping[str, Any]], kind: str, accept: Callable[[str], bool]) -> list[str]:
    return sorted({key for row in rows if row.get("kind") == kind for key in row if accept(key)})


def _is_metric_row(row: Any) -> bool:
    return (
        isinstance(row, dict)
        and isinstance(row.get("step"), (int, float))
        and not isinstance(row.get("step"), bool)
        and isinstance(row.get("kind"), str)
    )


@attrs.frozen
class NamedChart:
    """A chart and the file stem it is saved under."""

    stem: str
    chart: Chart


def training_charts(rows: Sequence[Mapping[str, Any]]) -> list[NamedChart]:
    """The report's charts (only those with data): total loss, loss atoms, mAP/AP, F1, learning rate."""
    atoms = _keys(rows, "train", lambda k: k.startswith("loss/") and k != "loss/total")
    eval_keys = {"map": ("mAP", "AP50", "AP75"), "f1": ("f1@0.50", "f1@[.50:.95]", "f1_loc@0.50")}
    # (stem, title, y label, lines as (kind, key, legend name))
    specs: tuple[tuple[str, str, str, tuple[tuple[str, str, str], ...]], ...] = (
        ("loss", "loss/total", "loss", (("train", "loss/total", "train"), ("eval", "val/loss/total", "val"))),
        ("loss_atoms", "loss atoms (train)", "loss", tuple(("train", key, key) for key in atoms)),
        ("map", "COCO bbox (eval)", "AP", tuple(("eval", f"rollout/{n}", n) for n in eval_keys["map"])),
        ("f1", "F1 (eval)", "F1", tuple(("eval", f"rollout/{n}", n) for n in eval_keys["f1"])),
        ("lr", "learning rate", "lr", (("train", "train/lr_max", "lr"),)),
    )
    charts = [
        NamedChart(
            stem, Chart(title, y_label, tuple(_series(rows, kind, key, name) for kind, key, name in lines))
        )
        for stem, title, y_label, lines in specs
    ]
    return [c for c in charts if not c.chart.empty]


def load_training_charts(run: str | Path) -> tuple[Path, list[NamedChart]]:
    """Locate and read a run's metrics.jsonl; returns its path and the charts it supports."""
    path = find_metrics_file(run)
    try:
        rows = read_metrics(path)
    except ValueError as exc:
        raise ConfigError("--run", f"{path} is not JSON lines: {exc}") from None
    bad = [i for i, row in enumerate(rows, start=1) if not _is_metric_row(row)]
    if bad:
        raise ConfigError("--run", f"{path}: lines {bad[:5]} are not {{step, kind, ...}} metric records")
    return path, training_charts(rows)
