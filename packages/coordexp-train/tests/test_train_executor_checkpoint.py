"""Checkpoint safety and layout: `state.pt` loads with `weights_only=True`, so a tampered pickle
is refused before it can run anything; writes are atomic; resume finds the newest complete one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from coordexp.core.errors import ConfigError
from coordexp.train.recipes.train import _resume_dir
from coordexp.train.run import checkpoint as ckpt
from coordexp.train.run.rng import capture_rng_state, restore_rng_state


class _Payload:
    """A class outside torch's weights-only allowlist."""

    def __init__(self) -> None:
        self.value = 1


class _OpensAFile:
    """Unpickling this calls `builtins.open(path, "w")`: creates the file if the load executes it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _save(root: Path, step: int = 1, **state) -> Path:
    return ckpt.save_checkpoint(
        root,
        step,
        model_state={"w": torch.arange(6.0).reshape(2, 3)},
        state={"optimizer": {"lr": torch.tensor(0.1)}, **state},
        meta={"pipeline_checksum": "p", "strategy_sha256": "s"},
    )


def test_round_trip(tmp_path):
    path = _save(tmp_path, 3, rng=[capture_rng_state()])
    model_state, state, meta = ckpt.load_checkpoint(path)
    assert path == tmp_path / "checkpoints" / "step_3"
    assert torch.equal(model_state["w"], torch.arange(6.0).reshape(2, 3))
    assert float(state["optimizer"]["lr"]) == pytest.approx(0.1)
    assert meta == {"step": 3, "pipeline_checksum": "p", "strategy_sha256": "s"}


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = _save(tmp_path, rng=[capture_rng_state()])
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    _, state, _ = ckpt.load_checkpoint(path)
    restore_rng_state(state["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    path = _save(tmp_path)
    marker = tmp_path / "executed"
    torch.save({"optimizer": _OpensAFile(marker)}, path / "state.pt")
    refused = r"state\.pt: refused to load.*weights-only allowlist.*GLOBAL (_?io|builtins)\.open was not"
    with pytest.raises(ckpt.CheckpointError, match=refused):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


def test_a_pickled_non_allowlisted_class_is_refused(tmp_path):
    path = _save(tmp_path)
    torch.save({"optimizer": _Payload()}, path / "state.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"refused to load.*_Payload"):
        ckpt.load_checkpoint(path)


def test_incomplete_checkpoints_are_reported_and_never_picked(tmp_path):
    good = _save(tmp_path, 2)
    broken = _save(tmp_path, 4)
    (broken / "state.pt").unlink()
    with pytest.raises(ckpt.CheckpointError, match="incomplete checkpoint, missing state.pt"):
        ckpt.load_checkpoint(broken)
    # A half-written directory (crash before the rename) has no meta.json under a step_N name.
    (tmp_path / "checkpoints" / "step_6.tmp").mkdir()
    (tmp_path / "checkpoints" / "step_8").mkdir()
    assert ckpt.list_checkpoints(tmp_path) == [good, broken]
    (broken / "meta.json").unlink()
    assert ckpt.latest_checkpoint(tmp_path) == good


def test_keep_last_prunes_the_oldest(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(
            tmp_path, step, model_state={"w": torch.zeros(1)}, state={}, meta={}, keep_last=2
        )
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_3", "step_4"]
    assert json.loads((tmp_path / "checkpoints" / "step_4" / "meta.json").read_text()) == {"step": 4}


def test_unique_state_dict_keeps_one_name_per_tied_tensor():
    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(5, 3)
    model.head = torch.nn.Linear(3, 5, bias=False)
    model.head.weight = model.embed.weight
    assert list(ckpt.unique_state_dict(model)) == ["embed.weight"]


def test_resume_dir_resolution(tmp_path):
    assert _resume_dir(None, tmp_path) is None
    assert _resume_dir("auto", tmp_path) is None  # nothing yet: start fresh
    with pytest.raises(ConfigError, match="no checkpoint under"):
        _resume_dir("latest", tmp_path)
    with pytest.raises(ConfigError, match="is not a checkpoint directory"):
        _resume_dir(str(tmp_path / "nowhere"), tmp_path)
    _save(tmp_path, 2)
    newest = _save(tmp_path, 10)
    assert _resume_dir("latest", tmp_path) == newest == _resume_dir("auto", tmp_path)
    assert _resume_dir(str(newest), tmp_path) == newest
