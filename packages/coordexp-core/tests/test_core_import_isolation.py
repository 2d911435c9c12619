"""The core must never import transformers, accelerate, or another coordexp package (ARCHITECTURE.md)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import coordexp.core

FORBIDDEN = ("transformers", "accelerate", "coordexp.train", "coordexp.losses", "coordexp.rollout")


def _all_core_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.walk_packages(coordexp.core.__path__, prefix="coordexp.core.")
    )


def test_core_modules_exist():
    assert len(_all_core_modules()) >= 5


def test_importing_every_core_module_loads_no_forbidden_package():
    modules = _all_core_modules() + ["coordexp.testing.factory"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {{'transformers', 'accelerate'}} "
        f"or n.startswith(('coordexp.train', 'coordexp.losses', 'coordexp.rollout')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core pulled in forbidden modules: {out.stdout.strip()}"


def test_namespace_package_has_no_init():
    import coordexp

    assert getattr(coordexp, "__file__", None) is None, "coordexp must stay a PEP 420 namespace"
