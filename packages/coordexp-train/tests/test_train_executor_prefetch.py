"""Background step preparation (`training.prefetch_steps`): the prefetcher's contract, and a
Stage-1 run with prefetching that matches the session baseline (inline preparation, evaluation and
saving between steps) step for step and weight for weight."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from coordexp.core.errors import ConfigError, StepAborted
from coordexp.train.executor.prefetch import StepPrefetcher
from coordexp.train.stages.stage1 import Stage1


class _Recorder:
    """`prepare(step)` that records which thread ran which step and can fail or block on cue."""

    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[int, str]] = []
        self.fail_at = fail_at
        self.gate = gate
        self.running = threading.Event()

    def __call__(self, step: int) -> str:
        self.running.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.calls.append((step, threading.current_thread().name))
        if step == self.fail_at:
            raise RuntimeError(f"broken record at step {step}")
        return f"batch-{step}"


def test_depth_zero_prepares_inline_on_the_calling_thread():
    prepare = _Recorder()
    with StepPrefetcher(prepare, start=0, stop=3, depth=0) as prefetch:
        assert [prefetch.take(s) for s in range(3)] == ["batch-0", "batch-1", "batch-2"]
    assert prepare.calls == [(s, threading.current_thread().name) for s in range(3)]


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_prefetched_batches_come_back_in_order_and_never_past_stop(depth):
    prepare = _Recorder()
    with StepPrefetcher(prepare, start=3, stop=8, depth=depth) as prefetch:
        got = [prefetch.take(s) for s in range(3, 8)]
    assert got == [f"batch-{s}" for s in range(3, 8)]
    assert [step for step, _ in prepare.calls] == [3, 4, 5, 6, 7]
    assert all(name.startswith("coordexp-prefetch") for _, name in prepare.calls)


def test_the_next_step_is_prepared_while_the_current_one_is_used():
    prepare = _Recorder()
    with StepPrefetcher(prepare, start=0, stop=4, depth=1) as prefetch:
        assert prefetch.take(0) == "batch-0"
        deadline = time.monotonic() + 10
        while len(prepare.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert [step for step, _ in prepare.calls] == [0, 1]  # step 1 done before take(1)


def test_a_preparation_error_is_raised_by_the_take_of_that_step():
    prepare = _Recorder(fail_at=2)
    with StepPrefetcher(prepare, start=0, stop=5, depth=2) as prefetch:
        assert prefetch.take(0) == "batch-0"
        assert prefetch.take(1) == "batch-1"
        with pytest.raises(RuntimeError, match="broken record at step 2"):
            prefetch.take(2)


def test_quiesce_waits_for_running_preparation():
    gate = threading.Event()
    prepare = _Recorder(gate=gate)
    with StepPrefetcher(prepare, start=0, stop=3, depth=1) as prefetch:
        gate.set()
        prefetch.take(0)
        prefetch.quiesce()
        assert [step for step, _ in prepare.calls] == [0, 1]
        assert prefetch.take(1) == "batch-1"


def test_steps_must_be_taken_in_order_and_depth_is_checked():
    with StepPrefetcher(_Recorder(), start=0, stop=3, depth=1) as prefetch:
        with pytest.raises(ValueError, match="expected step 0, got 1"):
            prefetch.take(1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="training.prefetch_steps"):
            StepPrefetcher(_Recorder(), start=0, stop=3, depth=bad)


def test_prefetching_run_matches_inline_preparation(stage1_baseline, train_stage1, tmp_path):
    base = stage1_baseline  # inline preparation (the demo config's prefetch_steps 0), eval at 4, saves at 2 and 4
    prefetched = train_stage1(tmp_path / "prefetched", *base.overrides, "training.prefetch_steps=2")
    assert [r.step for r in prefetched.history] == [r.step for r in base.result.history] == [0, 1, 2, 3]
    for mine, theirs in zip(prefetched.history, base.result.history, strict=True):
        keys = {k for k in theirs.metrics if not k.startswith("time/") and k != "train/tokens_per_s"}
        assert keys == {k for k in mine.metrics if not k.startswith("time/") and k != "train/tokens_per_s"}
        for key in keys:
            assert mine.metrics[key] == pytest.approx(theirs.metrics[key], rel=1e-6, abs=1e-12), key
    want = load_file(str(base.out_dir / "final" / "model.safetensors"))
    got = load_file(str(tmp_path / "prefetched" / "final" / "model.safetensors"))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("depth", [0, 1])
def test_a_failing_preparation_aborts_that_step_after_the_earlier_ones(train_stage1, tmp_path, monkeypatch, depth):
    real = Stage1.prepare_step

    def prepare_step(self, step, rank):
        if step == 2:
            raise RuntimeError("image decode failed")
        return real(self, step, rank)

    monkeypatch.setattr(Stage1, "prepare_step", prepare_step)
    with pytest.raises(StepAborted, match=r"step 2 preparation failed: rank 0: RuntimeError: image decode failed"):
        train_stage1(tmp_path / "run", "training.max_steps=4", f"training.prefetch_steps={depth}")
    lines = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 1  # step 1 (the first step) was logged before the abort
