"""Run the tests from a source checkout without installing the plugin first.

When ``coordexp_focal_coord`` is not installed, its ``src`` directory is put on ``sys.path``.
(Entry-point discovery needs an install: ``pip install -e plugins/coordexp-focal-coord``.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("coordexp_focal_coord") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
