"""Plugin manager, module registry and module protocol (spec 05 §5.1)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import torch

from coordexp.core.errors import PluginError
from coordexp.core.metrics import Metric
from coordexp.core.plugins.hookspecs import hookimpl
from coordexp.core.plugins.manager import (
    disabled_distributions,
    get_plugin_manager,
    normalize_distribution_name,
)
from coordexp.core.plugins.protocol import (
    API_VERSION,
    AtomTerm,
    DiagnosticModule,
    ModuleOutput,
    ObjectiveModule,
    Strategy,
    variant_channels,
)
from coordexp.core.plugins.registry import KIND_GROUPS, ModuleRegistry, UnknownModuleError, check_module_class


@attrs.frozen
class FakeDist:
    name: str
    version: str = "1.0"


@attrs.frozen
class FakeEntryPoint:
    """Duck-typed importlib.metadata.EntryPoint whose load() returns/raises a given object."""

    name: str
    group: str
    dist: FakeDist | None
    target: Any = None
    error: BaseException | None = None
    loads: list = attrs.field(factory=list, eq=False)

    @property
    def value(self) -> str:
        return f"fake_{self.dist.name if self.dist else 'x'}:{self.name}"

    def load(self) -> Any:
        self.loads.append(self.name)
        if self.error is not None:
            raise self.error
        return self.target


def source_of(*eps: FakeEntryPoint) -> Callable[[str], list[FakeEntryPoint]]:
    return lambda group: [ep for ep in eps if ep.group == group]


def objective_ep(
    cls: type, dist: str = "coordexp-losses", name: str | None = None, **kw: Any
) -> FakeEntryPoint:
    return FakeEntryPoint(name or cls.name, KIND_GROUPS["objective"], FakeDist(dist), cls, **kw)


class Good(ObjectiveModule):
    name = "good"
    atoms = ("good_atom",)

    @attrs.frozen
    class Config:
        good_weight: float = 1.0
        top_k: int = 5

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"good_atom": cfg.good_weight}

    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        return {}

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        return ModuleOutput()


class Other(Good):
    name = "other"
    atoms = ("other_atom",)

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"other_atom": 1.0}


class Diag(DiagnosticModule):
    name = "diag"

    @attrs.frozen
    class Config:
        acc_top_k: int = 5

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        return ModuleOutput()


def _variant(base: type, **attributes: Any) -> type:
    return type(f"Variant_{base.__name__}", (base,), attributes)


# ------------------------------------------------------------------ registry


def test_listing_imports_nothing_and_load_imports_only_the_entry() -> None:
    good, other = objective_ep(Good), objective_ep(Other)
    broken = objective_ep(Good, name="broken", error=ImportError("no module named torch_extra"))
    registry = ModuleRegistry(source_of(good, other, broken), environ={})
    names = [(e.kind, e.name, e.distribution, e.version) for e in registry.list_entries()]
    assert names == [
        ("objective", "broken", "coordexp-losses", "1.0"),
        ("objective", "good", "coordexp-losses", "1.0"),
        ("objective", "other", "coordexp-losses", "1.0"),
    ]
    assert good.loads == [] and broken.loads == []
    assert registry.load("objective", "good") is Good
    assert registry.load("objective", "good") is Good
    assert good.loads == ["good"] and other.loads == [] and broken.loads == []


def test_broken_entry_fails_only_when_referenced() -> None:
    broken = objective_ep(Good, name="broken", error=ImportError("no module named torch_extra"))
    registry = ModuleRegistry(source_of(objective_ep(Good), broken), environ={})
    assert registry.load("objective", "good") is Good
    with pytest.raises(
        PluginError, match="broken.*coordexp-losses 1.0.*ImportError: no module named torch_extra"
    ):
        registry.load("objective", "broken")


def test_missing_name_lists_available_names_and_distributions() -> None:
    registry = ModuleRegistry(
        source_of(objective_ep(Good), objective_ep(Other, dist="third-party", name="other")), environ={}
    )
    with pytest.raises(UnknownModuleError) as info:
        registry.load("objective", "goood")
    message = str(info.value)
    assert "good (coordexp-losses 1.0)" in message and "other (third-party 1.0)" in message
    assert "did you mean 'good'" in message
    assert isinstance(info.value, PluginError)
    with pytest.raises(UnknownModuleError, match="none installed"):
        registry.load("diagnostic", "diag")


def test_name_registered_in_another_group_is_hinted() -> None:
    diag = FakeEntryPoint("diag", KIND_GROUPS["diagnostic"], FakeDist("coordexp-losses"), Diag)
    registry = ModuleRegistry(source_of(diag), environ={})
    with pytest.raises(UnknownModuleError, match="'diag' is registered as a diagnostic, not as an objective"):
        registry.load("objective", "diag")


def test_duplicate_names_across_distributions_name_both_providers() -> None:
    registry = ModuleRegistry(source_of(objective_ep(Good), objective_ep(Good, dist="my-fork")), environ={})
    with pytest.raises(PluginError, match="coordexp-losses 1.0.*and my-fork 1.0"):
        registry.load("objective", "good")


def test_same_distribution_seen_twice_is_not_a_duplicate() -> None:
    ep = objective_ep(Good)
    registry = ModuleRegistry(lambda group: [ep, ep] if group == KIND_GROUPS["objective"] else [], environ={})
    assert registry.load("objective", "good") is Good


def test_disabled_distributions_are_invisible() -> None:
    source = source_of(
        objective_ep(Good), objective_ep(Good, dist="My_Fork"), objective_ep(Other, dist="my-fork")
    )
    registry = ModuleRegistry(source, environ={"COORDEXP_DISABLE_PLUGINS": " my.fork , unrelated"})
    assert registry.load("objective", "good") is Good  # the duplicate is resolved by disabling one
    with pytest.raises(
        UnknownModuleError, match="provided by my-fork 1.0, disabled by COORDEXP_DISABLE_PLUGINS"
    ):
        registry.load("objective", "other")
    assert disabled_distributions({"COORDEXP_DISABLE_PLUGINS": "A_b,,c.D"}) == {"a-b", "c-d"}
    assert normalize_distribution_name("Coordexp__Losses") == "coordexp-losses"


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        (_variant(Good, api_version=2), "api_version 2 is not supported.*API v1"),
        (_variant(Good, api_version=True), "api_version True"),
        (_variant(Good, name="renamed"), "entry-point name and the class attribute"),
        (_variant(Good, kind="diagnostic"), "expected 'objective'"),
        (_variant(Good, atoms=()), "non-empty tuple"),
        (_variant(Good, atoms=("a", "a")), "unique"),
        (_variant(Good, atoms=["good_atom"]), "tuple"),
        (_variant(Good, atoms=("a/b",)), "without '/'"),
        (
            _variant(
                Good, Config=attrs.define(type("Cfg", (), {"__annotations__": {"x": "float"}, "x": 1.0}))
            ),
            "frozen",
        ),
        (
            _variant(Good, Config=attrs.frozen(type("Cfg", (), {"__annotations__": {"x": "float"}}))),
            "from defaults",
        ),
        (_variant(Good, Config=dict), "attrs class"),
        (
            _variant(
                Good, Config=attrs.frozen(type("Cfg", (), {"__annotations__": {"x": "Missing"}, "x": 1}))
            ),
            "resolved",
        ),
        (_variant(Good, compute=None), "missing protocol methods"),
    ],
)
def test_protocol_violations_are_plugin_errors(cls: type, match: str) -> None:
    registry = ModuleRegistry(source_of(objective_ep(cls, name="good")), environ={})
    with pytest.raises(PluginError, match=match):
        registry.load("objective", "good")


def test_abstract_and_non_class_entries_are_rejected() -> None:
    class Abstract(ObjectiveModule):
        name = "abstract"
        atoms = ("x",)
        Config = Good.Config

    with pytest.raises(PluginError, match="abstract methods not implemented"):
        check_module_class(Abstract, "objective", "abstract", "dist 1")
    with pytest.raises(PluginError, match="must name a class"):
        check_module_class(Good(), "objective", "good", "dist 1")
    with pytest.raises(PluginError, match="diagnostics produce no atoms"):
        check_module_class(_variant(Diag, atoms=("x",)), "diagnostic", "diag", "dist 1")


def test_prompt_and_backend_kinds_check_the_generic_attributes() -> None:
    ok = type("HfBackend", (), {"name": "hf", "kind": "rollout_backend", "api_version": API_VERSION})
    eps = [
        FakeEntryPoint("hf", KIND_GROUPS["rollout_backend"], FakeDist("coordexp-rollout"), ok),
        FakeEntryPoint("bad", KIND_GROUPS["prompt"], FakeDist("coordexp-train"), SimpleNamespace),
    ]
    registry = ModuleRegistry(source_of(*eps), environ={})
    assert registry.load("rollout_backend", "hf") is ok
    with pytest.raises(PluginError, match="name=None"):
        registry.load("prompt", "bad")
    with pytest.raises(PluginError, match="unknown module kind"):
        registry.load("loss", "hf")


def test_describe_all_lists_schema_status_and_plugins() -> None:
    class Lifecycle:
        @hookimpl
        def coordexp_step_end(self, step: int, metrics: Any) -> None:
            return None

    plugin_ep = FakeEntryPoint("lifecycle", "coordexp", FakeDist("coordexp-extras", "0.3"), Lifecycle())
    source = source_of(
        objective_ep(Good),
        objective_ep(Other, dist="disabled-dist"),
        objective_ep(Good, name="broken", error=RuntimeError("boom")),
        FakeEntryPoint("diag", KIND_GROUPS["diagnostic"], FakeDist("coordexp-losses"), Diag),
        plugin_ep,
    )
    environ = {"COORDEXP_DISABLE_PLUGINS": "disabled-dist"}
    manager = get_plugin_manager(source=source, environ=environ)
    listing = ModuleRegistry(source, plugin_manager=manager, environ=environ).describe_all()
    json.dumps(listing)  # the CLI prints it as JSON
    by_name = {item["name"]: item for item in listing}
    assert by_name["good"]["status"] == "ok"
    assert by_name["good"]["atoms"] == ["good_atom"]
    assert by_name["good"]["config"] == [
        {"key": "good_weight", "type": "float", "default": 1.0},
        {"key": "top_k", "type": "int", "default": 5},
    ]
    assert by_name["good"]["distribution"] == "coordexp-losses" and by_name["good"]["api_version"] == 1
    assert by_name["broken"]["status"] == "broken" and "RuntimeError: boom" in by_name["broken"]["error"]
    assert by_name["other"]["status"] == "disabled"
    assert by_name["diag"]["config"] == [{"key": "acc_top_k", "type": "int", "default": 5}]
    assert by_name["lifecycle"] == {
        "name": "lifecycle",
        "kind": "plugin",
        "distribution": "coordexp-extras",
        "version": "0.3",
        "status": "ok",
        "hooks": ["coordexp_step_end"],
    }


def test_default_source_reads_installed_distributions() -> None:
    registry = ModuleRegistry()
    for entry in registry.list_entries():
        assert entry.kind in KIND_GROUPS and entry.distribution


# ------------------------------------------------------------------ plugin manager and hooks


class Registering:
    @hookimpl
    def coordexp_register(self, register: Callable[[type], None]) -> None:
        register(Other)
        register(object)  # no name/kind: reported as invalid, never raises


def test_register_hook_contributes_classes_with_their_distribution() -> None:
    source = source_of(FakeEntryPoint("extra", "coordexp", FakeDist("coordexp-extra", "2.0"), Registering()))
    manager = get_plugin_manager(source=source, environ={})
    registry = ModuleRegistry(source_of(objective_ep(Good)), plugin_manager=manager, environ={})
    assert registry.load("objective", "other") is Other
    entry = registry.entry("objective", "other")
    assert (entry.distribution, entry.version) == ("coordexp-extra", "2.0")
    assert entry.value.startswith("coordexp_register:")
    invalid = [item for item in registry.describe_all() if item["kind"] == "invalid"]
    assert len(invalid) == 1 and invalid[0]["distribution"] == "coordexp-extra"


def test_register_hook_duplicates_an_entry_point_name() -> None:
    source = source_of(FakeEntryPoint("extra", "coordexp", FakeDist("coordexp-extra"), Registering()))
    manager = get_plugin_manager(source=source, environ={})
    registry = ModuleRegistry(source_of(objective_ep(Other)), plugin_manager=manager, environ={})
    with pytest.raises(PluginError, match="coordexp-losses 1.0.*and coordexp-extra 1.0"):
        registry.load("objective", "other")


def test_plugin_manager_honors_disabled_distributions_and_reports_broken_plugins() -> None:
    broken = FakeEntryPoint("broken", "coordexp", FakeDist("broken-dist"), error=ImportError("missing dep"))
    with pytest.raises(
        PluginError, match="broken-dist.*ImportError: missing dep.*COORDEXP_DISABLE_PLUGINS=broken-dist"
    ):
        get_plugin_manager(source=source_of(broken), environ={})
    manager = get_plugin_manager(
        source=source_of(broken), environ={"COORDEXP_DISABLE_PLUGINS": "broken-dist"}
    )
    assert manager.get_plugins() == set()


def test_plugin_with_an_unknown_hook_is_rejected() -> None:
    class Typo:
        @hookimpl
        def coordexp_stepend(self, step: int) -> None:
            return None

    with pytest.raises(PluginError, match="unknown hook"):
        get_plugin_manager(
            source=source_of(FakeEntryPoint("typo", "coordexp", FakeDist("t"), Typo())), environ={}
        )


def test_trace_hooks_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[int, str]] = []

    class Recorder:
        @hookimpl
        def coordexp_step_start(self, step: int, kind: str) -> None:
            seen.append((step, kind))

    source = source_of(FakeEntryPoint("rec", "coordexp", FakeDist("rec"), Recorder()))
    quiet = get_plugin_manager(source=source, environ={})
    quiet.hook.coordexp_step_start(step=0, kind="A")
    assert capsys.readouterr().err == ""
    traced = get_plugin_manager(source=source, environ={"COORDEXP_TRACE_HOOKS": "1"})
    traced.hook.coordexp_step_start(step=1, kind="B")
    assert "coordexp_step_start" in capsys.readouterr().err
    assert seen == [(0, "A"), (1, "B")]


def test_run_manifest_hook_may_only_add_fields() -> None:
    class Adds:
        @hookimpl
        def coordexp_run_manifest(self, manifest: Any) -> dict:
            with pytest.raises(TypeError):
                manifest["run_name"] = "changed"  # read-only view
            return {"extra/field": manifest["run_name"] + "!"}

    class Overwrites:
        @hookimpl
        def coordexp_run_manifest(self, manifest: Any) -> dict:
            return {"run_name": "mine"}

    adds = FakeEntryPoint("adds", "coordexp", FakeDist("a"), Adds())
    manager = get_plugin_manager(source=source_of(adds), environ={})
    assert manager.run_manifest_fields({"run_name": "r"}) == {"extra/field": "r!"}
    both = get_plugin_manager(
        source=source_of(adds, FakeEntryPoint("adds2", "coordexp", FakeDist("b"), Adds())), environ={}
    )
    with pytest.raises(PluginError, match="added by both plugins"):
        both.run_manifest_fields({"run_name": "r"})
    over = get_plugin_manager(
        source=source_of(FakeEntryPoint("over", "coordexp", FakeDist("o"), Overwrites())), environ={}
    )
    with pytest.raises(PluginError, match="may only add fields"):
        over.run_manifest_fields({"run_name": "r"})


# ------------------------------------------------------------------ protocol value objects


def test_strategy_hash_is_canonical_and_sensitive() -> None:
    base = Strategy(trainer_variant="stage2_two_channel", packing="dynamic", max_length=4096, b_ratio=0.5)
    same = Strategy(trainer_variant="stage2_two_channel", packing="dynamic", max_length=4096, b_ratio=0.5)
    assert base.sha256() == same.sha256() and len(base.sha256()) == 64
    assert (
        Strategy(trainer_variant="stage2_two_channel", packing="dynamic", max_length=4096, b_ratio=1).b_ratio
        == 1.0
    )
    for change in (
        {"n_softctx_iter": 2},
        {"coord_decode_mode": "st"},
        {"b_ratio": 0.25},
        {"max_length": 2048},
    ):
        assert attrs.evolve(base, **change).sha256() != base.sha256()
    assert base.channels == ("A", "B")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"trainer_variant": "stage2_ab_training", "packing": "none", "max_length": 8},
        {"trainer_variant": "stage1", "packing": "sideways", "max_length": 8},
        {"trainer_variant": "stage1", "packing": "none", "max_length": 0},
        {"trainer_variant": "stage1", "packing": "none", "max_length": 8, "b_ratio": 0.5},
        {"trainer_variant": "stage1", "packing": "none", "max_length": 8, "n_softctx_iter": 2},
        {"trainer_variant": "stage2_two_channel", "packing": "none", "max_length": 8},
        {"trainer_variant": "stage2_two_channel", "packing": "none", "max_length": 8, "b_ratio": 1.5},
        {"trainer_variant": "stage2_two_channel", "packing": "none", "max_length": 8, "b_ratio": True},
        {"trainer_variant": "stage1", "packing": "none", "max_length": 8, "softctx_temperature": "1"},
        {"trainer_variant": "stage1", "packing": "none", "max_length": 8, "softctx_temperature": 0.0},
        {"trainer_variant": "stage1", "packing": "none", "max_length": 8, "softctx_grad_mode": "full"},
        {"trainer_variant": "stage1", "packing": "none", "max_length": 8, "coord_decode_mode": "st"},
    ],
)
def test_strategy_rejects_invalid_values(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        Strategy(**kwargs)


def test_variant_channel_sets() -> None:
    assert variant_channels("stage1") == ("A",)
    assert variant_channels("stage2_two_channel") == ("A", "B")
    assert variant_channels("stage2_rollout_aligned") == ("B",)
    with pytest.raises(ValueError, match="unknown trainer variant"):
        variant_channels("rollout_matching_sft")


def test_module_output_normalizes_atoms_and_validates_terms() -> None:
    num = torch.tensor(2.0, requires_grad=True)
    term = AtomTerm("gt", num, "m/gt/rows", 3)
    assert term.den == 3.0
    out = ModuleOutput(
        {"a": term, "b": [term, AtomTerm("self_context", num, "m/sc/rows", 1.0)]}, [Metric.sum("m_total", 1)]
    )
    assert out.atoms["a"] == (term,) and len(out.atoms["b"]) == 2 and isinstance(out.metrics, tuple)
    with pytest.raises(ValueError, match="two terms for one context"):
        ModuleOutput({"a": [term, term]})
    with pytest.raises(TypeError, match="0-dim"):
        AtomTerm("gt", torch.ones(2), "g", 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        AtomTerm("gt", num, "g", -1.0)
    with pytest.raises(TypeError, match="Metric"):
        ModuleOutput({}, ["loss/x"])
