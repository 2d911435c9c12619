"""Bounded rollout debug dumps (spec 03 §3.8): ``{output_dir}/rollout_dumps/rank{r}.jsonl``.

``rollout_matching.debug_dump.{enabled: false, max_per_step: 4, max_total: 200}``. Each line is one
prepared sample: the raw rollout text (before the hard stop), what the parse found, the match, the
kept prefix and the FN fragment. Per step, dropped samples come first, then invalid rollouts, then
rollouts with parse drops, then the rest (stable within each group). ``max_total`` counts the lines
already in the file, so a resumed run stays bounded.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from coordexp.core.errors import ConfigError
from coordexp.rollout.prepare import PreparedSample

CONFIG_PATH = "rollout_matching.debug_dump"


def _non_negative_int(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{CONFIG_PATH}.{attribute.name}", f"expected an int >= 0, got {value!r}")


@attrs.frozen
class DebugDumpConfig:
    """``rollout_matching.debug_dump``: off by default; at most ``max_per_step`` lines per step and
    ``max_total`` lines per rank file."""

    enabled: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    max_per_step: int = attrs.field(default=4, validator=_non_negative_int)
    max_total: int = attrs.field(default=200, validator=_non_negative_int)


def _priority(sample: PreparedSample) -> int:
    if sample.dropped:
        return 0
    if sample.target.flags.invalid_rollout:
        return 1
    if sample.target.counts.dropped:
        return 2
    return 3


def dump_record(sample: PreparedSample, step: int) -> dict[str, Any]:
    """The JSON-serializable dump line of one prepared sample at optimizer step ``step``."""
    record: dict[str, Any] = {
        "step": int(step),
        "sample_id": sample.sample_id,
        "dropped_reason": sample.dropped_reason,
        "raw_text": sample.rollout_text,
        "counters": sample.counters.as_dict(),
    }
    target = sample.target
    if target is None:
        return record
    record.update(
        {
            "flags": attrs.asdict(target.flags),
            "parse": {
                "drop_counts": {k: v for k, v in target.counts.drop_counts.items() if v},
                "valid_records": target.counts.valid_records,
                "field_order_mismatch": target.counts.field_order_mismatch,
                "degenerate_pred_bbox": target.counts.degenerate_pred_bbox,
                "dropped_incomplete_tail": target.counts.dropped_incomplete_tail,
            },
            "match": target.match.to_dict(),
            "prefix": target.prefix_text,
            "fragment": target.fragment_text,
            "decode": {**dict(target.decode.params), "seed": target.decode.seed},
        }
    )
    return record


class RolloutDumpWriter:
    """Appends bounded debug dumps for one rank (module doc)."""

    def __init__(self, output_dir: str | os.PathLike[str], rank: int, cfg: DebugDumpConfig) -> None:
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 0:
            raise ConfigError("rank", f"expected an int >= 0, got {rank!r}")
        self.cfg = cfg
        self.path = Path(output_dir) / "rollout_dumps" / f"rank{int(rank)}.jsonl"
        self.written = 0
        if cfg.enabled and self.path.is_file():
            with self.path.open("rb") as handle:
                self.written = sum(1 for _ in handle)

    def write_step(self, step: int, samples: Sequence[PreparedSample]) -> int:
        """Dump up to the per-step and total budgets of ``samples``; returns the lines written."""
        if not self.cfg.enabled:
            return 0
        budget = min(self.cfg.max_per_step, self.cfg.max_total - self.written)
        if budget <= 0 or not samples:
            return 0
        chosen = sorted(range(len(samples)), key=lambda i: (_priority(samples[i]), i))[:budget]
        lines = [json.dumps(dump_record(samples[i], step), ensure_ascii=False) for i in chosen]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
        self.written += len(lines)
        return len(lines)


__all__ = ["DebugDumpConfig", "RolloutDumpWriter", "dump_record"]
