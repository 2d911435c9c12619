"""Plain-text rendering of an eval metrics dict (no terminal library needed)."""

from __future__ import annotations

from collections.abc import Mapping

from coordexp.train.eval.keys import COCO_KEYS, F1_KEYS, STATS_KEYS

_FAMILY_ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("COCO", COCO_KEYS),
    ("F1", F1_KEYS),
    ("stats", STATS_KEYS),
)


def metric_groups(metrics: Mapping[str, float]) -> list[tuple[str, list[tuple[str, float]]]]:
    """``metrics`` split into display groups: COCO, F1 and stats keys in spec order, then the rest sorted."""
    groups: list[tuple[str, list[tuple[str, float]]]] = []
    shown: set[str] = set()
    for title, keys in _FAMILY_ORDER:
        rows = [(k, metrics[k]) for k in keys if k in metrics]
        if rows:
            groups.append((title, rows))
            shown.update(keys)
    rest = [(k, metrics[k]) for k in sorted(metrics) if k not in shown]
    if rest:
        groups.append(("other", rest))
    return groups


def format_value(key: str, value: float) -> str:
    """Counts as integers, everything else with 4 decimals."""
    if key.endswith("_count") and float(value).is_integer():
        return str(int(value))
    return f"{value:.4f}"


def format_metrics_table(metrics: Mapping[str, float], title: str = "") -> str:
    """A two-column text table of ``metrics`` with a header line per group."""
    groups = metric_groups(metrics)
    width = max([len(k) for _, rows in groups for k, _ in rows] + [len("metric")])
    rule = "-" * (width + 12)
    lines = [title] if title else []
    lines += [rule, f"{'metric':<{width}}  {'value':>10}", rule]
    for name, rows in groups:
        lines.append(f"[{name}]")
        lines += [f"{key:<{width}}  {format_value(key, value):>10}" for key, value in rows]
    lines.append(rule)
    return "\n".join(lines)
