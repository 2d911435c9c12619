"""Where reduced step metrics go: a JSONL file always, TensorBoard when it is installed.

Only rank 0 writes. Each JSONL line is `{"step": int, "kind": "train"|"eval", **metrics}`;
TensorBoard gets eval keys under `eval/` (spec 06 §6.6, D31).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only metrics log for one run."""

    def __init__(
        self, logging_dir: str | Path, *, enabled: bool = True, tensorboard: bool | None = None, start_step: int = 0
    ) -> None:
        """`start_step` > 0 (a resume) keeps the records up to that step; 0 starts a fresh file, so a
        log never mixes two runs or repeats the steps a resumed run recomputes."""
        self.enabled = enabled
        self.path = Path(logging_dir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r["step"] <= start_step] if start_step and self.path.is_file() else []
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
        if tensorboard is None:
            tensorboard = importlib.util.find_spec("tensorboard") is not None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(logging_dir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float], *, kind: str = "train", extra: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        record: dict[str, Any] = {"step": step, "kind": kind}
        record.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()})
        if extra:
            record.update(extra)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None:
            prefix = "eval/" if kind == "eval" else ""
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    self._tb.add_scalar(prefix + key, float(value), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file back (used by reports and tests)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
