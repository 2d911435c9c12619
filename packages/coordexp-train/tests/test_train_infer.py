"""`coordexp infer` (spec 06 §6.1–§6.2): sources, prompt identity, one line per image in order."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from coordexp.core.errors import ConfigError
from coordexp.train.eval.records import read_records
from coordexp.train.recipes.infer import resolve_source, run_inference


def test_infer_on_a_checkpoint_writes_one_line_per_image_in_order(stage1_assets, tmp_path):
    path = run_inference(
        stage1_assets.model_dir, stage1_assets.val_jsonl, tmp_path / "eval",
        max_new_tokens=12, decode_batch_size=2, progress=False,
    )
    records = read_records(path)
    n_val = sum(1 for _ in open(stage1_assets.val_jsonl))
    assert [r.image_id for r in records] == list(range(n_val))
    for record in records:
        assert record.coord_mode == "pixel"
        assert record.pred_score_source in ("coord_logprob", "constant_fallback")
        assert isinstance(record.raw_output, str)


@pytest.mark.parametrize("coord_pick", ["token", "expectation"])
def test_expectation_decoding_reaches_generate_with_the_models_coord_ids(
    stage1_assets, tmp_path, coord_pick, coord_pick_calls
):
    path = run_inference(
        stage1_assets.model_dir, stage1_assets.val_jsonl, tmp_path / "eval",
        max_new_tokens=6, decode_batch_size=2, max_samples=2, coord_pick=coord_pick, progress=False,
    )
    assert len(read_records(path)) == 2
    if coord_pick == "token":
        assert coord_pick_calls == []
    else:
        tokenizer = AutoTokenizer.from_pretrained(stage1_assets.model_dir)
        coord_ids = tokenizer.convert_tokens_to_ids([f"<|coord_{k}|>" for k in range(1000)])
        assert coord_pick_calls and all(ids == coord_ids for ids in coord_pick_calls)


def test_a_run_directory_fixes_the_prompt_identity(train_stage1, tmp_path):
    run = tmp_path / "run"
    train_stage1(run, "training.max_steps=1")
    source = resolve_source(run, {})
    assert source.model_dir == run / "final" and source.prompt.field_order == "desc_first"
    with pytest.raises(ConfigError, match="conflicts with the run manifest"):
        resolve_source(run, {"field_order": "geometry_first"})


def test_an_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="run directory"):
        resolve_source(tmp_path, {})
