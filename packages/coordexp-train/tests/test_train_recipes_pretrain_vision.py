"""`pretrain_vision` on the session's tiny model and synthetic set: what it writes, that only the
vision tower changes, determinism, and its refusals (nothing lost on bad input)."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from safetensors.torch import load_file

from coordexp.core.errors import ConfigError, DataContractError
from coordexp.train.models import load_model_and_processor
from coordexp.train.recipes.pretrain_vision import (
    LOG_FILE,
    SUMMARY_FILE,
    VisionPretrainSettings,
    lr_factor,
    pretrain_vision,
)

FAST = VisionPretrainSettings(steps=3, batch_size=4, logging_steps=1, val_samples=2)


@pytest.fixture(scope="module")
def pretrained(stage1_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("vision") / "model"
    result = pretrain_vision(
        stage1_assets.model_dir, stage1_assets.train_jsonl, out, FAST, val_jsonl=stage1_assets.val_jsonl, progress=False
    )
    return stage1_assets, result


def test_writes_a_loadable_checkpoint_a_log_and_a_summary(pretrained):
    assets, result = pretrained
    model, processor = load_model_and_processor(result.out_dir)
    assert model.config.model_type == "qwen3_vl" and processor.tokenizer is not None
    log = [json.loads(line) for line in (result.out_dir / LOG_FILE).read_text().splitlines()]
    assert [line["step"] for line in log] == [1, 2, 3] and list(result.history) == log
    for line in log:
        assert line["ce"] > 0
        assert 0 <= line["cell_accuracy"] <= 1 and 0 <= line["object_accuracy"] <= 1
        assert 0 < line["step_s"] < 60  # wall-clock seconds per step of the logging window
    summary = json.loads((result.out_dir / SUMMARY_FILE).read_text())
    assert summary["settings"]["steps"] == 3 and summary["final"] == log[-1]
    assert summary["vocab"] == list(result.vocab.descs) and len(result.vocab.descs) >= 1
    train_descs = {o["desc"] for line in assets.train_jsonl.read_text().splitlines() for o in json.loads(line)["objects"]}
    assert set(summary["val_only_descs"]) == set(summary["vocab"]) - train_descs
    assert set(summary["val"]) == {"ce", "cell_accuracy", "object_accuracy"} == set(result.val)


def test_only_the_vision_tower_changes(pretrained):
    assets, result = pretrained
    before = load_file(assets.model_dir / "model.safetensors")
    after = load_file(result.out_dir / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".visual." in name for name in changed)
    assert any("patch_embed" in name for name in changed) and any("merger" in name for name in changed)


def test_same_seed_same_losses_and_weights(pretrained, tmp_path):
    assets, result = pretrained
    again = pretrain_vision(
        assets.model_dir, assets.train_jsonl, tmp_path / "again", FAST, val_jsonl=assets.val_jsonl, progress=False
    )
    assert _measured(again.history) == _measured(result.history) and again.val == result.val
    first, second = load_file(result.out_dir / "model.safetensors"), load_file(again.out_dir / "model.safetensors")
    assert all(torch.equal(first[name], second[name]) for name in first)
    other = pretrain_vision(
        assets.model_dir, assets.train_jsonl, tmp_path / "other", VisionPretrainSettings(steps=3, batch_size=4, seed=1),
        progress=False,
    )
    assert other.history[-1]["ce"] != result.history[-1]["ce"] and other.val is None


def _measured(history):
    """The log lines without their wall-clock timing."""
    return [{k: v for k, v in line.items() if k != "step_s"} for line in history]


def test_refusals_keep_existing_files(stage1_assets, tmp_path):
    src, train = stage1_assets.model_dir, stage1_assets.train_jsonl
    with pytest.raises(ConfigError, match="must differ from the source"):
        pretrain_vision(src, train, src, FAST, progress=False)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        pretrain_vision(src, train, occupied, FAST, progress=False)
    # With overwrite, bad data still fails before the directory is emptied.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataContractError, match="bad.jsonl:1"):
        pretrain_vision(src, train, occupied, FAST, val_jsonl=bad, overwrite=True, progress=False)
    assert (occupied / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0), ("batch_size", -1), ("lr", 0.0), ("weight_decay", -0.1),
        ("seed", 1.5), ("logging_steps", True), ("subcells", 0),
        ("decay_fraction", -0.1), ("decay_fraction", 1.5), ("decay_fraction", True),
    ],
)
def test_settings_are_validated_with_their_key_path(field, value):
    with pytest.raises(ConfigError, match=f"vision_pretrain.{field}"):
        VisionPretrainSettings(**{field: value})


def test_lr_is_constant_then_decays_linearly_over_the_last_fraction():
    assert [lr_factor(i, 10, 0.0) for i in range(10)] == [1.0] * 10
    factors = [lr_factor(i, 10, 0.3) for i in range(10)]
    assert factors[:8] == [1.0] * 8
    assert factors[8:] == pytest.approx([2 / 3, 1 / 3])
    assert [lr_factor(i, 4, 1.0) for i in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_the_log_records_the_decayed_learning_rate(stage1_assets, tmp_path):
    settings = attrs.evolve(FAST, decay_fraction=1.0, val_samples=0)
    result = pretrain_vision(
        stage1_assets.model_dir, stage1_assets.train_jsonl, tmp_path / "m", settings, progress=False
    )
    lrs = [line["lr"] for line in result.history]
    assert lrs == pytest.approx([settings.lr, settings.lr * 2 / 3, settings.lr / 3])
