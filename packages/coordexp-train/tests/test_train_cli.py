"""The `coordexp` command line: every command has --help; user errors exit 2 with one clear line;
the data/model/config/pipeline/env commands work end to end through `main`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordexp.train.cli.main import COMMAND_MODULES, build_parser, main

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "configs" / "demo" / "stage1.yaml"

COMMANDS = (
    ["train"], ["demo"], ["config", "show"], ["config", "preflight"], ["config", "validate-profiles"],
    ["pipeline", "show"], ["plugins"], ["data", "synth"], ["data", "validate"], ["data", "convert"],
    ["model", "create"], ["model", "expand-vocab"], ["model", "pretrain-vision"], ["infer"], ["eval"], ["report"], ["env"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: coordexp" in capsys.readouterr().out


def test_every_command_module_is_registered():
    names = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse API
    assert {"train", "demo", "config", "pipeline", "plugins", "data", "model", "infer", "eval", "report", "env"} <= names
    assert len(COMMAND_MODULES) == len(names)


def test_building_the_parser_loads_neither_torch_nor_transformers():
    """`coordexp --help` answers in a fraction of a second, and `coordexp demo` notes its start time
    before the ~6 s import of torch and transformers (which its budget then counts)."""
    code = (
        "import sys; from coordexp.train.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_main_hands_every_handler_its_start_time(monkeypatch):
    import argparse
    import importlib
    import time

    main_module = importlib.import_module("coordexp.train.cli.main")  # the package exports `main` too
    seen = {}
    parser = argparse.ArgumentParser(prog="coordexp")
    parser.set_defaults(handler=lambda args: seen.setdefault("started_at", args.started_at) and 0)
    before = time.time()
    monkeypatch.setattr(main_module, "build_parser", lambda: (time.sleep(0.05), parser)[1])
    assert main_module.main([]) == 0
    assert before <= seen["started_at"] <= time.time() - 0.05  # taken before the parser was built


def test_lazy_models_package_exports_every_name():
    import coordexp.train.models as models

    for name in models.__all__:
        assert getattr(models, name) is not None
    assert "create_model" in dir(models)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        models.nope  # noqa: B018


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("coordexp")
    out = subprocess.run([str(exe), "env", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["versions"]["coordexp-core"] == "0.1.0"


def test_data_synth_then_validate(tmp_path, capsys):
    argv = ["data", "synth", "--out", str(tmp_path / "d"), "--train", "3", "--val", "2", "--seed", "1"]
    assert main([*argv, "--workers", "2"]) == 0
    assert main(["data", "validate", str(tmp_path / "d" / "train.jsonl")]) == 0
    assert "records" in capsys.readouterr().out


def test_data_synth_object_size_flag(tmp_path, capsys):
    args = ["data", "synth", "--out", str(tmp_path / "d"), "--train", "3", "--val", "0", "--object-size", "0.4,0.5"]
    assert main(args) == 0
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path / "e"), "--object-size", "big"])
    assert "expected LO,HI" in capsys.readouterr().err


def test_data_validate_reports_file_and_line_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"images": ["x.png"], "width": 4, "height": 4, "objects": [{"desc": "a", "bbox": [1, 2, 3, 4]}]}\n')
    assert main(["data", "validate", str(bad), "--no-images"]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:1" in out and "legacy_key" in out and "bbox_2d" in out


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(DEMO.read_text().replace("  seed: 0", "  seed: 0\n  sede: 1"))
    assert main(["config", "show", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.sede" in err[0]


def test_config_show_and_pipeline_show(capsys):
    assert main(["config", "show", str(DEMO)]) == 0
    assert "trainer_variant: stage1" in capsys.readouterr().out
    assert main(["pipeline", "show", str(DEMO), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    names = [entry["name"] for entry in shown["payload"]["objective"]]
    assert names == ["token_ce", "coord_reg", "bbox_geo"] and len(shown["checksum"]) == 64


def test_config_preflight_is_one_json_line(capsys):
    assert main(["config", "preflight", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"rollout_backend": "hf", "server_base_urls": [], "vllm_mode": None}


def test_model_pretrain_vision_prints_its_accuracies(stage1_assets, tmp_path, capsys):
    out = tmp_path / "vision"
    argv = [
        "model", "pretrain-vision", str(stage1_assets.model_dir), "--data", str(stage1_assets.train_jsonl),
        "--val", str(stage1_assets.val_jsonl), "--out", str(out), "--steps", "2", "--batch-size", "2",
        "--lr", "0.004", "--decay-fraction", "1", "--no-progress",
    ]
    assert main(argv) == 0
    first, second = capsys.readouterr().out.splitlines()
    result = json.loads(first)
    assert result["final"]["step"] == 2 and set(result["val"]) == {"ce", "cell_accuracy", "object_accuracy"}
    assert result["final"]["lr"] == pytest.approx(0.002)  # the last of 2 steps decays to half
    assert second.startswith(f"wrote {out}") and (out / "model.safetensors").is_file()
    assert main(argv) == 2  # refuses to overwrite
    assert main([*argv[:-1], "--steps", "0"]) == 2  # settings are validated, one clear line
    assert main([*argv[:-1], "--decay-fraction", "2"]) == 2


def test_model_create_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert main(["model", "create", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert main(["model", "create", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 2  # refuses to overwrite
