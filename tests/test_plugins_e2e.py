"""The plugin system end to end (spec 05 §5.1): a third-party distribution is pip-installed, found
through its `coordexp.objectives` entry point only, referenced from a pipeline mapping, run on a
context through the real runner, listed by `coordexp plugins`, disabled by environment, and
uninstalled again. Unknown names fail listing what is available.

The example plugin (plugins/coordexp-focal-coord) is installed with
`pip install --no-deps --target <tmp>` (a hatchling build in pip's isolated build environment),
and the target directory is put on `sys.path` for the duration of this module only: the shared
virtual environment is never modified, so tests running in parallel never see the plugin.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import torch

from coordexp.core.errors import ConfigError
from coordexp.core.metrics import StepAggregator
from coordexp.core.pipeline.runner import PipelineRunner
from coordexp.core.pipeline.spec import resolve_pipeline
from coordexp.core.plugins.protocol import Strategy
from coordexp.core.plugins.registry import ModuleRegistry
from coordexp.testing.factory import make_context_set
from coordexp.train.cli import cmd_plugins

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = REPO / "plugins" / "coordexp-focal-coord"
PACKAGE = "coordexp_focal_coord"
STAGE1 = Strategy(trainer_variant="stage1", packing="none", max_length=2048)


def resolve(raw, registry: ModuleRegistry | None = None):
    return resolve_pipeline(
        raw,
        variant="stage1",
        path="stage1.pipeline",
        strategy=STAGE1,
        registry=registry or ModuleRegistry(environ={}),
    )


def _forget_package() -> dict[str, object]:
    return {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == PACKAGE}


@attrs.define
class InstalledPlugin:
    """A plugin installed into ``target`` and visible on ``sys.path`` until :meth:`uninstall`."""

    target: Path
    saved_modules: dict[str, object]
    installed: bool = True

    def uninstall(self) -> None:
        if not self.installed:
            return
        self.installed = False
        if str(self.target) in sys.path:
            sys.path.remove(str(self.target))
        _forget_package()
        sys.modules.update(self.saved_modules)
        shutil.rmtree(self.target)
        importlib.invalidate_caches()


@pytest.fixture(scope="module")
def focal_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledPlugin]:
    work = tmp_path_factory.mktemp("focal_plugin")
    source = work / "source"
    shutil.copytree(
        PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "build", "dist")
    )
    target = work / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-input",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"pip install of {PLUGIN_SOURCE.name} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    plugin = InstalledPlugin(target=target, saved_modules=_forget_package())
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield plugin
    finally:
        plugin.uninstall()


def test_an_unknown_module_fails_listing_the_available_names():
    raw = {"objective": [{"name": "token_ce"}, {"name": "coord_focal"}]}
    with pytest.raises(ConfigError) as info:
        resolve(raw)
    assert info.value.path == "stage1.pipeline.objective[1].name"
    message = info.value.message
    assert "no objective named 'coord_focal'" in message
    for name in ("bbox_geo", "coord_reg", "token_ce"):
        assert f"{name} (coordexp-losses 0.1.0)" in message


def test_the_plugin_is_discovered_through_its_entry_point(focal_plugin):
    registry = ModuleRegistry(environ={})
    entry = registry.entry("objective", "coord_focal")
    assert (entry.distribution, entry.version) == ("coordexp-focal-coord", "0.1.0")
    assert entry.value == "coordexp_focal_coord.objective:CoordFocal"
    cls = registry.load("objective", "coord_focal")
    assert Path(sys.modules[cls.__module__].__file__).resolve().is_relative_to(focal_plugin.target.resolve())
    assert cls.atoms == ("coord_focal",)


def test_a_pipeline_mapping_references_the_plugin_and_runs_it(focal_plugin):
    raw = {
        "objective": [
            {"name": "token_ce"},
            {"name": "coord_reg"},
            {"name": "coord_focal", "weight": 0.5, "config": {"gamma": 1.5}},
        ],
        "diagnostics": [{"name": "coord_diag"}],
    }
    resolved = resolve(raw)
    focal = resolved.objective[2]
    assert focal.entry()["config"] == {"focal_weight": 1.0, "gamma": 1.5}
    assert "coord_focal(A,w=0.5)" in resolved.describe()
    runner = PipelineRunner(resolved)
    sets = [make_context_set(seed, channel="A") for seed in (0, 1)]
    aggregator = StepAggregator(runner.step_keys("A", ["gt"]))
    denominators = runner.denominators(sets)
    for ctxset in sets:
        loss, metrics = runner.run(ctxset, denominators)
        loss.backward()
        aggregator.add(metrics)
    reduced = aggregator.reduce()
    atoms = {k: v for k, v in reduced.items() if k.startswith("loss/") and k != "loss/total"}
    assert reduced["loss/total"] == pytest.approx(math.fsum(atoms.values()), rel=1e-12)
    assert 0.0 < reduced["coord_focal/gt/modulation_mean"] <= 1.0
    # The logged atom is W_m · mean focal CE over both micro-batches, computed here by hand.
    total, rows = 0.0, 0
    for ctxset in sets:
        ctx = ctxset.coord_context
        for row in torch.nonzero(ctx.coord_rows).reshape(-1).tolist():
            p = torch.softmax(ctx.logits[row, ctx.coord_ids].detach().double(), 0)[int(ctx.coord_target[row])]
            total += float(-((1 - p) ** 1.5) * torch.log(p))
            rows += 1
    assert reduced["loss/gt/coord_focal"] == pytest.approx(0.5 * total / rows, rel=1e-5)


def test_coordexp_plugins_lists_the_plugin_with_its_schema(focal_plugin, capsys):
    parser = argparse.ArgumentParser(prog="coordexp")
    cmd_plugins.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plugins", "--json"])
    args.handler(args)
    listing = json.loads(capsys.readouterr().out)
    (focal,) = [item for item in listing if item.get("name") == "coord_focal"]
    assert focal["kind"] == "objective" and focal["status"] == "ok"
    assert (focal["distribution"], focal["version"]) == ("coordexp-focal-coord", "0.1.0")
    assert focal["config"] == [
        {"default": 1.0, "key": "focal_weight", "type": "float"},
        {"default": 2.0, "key": "gamma", "type": "float"},
    ]
    args = parser.parse_args(["plugins"])
    args.handler(args)
    table = capsys.readouterr().out
    assert "coord_focal" in table and "coordexp-focal-coord 0.1.0" in table and "gamma: 2.0 (float)" in table


def test_a_disabled_distribution_cannot_be_referenced(focal_plugin):
    registry = ModuleRegistry(environ={"COORDEXP_DISABLE_PLUGINS": "coordexp_focal_coord"})
    with pytest.raises(ConfigError) as info:
        resolve({"objective": [{"name": "token_ce"}, {"name": "coord_focal"}]}, registry)
    assert "disabled by COORDEXP_DISABLE_PLUGINS" in info.value.message
    statuses = {item["name"]: item["status"] for item in registry.describe_all() if "name" in item}
    assert statuses["coord_focal"] == "disabled"


def test_a_typo_suggests_the_installed_name(focal_plugin):
    with pytest.raises(ConfigError) as info:
        resolve({"objective": [{"name": "token_ce"}, {"name": "coord_focl"}]})
    assert "coord_focal (coordexp-focal-coord 0.1.0)" in info.value.message
    assert "did you mean 'coord_focal'?" in info.value.message


def test_a_broken_unreferenced_entry_point_is_listed_but_never_blocks_training(
    focal_plugin, tmp_path, monkeypatch, capsys
):
    site = tmp_path / "broken_site"
    dist_info = site / "broken_objective-0.0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-objective\nVersion: 0.0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[coordexp.objectives]\nbroken_thing = broken_objective_missing.module:Thing\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    registry = ModuleRegistry(environ={})
    resolve({"objective": [{"name": "token_ce"}, {"name": "coord_focal"}]}, registry)
    (broken,) = [item for item in registry.describe_all() if item.get("name") == "broken_thing"]
    assert broken["status"] == "broken" and "No module named 'broken_objective_missing'" in broken["error"]
    parser = argparse.ArgumentParser(prog="coordexp")
    cmd_plugins.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plugins"])
    assert args.handler(args) == 1
    assert "error: objective 'broken_thing' from broken-objective 0.0.1" in capsys.readouterr().out


def test_after_uninstalling_the_name_is_gone(focal_plugin):
    focal_plugin.uninstall()
    assert not focal_plugin.target.exists()
    with pytest.raises(ConfigError) as info:
        resolve({"objective": [{"name": "token_ce"}, {"name": "coord_focal"}]})
    assert "no objective named 'coord_focal'" in info.value.message
    assert "coordexp-focal-coord" not in info.value.message
