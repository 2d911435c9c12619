"""Lifecycle hooks of a training run (spec 05 §5.1, hookspecs in coordexp.core.plugins.hookspecs):
`coordexp_run_manifest` adds manifest fields (add only), `coordexp_pipeline_built` receives the
pipeline payload plus its checksum, `coordexp_step_start`/`coordexp_step_end` bracket every
optimizer step with the step's channel and its reduced metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

import coordexp.train.recipes.train as recipe
from coordexp.core.errors import PluginError
from coordexp.core.pipeline.checksum import pipeline_checksum
from coordexp.core.plugins.hookspecs import hookimpl
from coordexp.core.plugins.manager import get_plugin_manager


class Recorder:
    def __init__(self, extra_fields: Mapping[str, Any]) -> None:
        self.extra_fields = dict(extra_fields)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def coordexp_run_manifest(self, manifest):
        self.calls.append(("run_manifest", {"keys": sorted(manifest)}))
        return self.extra_fields

    @hookimpl
    def coordexp_pipeline_built(self, manifest):
        self.calls.append(("pipeline_built", {"manifest": manifest}))

    @hookimpl
    def coordexp_step_start(self, step, kind):
        self.calls.append(("step_start", {"step": step, "kind": kind}))

    @hookimpl
    def coordexp_step_end(self, step, metrics):
        self.calls.append(("step_end", {"step": step, "metrics": dict(metrics)}))


def _with_recorder(monkeypatch, recorder: Recorder) -> None:
    manager = get_plugin_manager()
    manager.register_distribution_plugin(recorder, "test-recorder", "coordexp-tests", "0")
    monkeypatch.setattr(recipe, "get_plugin_manager", lambda: manager)


def test_hooks_see_the_manifest_pipeline_and_every_step(monkeypatch, train_stage1, tmp_path):
    recorder = Recorder({"recorder/owner": "tests"})
    _with_recorder(monkeypatch, recorder)
    result = train_stage1(tmp_path / "run", "training.max_steps=2")

    kinds = [name for name, _ in recorder.calls]
    assert kinds == ["run_manifest", "pipeline_built", "step_start", "step_end", "step_start", "step_end"]
    assert {"pipeline_checksum", "strategy_sha256", "config_sha256"} <= set(recorder.calls[0][1]["keys"])
    # Plugin fields land in the returned and the written manifest.
    assert result.manifest["recorder/owner"] == "tests"
    assert json.loads((tmp_path / "run" / "run_manifest.json").read_text())["recorder/owner"] == "tests"

    built = recorder.calls[1][1]["manifest"]
    assert set(built) == {"trainer_variant", "objective", "diagnostics", "checksum"}
    assert built["checksum"] == result.manifest["pipeline_checksum"]
    assert pipeline_checksum({k: v for k, v in built.items() if k != "checksum"}) == built["checksum"]
    with pytest.raises(TypeError):
        built["checksum"] = "changed"  # read-only

    starts = [args for name, args in recorder.calls if name == "step_start"]
    ends = [args for name, args in recorder.calls if name == "step_end"]
    assert starts == [{"step": 0, "kind": "A"}, {"step": 1, "kind": "A"}]
    assert [e["step"] for e in ends] == [0, 1]
    for end, step_result in zip(ends, result.history, strict=True):
        assert end["metrics"] == step_result.metrics


def test_a_plugin_may_not_overwrite_a_manifest_field(monkeypatch, train_stage1, tmp_path):
    _with_recorder(monkeypatch, Recorder({"seed": 123}))
    with pytest.raises(PluginError, match="seed"):
        train_stage1(tmp_path / "run", "training.max_steps=1")
