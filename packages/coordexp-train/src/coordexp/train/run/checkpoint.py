"""Atomic, safe checkpoints: `{output_dir}/checkpoints/step_{N}/`.

Layout of one checkpoint directory:
  model.safetensors   trainable model weights (safetensors; no pickle)
  state.pt            optimizer, scheduler, RNG, data position, step — saved with torch.save and
                      loaded with `weights_only=True`, so loading never executes arbitrary objects
  meta.json           step, pipeline checksum, strategy sha256 (checked on resume)

A checkpoint is written into a temporary sibling directory and renamed into place, so a crash
mid-write never leaves a half checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from coordexp.core.errors import CoordexpError

_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(CoordexpError):
    """A checkpoint is missing, incomplete or incompatible with the run."""


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step}"


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int | None = None,
) -> Path:
    """Write checkpoint `step` atomically and return its directory.

    `model_state` tensors are made contiguous CPU copies; shared storage (tied weights) is
    de-duplicated by safetensors' requirement, so callers pass `unique_state_dict(model)`.
    """
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last is not None and keep_last > 0:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old)
    return final


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories under `output_dir`, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / "meta.json").is_file():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Return (model_state, state, meta) of a checkpoint directory, loading nothing unsafe."""
    path = Path(path)
    missing = [n for n in ("model.safetensors", "state.pt", "meta.json") if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    model_state = load_file(str(path / "model.safetensors"))
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        detail = next((line for line in lines if "global" in line.lower()), lines[0]).strip()
        detail = detail.split(". Please use", 1)[0]  # torch's hint is to allowlist it: not for us
        raise CheckpointError(
            f"{path / 'state.pt'}: refused to load, it holds objects outside the weights-only allowlist "
            f"(tampered or not written by coordexp): {detail}"
        ) from exc
    meta = json.loads((path / "meta.json").read_text())
    return model_state, state, meta


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without aliases of the same storage (tied embeddings / lm_head)."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen[key] = name
        out[name] = tensor
    return out
