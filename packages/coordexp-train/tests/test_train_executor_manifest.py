"""The run manifest and the init log line of a Stage-1 run (spec 05 §5.12)."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path

from coordexp.core.pipeline.checksum import pipeline_checksum, sha256_hex
from coordexp.train.data.prompts import prompt_sha256, resolve_prompt
from coordexp.train.models import load_processor
from coordexp.train.models.tokenizer import coord_vocab_for
from coordexp.train.recipes import train as train_recipe
from coordexp.train.run.manifest import git_revision, tokenizer_sha256

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo" / "stage1.yaml"

BASE_DISTS = ("torch", "transformers", "accelerate", "pluggy")
CODE_DISTS = ("coordexp-core", "coordexp-losses", "coordexp-rollout", "coordexp-train")
STRATEGY_FIELDS = {
    "trainer_variant",
    "n_softctx_iter",
    "softctx_grad_mode",
    "softctx_temperature",
    "coord_ctx_embed_mode",
    "coord_decode_mode",
    "b_ratio",
    "packing",
    "max_length",
}
INIT_LINE = re.compile(
    r"pipeline checksum=(?P<checksum>[0-9a-f]{64}) variant=(?P<variant>\S+) modules=(?P<modules>\[.*\]) "
    r"config=(?P<config>\S+) run_name=(?P<run_name>\S+) seed=(?P<seed>\d+)"
)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_on_disk_is_the_returned_manifest(stage1_baseline):
    on_disk = json.loads((stage1_baseline.out_dir / "run_manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(stage1_baseline.result.manifest))


def test_manifest_identifies_config_pipeline_and_strategy(stage1_baseline):
    m = stage1_baseline.result.manifest
    assert m["config_path"] == str(DEMO_CONFIG)
    assert m["run_name"] == "demo-stage1" and m["seed"] == 0
    # Resolved config: canonical JSON (sorted keys, compact) and its sha256.
    config = json.loads(m["config"])
    assert m["config"] == json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert hashlib.sha256(m["config"].encode("ascii")).hexdigest() == m["config_sha256"]
    assert config["training"]["output_dir"] == str(stage1_baseline.out_dir)
    assert config["training"]["max_steps"] == 4 and config["custom"]["trainer_variant"] == "stage1"
    # Pipeline entries in declared order, and their checksum.
    entries = m["pipeline"]["entries"]
    assert [e["name"] for e in entries["objective"]] == ["token_ce", "coord_reg", "bbox_geo"]
    assert [e["name"] for e in entries["diagnostics"]] == ["coord_diag"]
    assert m["pipeline_checksum"] == pipeline_checksum(entries)
    # Strategy: every §5.12 field, with stage-1 values, and its sha256.
    strategy = m["strategy"]
    assert set(strategy) == STRATEGY_FIELDS
    assert strategy["trainer_variant"] == "stage1" and strategy["packing"] == "static"
    assert strategy["max_length"] == config["template"]["max_length"] == 1024
    assert strategy["coord_decode_mode"] == "exp" and strategy["b_ratio"] is None
    assert m["strategy_sha256"] == sha256_hex(strategy)
    assert m["world_size"] == 1
    assert m["score_source"] is None  # stage 1 has no rollout scores


def test_manifest_versions_and_git(stage1_baseline):
    m = stage1_baseline.result.manifest
    versions = m["versions"]
    for dist in BASE_DISTS + CODE_DISTS:
        assert versions[dist] == metadata.version(dist), dist
    # The repository holding the code that trained (none when installed from a wheel).
    assert m["git"] == git_revision(Path(train_recipe.__file__).resolve().parent)
    assert re.fullmatch(r"[0-9a-f]{40}", m["git"]["sha"] or "") and isinstance(m["git"]["dirty"], bool)


def test_manifest_tokenizer_prompt_and_data_digests(stage1_assets, stage1_baseline):
    m = stage1_baseline.result.manifest
    tokenizer = load_processor(stage1_assets.model_dir).tokenizer
    coord_ids = coord_vocab_for(tokenizer).coord_ids
    assert m["tokenizer"] == {
        "sha256": tokenizer_sha256(tokenizer),
        "vocab_size": len(tokenizer),
        "coord_id_min": int(coord_ids.min()),
        "coord_id_max": int(coord_ids.max()),
    }
    assert m["tokenizer"]["coord_id_max"] - m["tokenizer"]["coord_id_min"] == 999
    assert m["prompt_sha256"] == prompt_sha256(resolve_prompt("default", "sorted", "desc_first"))
    data = m["data"]
    assert data["train_sha256"] == _sha256_file(stage1_assets.train_jsonl)
    assert data["val_sha256"] == _sha256_file(stage1_assets.val_jsonl)
    meta = json.loads((stage1_baseline.out_dir / "checkpoints" / "step_2" / "meta.json").read_text())
    assert data["plan_sha256"] == meta["data_position"]["plan_sha256"]
    assert data["packs"] == 4


def test_tokenizer_sha256_tells_tokenizers_apart(stage1_assets):
    a = load_processor(stage1_assets.model_dir).tokenizer
    b = load_processor(stage1_assets.model_dir).tokenizer
    assert tokenizer_sha256(a) == tokenizer_sha256(b)
    b.add_tokens(["<|not_in_a|>"])
    assert tokenizer_sha256(a) != tokenizer_sha256(b)


def test_init_log_line(stage1_baseline):
    m = stage1_baseline.result.manifest
    messages = [r.getMessage() for r in stage1_baseline.log_records]
    lines = [line for line in messages if line.startswith("pipeline checksum=")]
    assert len(lines) == 1, lines
    match = INIT_LINE.fullmatch(lines[0])
    assert match is not None, lines[0]
    assert match["checksum"] == m["pipeline_checksum"]
    assert match["variant"] == "stage1"
    assert match["modules"] == "[token_ce(A,w=1.0), coord_reg(A,w=1.0), bbox_geo(A,w=1.0), coord_diag(A)]"
    assert match["config"] == m["config_path"]
    assert match["run_name"] == m["run_name"] and int(match["seed"]) == m["seed"]
