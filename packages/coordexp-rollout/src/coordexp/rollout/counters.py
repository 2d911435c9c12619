"""Rollout counters (spec 03 §3.8): per-sample numbers and the step's :class:`Metric` list.

:class:`SampleCounters` holds one sample's numbers (a prompt-mismatch drop is a sample with
``samples = 0`` and ``prompt_mismatch_dropped = 1``). :func:`rollout_metrics` turns a step's samples
into metrics with the §3.8 reductions; every key comes from the static declaration
:func:`rollout_metric_keys`, and ``rollout/f1`` is derived after reduction (:data:`ROLLOUT_DERIVED`).

Definitions (all describe the target as trained; an invalid rollout has no predictions):

* ``valid_pred_objects`` = predictions that entered matching = ``matched + fp``;
* ``matched`` = supervised pairs (OT-excluded pairs not included); ``fp`` = masked FP predictions
  (unmatched + excluded); ``fn`` = GT the matcher left unmatched (every GT for an invalid rollout);
  ``fn_appended`` = GT appended to ``Y_train`` (``fn + excluded``), so ``matched + fn_appended = gt``;
* ``parse_dropped`` and ``parse_dropped/<bucket>``, ``field_order_mismatch``,
  ``degenerate_pred_bbox``, ``dropped_incomplete_tail`` describe the parse, before any fallback;
* rates: ``invalid_rollout``/``truncated`` per sample, ``gating_rejection`` per candidate pair,
  ``excluded`` per matcher pair (``matched + excluded``); ``precision = Σmatched/Σvalid preds``,
  ``recall = Σmatched/ΣGT`` (ratios of sums over the step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import attrs

from coordexp.core.coordjson.parse import DROP_BUCKETS
from coordexp.core.errors import PipelineError
from coordexp.core.metrics import MAX, MEAN, SUM, DerivedMetric, Metric, f1_metric
from coordexp.rollout.record import RolloutTarget

PREFIX = "rollout/"
TOTAL_COUNTERS: tuple[str, ...] = (
    "samples",
    "invalid_rollout",
    "truncated",
    "valid_pred_objects",
    "parse_dropped",
    "dropped_incomplete_tail",
    "field_order_mismatch",
    "degenerate_pred_bbox",
    "gt_objects",
    "matched",
    "fp",
    "fn",
    "fn_appended",
    "gating_rejections",
    "excluded_from_supervision",
    "prompt_mismatch_dropped",
    "retokenize_fail",
    "overlength_fallback",
)
LENGTHS: tuple[str, ...] = ("rollout_len", "prefix_len", "train_len", "encoded_len")
TIMINGS: tuple[str, ...] = ("rollout_generate", "rollout_parse_match", "teacher_encode")
# (key suffix, numerator counter, denominator counter)
_RATIOS: tuple[tuple[str, str, str], ...] = (
    ("invalid_rollout_rate", "invalid_rollout", "samples"),
    ("truncated_rate", "truncated", "samples"),
    ("gating_rejection_rate", "gating_rejections", "candidate_pairs"),
    ("excluded_rate", "excluded_from_supervision", "matcher_pairs"),
    ("gt_per_sample_mean", "gt_objects", "samples"),
    ("pred_per_sample_mean", "valid_pred_objects", "samples"),
    ("fn_appended_per_sample_mean", "fn_appended", "samples"),
    ("precision", "matched", "valid_pred_objects"),
    ("recall", "matched", "gt_objects"),
)
SEED_BASE_KEY = PREFIX + "seed_base"
F1_KEY = PREFIX + "f1"
ROLLOUT_DERIVED: tuple[DerivedMetric, ...] = (f1_metric(F1_KEY, PREFIX + "precision", PREFIX + "recall"),)
"""Pass to ``StepAggregator(derived=...)``: ``rollout/f1 = 2PR/(P+R)`` after reduction."""


def _bucket_counts(value: Mapping[str, int] | None) -> Mapping[str, int]:
    counts = dict.fromkeys(DROP_BUCKETS, 0)
    for bucket, count in (value or {}).items():
        if bucket not in counts:
            raise PipelineError(f"unknown parse drop bucket {bucket!r}; expected one of {DROP_BUCKETS}")
        counts[bucket] = int(count)
    return MappingProxyType(counts)


def _non_negative(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PipelineError(f"SampleCounters.{attribute.name} must be an int >= 0, got {value!r}")


def _count(default: int = 0):
    return attrs.field(default=default, validator=_non_negative)


@attrs.frozen
class SampleCounters:
    """One sample's §3.8 numbers (module doc for definitions)."""

    samples: int = _count(1)
    invalid_rollout: int = _count()
    truncated: int = _count()
    valid_pred_objects: int = _count()
    parse_dropped: int = _count()
    dropped_incomplete_tail: int = _count()
    field_order_mismatch: int = _count()
    degenerate_pred_bbox: int = _count()
    gt_objects: int = _count()
    matched: int = _count()
    fp: int = _count()
    fn: int = _count()
    fn_appended: int = _count()
    gating_rejections: int = _count()
    excluded_from_supervision: int = _count()
    prompt_mismatch_dropped: int = _count()
    retokenize_fail: int = _count()
    overlength_fallback: int = _count()
    candidate_pairs: int = _count()
    rollout_len: int = _count()
    prefix_len: int = _count()
    train_len: int = _count()
    encoded_len: int = _count()
    parse_dropped_by_bucket: Mapping[str, int] = attrs.field(factory=dict, converter=_bucket_counts)

    @property
    def matcher_pairs(self) -> int:
        """Pairs the matcher produced: supervised plus OT-excluded."""
        return self.matched + self.excluded_from_supervision

    @classmethod
    def from_target(cls, target: RolloutTarget, gt_objects: int) -> SampleCounters:
        """The counters of one prepared sample with ``gt_objects`` GT objects."""
        match, flags, counts = target.match, target.flags, target.counts
        excluded = len(match.excluded)
        matched = len(match.pairs)
        if matched + len(match.fn) != gt_objects:
            raise PipelineError(
                f"FN append is incomplete: {matched} matched + {len(match.fn)} appended != {gt_objects} GT"
            )
        return cls(
            samples=1,
            invalid_rollout=int(flags.invalid_rollout),
            truncated=int(flags.truncated),
            valid_pred_objects=matched + len(match.fp),
            parse_dropped=counts.dropped,
            dropped_incomplete_tail=counts.dropped_incomplete_tail,
            field_order_mismatch=counts.field_order_mismatch,
            degenerate_pred_bbox=counts.degenerate_pred_bbox,
            gt_objects=gt_objects,
            matched=matched,
            fp=len(match.fp),
            fn=len(match.fn) - excluded,
            fn_appended=len(match.fn),
            gating_rejections=match.gating_rejections,
            excluded_from_supervision=excluded,
            retokenize_fail=int(flags.retokenize_fail),
            overlength_fallback=int(flags.overlength_fallback),
            candidate_pairs=match.candidate_pairs,
            rollout_len=target.decode.rollout_len,
            prefix_len=target.prefix_len,
            train_len=target.train_len,
            encoded_len=target.encoded_len,
            parse_dropped_by_bucket=dict(counts.drop_counts),
        )

    @classmethod
    def prompt_mismatch(cls) -> SampleCounters:
        """A sample dropped for a prompt mismatch (policy ``drop``): counted, never trained."""
        return cls(samples=0, prompt_mismatch_dropped=1)

    def as_dict(self) -> dict[str, int]:
        """Flat ``{name: number}`` (buckets as ``parse_dropped/<bucket>``), e.g. ``SegmentInfo.counters``."""
        out = {name: getattr(self, name) for name in (*TOTAL_COUNTERS, "candidate_pairs", *LENGTHS)}
        out.update({f"parse_dropped/{b}": c for b, c in self.parse_dropped_by_bucket.items()})
        return out


def rollout_metric_keys() -> list[tuple[str, str]]:
    """The static ``(key, reduction)`` list of every metric :func:`rollout_metrics` may emit."""
    keys = [(f"{PREFIX}{name}_total", SUM) for name in TOTAL_COUNTERS]
    keys += [(f"{PREFIX}parse_dropped/{bucket}_total", SUM) for bucket in DROP_BUCKETS]
    keys += [(PREFIX + suffix, MEAN) for suffix, _, _ in _RATIOS]
    keys += [(f"{PREFIX}{name}_mean", MEAN) for name in LENGTHS]
    keys += [(f"{PREFIX}{name}_max", MAX) for name in LENGTHS]
    keys += [(SEED_BASE_KEY, MAX)]
    keys += [(f"time/{name}_s_sum", SUM) for name in TIMINGS]
    return keys


def rollout_metrics(
    samples: Sequence[SampleCounters],
    *,
    seed_base: int | None = None,
    timings: Mapping[str, float] | None = None,
) -> list[Metric]:
    """One micro-batch's (or rank's) rollout metrics with the §3.8 reductions.

    ``samples``: the per-sample counters (prompt-mismatch drops included). ``seed_base``: the step's
    seed base (max-reduced). ``timings``: seconds by :data:`TIMINGS` name. Returns ``[]`` when there
    is nothing (no samples, no timings): the keys are sparse, present only on steps with rollouts.
    Mean keys are emitted as ``(Σnum, Σden)`` even when ``Σden = 0`` (the reducer drops them); max
    keys only when some sample was prepared.
    """
    timings = dict(timings or {})
    unknown = sorted(set(timings) - set(TIMINGS))
    if unknown:
        raise PipelineError(f"unknown rollout timing {unknown[0]!r}; expected one of {TIMINGS}")
    if not samples and not timings:
        return []
    totals = {name: sum(getattr(s, name) for s in samples) for name in (*TOTAL_COUNTERS, "candidate_pairs")}
    totals["matcher_pairs"] = sum(s.matcher_pairs for s in samples)
    metrics = [Metric.sum(f"{PREFIX}{name}_total", totals[name]) for name in TOTAL_COUNTERS]
    metrics += [
        Metric.sum(
            f"{PREFIX}parse_dropped/{bucket}_total", sum(s.parse_dropped_by_bucket[bucket] for s in samples)
        )
        for bucket in DROP_BUCKETS
    ]
    metrics += [Metric.mean(PREFIX + suffix, totals[num], totals[den]) for suffix, num, den in _RATIOS]
    prepared = [s for s in samples if s.samples]
    for name in LENGTHS:
        metrics.append(
            Metric.mean(f"{PREFIX}{name}_mean", sum(getattr(s, name) for s in prepared), len(prepared))
        )
        if prepared:
            metrics.append(Metric.max(f"{PREFIX}{name}_max", max(getattr(s, name) for s in prepared)))
    if seed_base is not None:
        metrics.append(Metric.max(SEED_BASE_KEY, int(seed_base)))
    metrics += [Metric.sum(f"time/{name}_s_sum", float(seconds)) for name, seconds in timings.items()]
    return metrics


__all__ = [
    "F1_KEY",
    "LENGTHS",
    "ROLLOUT_DERIVED",
    "SEED_BASE_KEY",
    "TIMINGS",
    "TOTAL_COUNTERS",
    "SampleCounters",
    "rollout_metric_keys",
    "rollout_metrics",
]
