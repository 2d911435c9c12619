"""Run `coordexp train CONFIG OVERRIDES...` (the real CLI entry) in one process of a launch and
dump what this rank saw, for tests/test_ddp_stage1.py.

Usage (under torchrun, accelerate launch, or plain python for a single process):

    python tests/ddp_stage1_launcher.py DUMP_DIR CONFIG [KEY=VALUE ...]

Writes `DUMP_DIR/rank{RANK}.json` = {"rank", "world_size", "exit_code", "history": [{"step",
"metrics"}], "param_sha256"} and `DUMP_DIR/rank{RANK}.safetensors` (the trained parameters).
The recipe does not return the model, so the launcher keeps a reference to the one
`load_model_and_processor` built, and records the `TrainResult` the recipe returned; both
only observe, the CLI path itself runs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

import coordexp.train.recipes.train as recipe
from coordexp.train.cli.main import main


def _observe() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    load, run = recipe.load_model_and_processor, recipe.run_training

    def load_and_keep(*args: Any, **kwargs: Any) -> Any:
        model, processor = load(*args, **kwargs)
        seen["model"] = model
        return model, processor

    def run_and_keep(*args: Any, **kwargs: Any) -> Any:
        seen["result"] = run(*args, **kwargs)
        return seen["result"]

    recipe.load_model_and_processor = load_and_keep
    recipe.run_training = run_and_keep
    return seen


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu").contiguous().clone() for name, p in model.named_parameters()}


def _digest(params: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(params[name].numpy().tobytes())
    return h.hexdigest()


def run(dump_dir: Path, argv: list[str]) -> int:
    torch.set_num_threads(1)
    seen = _observe()
    code = main(["train", *argv, "--no-progress"])
    rank = int(os.environ.get("RANK", "0"))
    dump_dir.mkdir(parents=True, exist_ok=True)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    record: dict[str, Any] = {"rank": rank, "world_size": world_size, "exit_code": code}
    if "result" in seen:
        record["history"] = [{"step": r.step, "metrics": r.metrics} for r in seen["result"].history]
    if "model" in seen:
        params = _parameters(seen["model"])
        record["param_sha256"] = _digest(params)
        save_file(params, str(dump_dir / f"rank{rank}.safetensors"))
    (dump_dir / f"rank{rank}.json").write_text(json.dumps(record, sort_keys=True))
    return code


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(run(Path(sys.argv[1]), sys.argv[2:]))
