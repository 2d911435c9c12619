"""Detection evaluation of ``gt_vs_pred`` records: the fixed key set and the failure → 0.0 rule.

:func:`evaluate_records` is the one helper both the in-training eval step (spec 04 §4.9) and
``coordexp eval`` call. Keys (spec 06 §6.6): the COCO family when ``"coco"`` is in ``metrics``,
the F1 family when ``"f1"`` is, and the stats family always. Every value is a Python float.

Failure rule: if anything raises while evaluating existing records (validation, scoring
override, category mapping, COCOeval, F1), every COCO and F1 key is 0.0,
``rollout/eval_failed_count`` is 1.0 and a warning with the traceback is logged once per
distinct error (type and message) per process. The caller keeps training.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

import attrs

from coordexp.core.errors import ConfigError
from coordexp.train.eval.categories import build_categories
from coordexp.train.eval.coco import Backend, check_backend, coco_metrics
from coordexp.train.eval.f1 import f1_counts
from coordexp.train.eval.keys import COCO_KEYS, F1_KEYS, FAILED_KEY, STATS_KEYS
from coordexp.train.eval.records import GT_VS_PRED_FILE, ImageRecord, read_records
from coordexp.train.eval.scores import FALLBACK_SOURCE, SCORE_SOURCES
from coordexp.train.eval.table import format_metrics_table

MetricFamily = Literal["coco", "f1"]
METRIC_FAMILIES: tuple[str, ...] = get_args(MetricFamily)
METRICS_FILE = "metrics.json"

_log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


def check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    """``metrics`` as a tuple of unique families from ``("coco", "f1")``; raises ConfigError otherwise."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    out = tuple(metrics)
    if not out or len(set(out)) != len(out) or any(m not in METRIC_FAMILIES for m in out):
        raise ConfigError(
            "metrics", f"expected a non-empty list of unique entries from {METRIC_FAMILIES}, got {list(out)}"
        )
    return out


def metric_keys(metrics: Sequence[str]) -> tuple[str, ...]:
    """Every key :func:`evaluate_records` can return for ``metrics`` (COCO stats of −1 may drop out)."""
    metrics = check_metrics(metrics)
    keys: list[str] = []
    if "coco" in metrics:
        keys += COCO_KEYS
    if "f1" in metrics:
        keys += F1_KEYS
    return tuple(keys) + STATS_KEYS


@attrs.frozen
class EvalOutcome:
    """Metrics (Python floats) plus what a reader may want next to them.

    ``coco_summary``: the COCOeval summary text ('' when COCO was skipped, disabled or failed);
    ``error``: ``"Type: message"`` of a failure, else None.
    """

    metrics: dict[str, float]
    coco_summary: str = ""
    error: str | None = None


def _stats(records: Sequence[ImageRecord], unmapped: int, failed: bool) -> dict[str, float]:
    n = len(records)
    n_pred = sum(len(r.pred) for r in records)

    def rate(count: int) -> float:
        return count / n if n else 0.0

    return {
        "rollout/eval_samples_count": float(n),
        "rollout/eval_invalid_rollout_rate": rate(sum(r.invalid_rollout for r in records)),
        "rollout/eval_truncated_rate": rate(sum(r.truncated for r in records)),
        "rollout/eval_pred_per_image_mean": rate(n_pred),
        "rollout/unmapped_pred_count": float(unmapped),
        "rollout/score_fallback_count": float(sum(r.pred_score_source == FALLBACK_SOURCE for r in records)),
        FAILED_KEY: 1.0 if failed else 0.0,
    }


def _with_scores(records: Sequence[ImageRecord], score_source: str | None) -> Sequence[ImageRecord]:
    """Records scored as ``score_source`` asks: None keeps the recorded scores; ``constant`` sets
    every score to 1.0; ``coord_logprob`` requires records scored that way (or fallen back)."""
    if score_source is None:
        return records
    if score_source == "coord_logprob":
        wrong = [r.image_id for r in records if r.pred_score_source == "constant" and r.pred]
        if wrong:
            raise ValueError(
                f"score_source coord_logprob was requested but images {wrong[:5]} carry constant scores "
                "(inference ran with score_source: constant)"
            )
        return records
    return [
        attrs.evolve(
            r,
            pred=[attrs.evolve(p, score=1.0) for p in r.pred],
            pred_score_source="constant" if r.pred_score_source != FALLBACK_SOURCE else FALLBACK_SOURCE,
        )
        for r in records
    ]


def _check_records(records: Sequence[Any]) -> Sequence[ImageRecord]:
    bad = [i for i, r in enumerate(records) if not isinstance(r, ImageRecord)]
    if bad:
        raise TypeError(f"evaluate_records expects ImageRecord values; positions {bad[:5]} are not")
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("image_id values must be unique within one evaluation")
    return records


def _warn_once(exc: BaseException) -> None:
    key = (type(exc).__qualname__, str(exc))
    if key in _warned:
        return
    _warned.add(key)
    _log.warning(
        "detection eval failed; COCO/F1 metrics are reported as 0.0",
        exc_info=(type(exc), exc, exc.__traceback__),
    )


def evaluate_outcome(
    records: Sequence[ImageRecord],
    *,
    metrics: Sequence[str] = ("coco",),
    backend: Backend = "faster",
    score_source: str | None = None,
) -> EvalOutcome:
    """:func:`evaluate_records` plus the COCOeval summary text and the failure message."""
    families = check_metrics(metrics)
    check_backend(backend)
    if score_source is not None and score_source not in SCORE_SOURCES:
        raise ValueError(f"score_source must be None or one of {SCORE_SOURCES}, got {score_source!r}")
    records = list(records)
    coco_summary = ""
    try:
        evaluated = _with_scores(_check_records(records), score_source)
        categories = build_categories(g.desc for r in evaluated for g in r.gt)
        values: dict[str, float] = {}
        unmapped = sum(categories.id_of(p.desc) is None for r in evaluated for p in r.pred)
        if "coco" in families:
            result = coco_metrics(evaluated, categories, backend)
            values.update(result.metric_values())
            coco_summary = result.summary_text
        if "f1" in families:
            values.update(f1_counts(evaluated).metric_values())
        values.update(_stats(evaluated, unmapped, failed=False))
        return EvalOutcome({k: float(v) for k, v in values.items()}, coco_summary)
    except Exception as exc:  # noqa: BLE001 - the spec's failure rule: report 0.0 and keep training
        _warn_once(exc)
        failed = {key: 0.0 for key in metric_keys(families) if key not in STATS_KEYS}
        failed.update(_safe_stats(records))
        return EvalOutcome(failed, "", f"{type(exc).__name__}: {exc}")


def _safe_stats(records: Sequence[Any]) -> dict[str, float]:
    """Stats of a failed evaluation: the record counts when the records are usable (unmapped
    predictions reported as 0, since category mapping may be what failed), else all 0.0."""
    usable = [r for r in records if isinstance(r, ImageRecord)]
    if len(usable) != len(records):
        return {key: (1.0 if key == FAILED_KEY else 0.0) for key in STATS_KEYS}
    return _stats(usable, unmapped=0, failed=True)


def evaluate_records(
    records: Sequence[ImageRecord],
    *,
    metrics: Sequence[str] = ("coco",),
    backend: Backend = "faster",
    score_source: str | None = None,
) -> dict[str, float]:
    """Evaluate ``gt_vs_pred`` records; returns the spec 06 §6.6 key set as Python floats.

    ``metrics``: families from ``("coco", "f1")``. ``backend``: ``"faster"`` or
    ``"pycocotools"``. ``score_source``: None uses the recorded scores; ``"constant"`` ranks every
    prediction at 1.0 (appearance order); ``"coord_logprob"`` additionally checks that no image
    was scored ``constant``. With no predictions COCOeval is skipped and COCO keys are 0.0; a
    COCO stat of −1 drops its key except ``rollout/mAP`` (0.0). Any exception after the
    arguments are checked triggers the failure rule (module docstring); invalid ``metrics``,
    ``backend`` or ``score_source`` arguments raise.
    """
    return evaluate_outcome(records, metrics=metrics, backend=backend, score_source=score_source).metrics


def write_metrics(path: str | Path, metrics: dict[str, float]) -> Path:
    """Write ``metrics`` as pretty, key-sorted JSON."""
    path = Path(path)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def evaluate_dir(
    eval_dir: str | Path,
    *,
    metrics: Sequence[str] = ("coco",),
    backend: Backend = "faster",
    score_source: str | None = None,
    out: TextIO | None = None,
) -> EvalOutcome:
    """Evaluate ``{eval_dir}/gt_vs_pred.jsonl``, write ``{eval_dir}/metrics.json``, print a table.

    A missing or malformed artifact raises (DataContractError / ConfigError); failures inside the
    evaluation follow the failure rule and are printed after the table.
    """
    eval_dir = Path(eval_dir)
    source = eval_dir / GT_VS_PRED_FILE
    if not source.is_file():
        raise ConfigError(
            str(eval_dir), f"no {GT_VS_PRED_FILE} here; pass the directory that `coordexp infer` wrote"
        )
    outcome = evaluate_outcome(
        read_records(source), metrics=metrics, backend=backend, score_source=score_source
    )
    write_metrics(eval_dir / METRICS_FILE, outcome.metrics)
    stream = out if out is not None else sys.stdout
    stream.write(format_metrics_table(outcome.metrics, title=f"{source}") + "\n")
    if outcome.coco_summary:
        stream.write("\nCOCOeval (bbox)\n" + outcome.coco_summary + "\n")
    if outcome.error is not None:
        stream.write(f"\nevaluation failed ({outcome.error}); COCO/F1 keys are 0.0\n")
    stream.write(f"\nwrote {eval_dir / METRICS_FILE}\n")
    return outcome
