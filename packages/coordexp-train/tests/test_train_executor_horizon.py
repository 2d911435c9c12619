"""A step count fixed while the run goes (`run_training(decide_total=...)`, executor/trainer.py): at
the end of warm-up for cosine, as late as the decay allows for warmup_stable_decay.

The run must be the run configured with that count from the start (same learning rates, losses
and weights), keep the count in its checkpoints so a resume continues it, and record it in the
run manifest; the decision is clamped to the configured count and to at least one more step.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from coordexp.train.run import checkpoint as ckpt
from coordexp.train.run.manifest import read_manifest

# the demo config's own schedule is warmup_stable_decay (whose lr_decay_ratio cosine refuses)
COSINE = ("training.lr_scheduler=cosine", "training.lr_decay_ratio=null")
CAP = ("training.max_steps=8", "training.warmup_steps=3", *COSINE)


class Decider:
    """A `decide_total` that answers `total` and remembers what it was asked."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.calls: list[tuple[int, float]] = []

    def __call__(self, done: int, step_s: float) -> int:
        self.calls.append((done, step_s))
        return self.total


def _same_runs(a, b) -> None:
    assert [r.step for r in a.history] == [r.step for r in b.history]
    for mine, theirs in zip(a.history, b.history, strict=True):
        for key in ("loss/total", "train/lr_max", "train/grad_norm_max"):
            assert math.isclose(mine.metrics[key], theirs.metrics[key], rel_tol=1e-6, abs_tol=1e-12), key
    want, got = (load_file(str(r.output_dir / "final" / "model.safetensors")) for r in (a, b))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7, msg=name)


def test_a_count_fixed_in_warmup_is_the_run_configured_with_it(train_stage1, tmp_path):
    decide = Decider(5)
    fixed = train_stage1(tmp_path / "fixed", *CAP, decide_total=decide)
    configured = train_stage1(tmp_path / "configured", "training.max_steps=5", "training.warmup_steps=3", *COSINE)

    assert len(decide.calls) == 1 and decide.calls[0][0] == 3 and decide.calls[0][1] > 0
    _same_runs(fixed, configured)
    assert read_manifest(tmp_path / "fixed")["horizon"] == {"total_steps": 5, "fixed_at": 3}
    assert "horizon" not in read_manifest(tmp_path / "configured")


WSD = (
    "training.max_steps=10",
    "training.warmup_steps=2",
    "training.lr_scheduler=warmup_stable_decay",
    "training.lr_decay_ratio=0.5",
)


@pytest.mark.parametrize(
    ("schedule", "answer", "asked_at", "total"),
    [
        (WSD, 6, [2, 3], 6),  # 6 steps decay from step 3: fixed then, not before
        (WSD, 100, [2, 3, 4, 5], 10),  # the configured 10 decay from step 5: the last chance
        ((*WSD[:2], "training.lr_scheduler=constant", "training.lr_decay_ratio=null"), 6, [2, 3, 4, 5], 6),  # no decay: at the end
    ],
)
def test_a_count_fixed_as_late_as_the_schedule_allows_is_the_run_configured_with_it(
    train_stage1, tmp_path, schedule, answer, asked_at, total
):
    decide = Decider(answer)
    fixed = train_stage1(tmp_path / "fixed", *schedule, decide_total=decide)
    configured = train_stage1(tmp_path / "configured", *schedule, f"training.max_steps={total}")

    assert [done for done, _ in decide.calls] == asked_at
    _same_runs(fixed, configured)
    assert read_manifest(tmp_path / "fixed")["horizon"] == {"total_steps": total, "fixed_at": asked_at[-1]}


@pytest.mark.parametrize(("answer", "steps"), [(100, 8), (0, 4), (-7, 4)])
def test_the_decision_is_clamped_to_the_configured_count_and_one_more_step(
    train_stage1, tmp_path, answer, steps
):
    result = train_stage1(tmp_path / "run", *CAP, decide_total=Decider(answer))
    assert len(result.history) == steps
    assert read_manifest(tmp_path / "run")["horizon"] == {"total_steps": steps, "fixed_at": 3}


def test_a_resume_continues_the_count_fixed_before_the_checkpoint(train_stage1, tmp_path):
    saving = ("training.save_strategy=steps", "training.save_steps=4")
    whole = train_stage1(tmp_path / "whole", *CAP, *saving, decide_total=Decider(6))
    step4 = tmp_path / "whole" / "checkpoints" / "step_4"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "whole")] == ["step_4", "step_6"]
    _, _, meta = ckpt.load_checkpoint(step4)
    assert meta["horizon"] == {"total_steps": 6, "fixed_at": 3}

    # no decide_total on resume: the checkpoint's count (6), not the config's (8), ends the run
    resumed = train_stage1(tmp_path / "resumed", *CAP, *saving, f"training.resume_from={step4}")
    assert [r.step for r in resumed.history] == [4, 5]
    for mine, theirs in zip(resumed.history, whole.history[4:], strict=True):
        assert math.isclose(mine.metrics["train/lr_max"], theirs.metrics["train/lr_max"], rel_tol=1e-9)
        assert math.isclose(mine.metrics["loss/total"], theirs.metrics["loss/total"], rel_tol=1e-6)


def test_deciding_needs_warmup_steps_to_time(train_stage1, tmp_path):
    with pytest.raises(ValueError, match="at least 2 warm-up steps"):
        train_stage1(tmp_path / "run", "training.warmup_steps=1", decide_total=Decider(3))


def test_a_resume_inside_warmup_still_fixes_the_count_at_its_end(train_stage1, tmp_path):
    saving = ("training.save_strategy=steps", "training.save_steps=2")
    train_stage1(tmp_path / "first", *CAP, *saving, "training.max_steps=4")  # no decision; saves at 2, 4
    step2 = tmp_path / "first" / "checkpoints" / "step_2"
    decide = Decider(5)
    resumed = train_stage1(tmp_path / "resumed", *CAP, f"training.resume_from={step2}", decide_total=decide)
    configured = train_stage1(tmp_path / "configured", "training.max_steps=5", "training.warmup_steps=3", *COSINE)

    assert [done for done, _ in decide.calls] == [3]  # timed on the one step the resume ran before it
    assert [r.step for r in resumed.history] == [2, 3, 4]
    for mine, theirs in zip(resumed.history, configured.history[2:], strict=True):
        assert math.isclose(mine.metrics["train/lr_max"], theirs.metrics["train/lr_max"], rel_tol=1e-9)
        assert math.isclose(mine.metrics["loss/total"], theirs.metrics["loss/total"], rel_tol=1e-6)
