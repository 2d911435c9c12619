"""Fixtures of the repository-level integration tests.

The Stage-1 assets (synthetic data set + tiny model) come from the coordexp-train test conftest,
loaded by path because test directories are not packages; both registrations build into the
same session directory, so a session that runs both test trees builds the assets once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_TRAIN_CONFTEST = REPO_ROOT / "packages" / "coordexp-train" / "tests" / "conftest.py"


def _load_train_conftest():
    spec = importlib.util.spec_from_file_location("coordexp_train_tests_conftest", _TRAIN_CONFTEST)
    assert spec is not None and spec.loader is not None, _TRAIN_CONFTEST
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_train = _load_train_conftest()
Stage1Assets = _train.Stage1Assets
DEMO_CONFIG = _train.DEMO_CONFIG


@pytest.fixture(scope="session")
def stage1_assets(tmp_path_factory: pytest.TempPathFactory) -> Stage1Assets:
    return _train.build_stage1_assets(tmp_path_factory.getbasetemp() / "stage1-assets")
