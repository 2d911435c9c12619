"""The loader end to end: resolved config, canonical hash, Strategy, pipeline wiring, to_yaml,
preflight (G9) and profile families."""

from __future__ import annotations

import functools
import io
import json
from typing import Any, Optional

import attrs
import pytest

from coordexp.core.errors import ConfigError
from coordexp.core.pipeline.checksum import canonical
from coordexp.core.plugins.protocol import DiagnosticModule, ModuleOutput, ObjectiveModule
from coordexp.core.plugins.registry import KIND_GROUPS, ModuleRegistry
from coordexp.testing.golden import GOLDEN_CHECKSUMS as GOLDEN
from coordexp.train.config import preflight as preflight_module
from coordexp.train.config.loader import load_config, to_yaml, validate_config
from coordexp.train.config.minimal import minimal_config
from coordexp.train.config.preflight import cmd_preflight, preflight
from coordexp.train.config.profiles import validate_profiles
from coordexp.train.config.yaml_io import dump_yaml

# ---------------------------------------------------------------------------------------------
# minimal stand-ins for the built-in modules (the pipeline layer only validates and hashes them)


class _Objective(ObjectiveModule):
    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        return {}

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        return ModuleOutput()


class StubTokenCE(_Objective):
    name = "token_ce"
    atoms = ("struct_ce", "desc_ce")

    @attrs.frozen
    class Config:
        desc_ce_weight: float = 1.0
        rollout_fn_desc_weight: Optional[float] = None
        self_context_struct_weight: float = 0.0

        def resolved(self) -> StubTokenCE.Config:
            if self.rollout_fn_desc_weight is not None:
                return self
            return attrs.evolve(self, rollout_fn_desc_weight=self.desc_ce_weight)

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"struct_ce": 1.0, "desc_ce": cfg.desc_ce_weight}


class StubBBoxGeo(_Objective):
    name = "bbox_geo"
    atoms = ("bbox_smoothl1", "bbox_ciou")

    @attrs.frozen
    class Config:
        smoothl1_weight: float = 1.0
        ciou_weight: float = 1.0

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"bbox_smoothl1": cfg.smoothl1_weight, "bbox_ciou": cfg.ciou_weight}


class StubCoordReg(_Objective):
    name = "coord_reg"
    atoms = ("coord_token_ce", "coord_soft_ce", "coord_w1", "coord_gate", "text_gate")

    @attrs.frozen
    class Config:
        coord_ce_weight: float = 0.0
        soft_ce_weight: float = 1.0
        w1_weight: float = 1.0
        coord_gate_weight: float = 1.0
        text_gate_weight: float = 0.0

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {
            "coord_token_ce": cfg.coord_ce_weight,
            "coord_soft_ce": cfg.soft_ce_weight,
            "coord_w1": cfg.w1_weight,
            "coord_gate": cfg.coord_gate_weight,
            "text_gate": cfg.text_gate_weight,
        }


class StubCoordDiag(DiagnosticModule):
    name = "coord_diag"

    @attrs.frozen
    class Config:
        acc_top_k: int = 5

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        return ModuleOutput()


@attrs.frozen
class _Dist:
    name: str = "stub-losses"
    version: str = "0.0.1"


@attrs.frozen
class _EntryPoint:
    name: str
    group: str
    target: Any
    dist: _Dist = _Dist()

    @property
    def value(self) -> str:
        return f"stub:{self.name}"

    def load(self) -> Any:
        return self.target


_STUBS = [
    _EntryPoint("token_ce", KIND_GROUPS["objective"], StubTokenCE),
    _EntryPoint("bbox_geo", KIND_GROUPS["objective"], StubBBoxGeo),
    _EntryPoint("coord_reg", KIND_GROUPS["objective"], StubCoordReg),
    _EntryPoint("coord_diag", KIND_GROUPS["diagnostic"], StubCoordDiag),
]


def stub_registry() -> ModuleRegistry:
    return ModuleRegistry(lambda group: [ep for ep in _STUBS if ep.group == group], environ={})


@pytest.fixture
def stubbed_loader(monkeypatch):
    """Make the default-registry entry points (preflight, profiles) resolve against the stubs."""
    loader = functools.partial(load_config, registry=stub_registry())
    monkeypatch.setattr(preflight_module, "load_config", loader)
    monkeypatch.setattr("coordexp.train.config.profiles.load_config", loader)


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# resolved config


def test_resolved_config_hash_ignores_key_order_and_tracks_values(tmp_path):
    data = minimal_config("stage2_two_channel", backend="vllm")
    reordered = {key: data[key] for key in reversed(list(data))}
    reordered["training"] = {key: data["training"][key] for key in reversed(list(data["training"]))}
    first = validate_config(_write(tmp_path / "a.yaml", data))
    second = validate_config(_write(tmp_path / "b.yaml", reordered))
    assert first.canonical_json == second.canonical_json and first.sha256 == second.sha256
    assert json.loads(first.canonical_json)["training"]["seed"] == 17
    changed = validate_config(tmp_path / "a.yaml", ["training.seed=18"])
    assert changed.sha256 != first.sha256
    # spelling a default out explicitly does not change the resolved config
    explicit = validate_config(tmp_path / "a.yaml", ["rollout_matching.matching.fp_cost=1"])
    assert explicit.sha256 == first.sha256


def test_resolved_config_omits_inapplicable_keys(tmp_path):
    two = validate_config(_write(tmp_path / "two.yaml", minimal_config("stage2_two_channel"))).plain
    assert "packing" not in two["training"] and two["training"]["dynamic_packing"] is True
    assert not {"pipeline", "coord_decode_mode", "poly_ot"} & set(two["rollout_matching"])
    assert not {"coord_ctx_embed_mode", "softctx_grad_mode", "softctx_temperature"} & set(two["stage2_ab"])
    one = validate_config(_write(tmp_path / "one.yaml", minimal_config("stage1"))).plain
    assert one["training"]["packing"] is True and "dynamic_packing" not in one["training"]
    assert set(one) == {"model", "template", "training", "custom", "stage1"}


@pytest.mark.parametrize(
    "variant, backend",
    [("stage1", "hf"), ("stage2_two_channel", "vllm"), ("stage2_rollout_aligned", "hf")],
)
def test_to_yaml_reloads_to_the_same_config(tmp_path, variant, backend):
    data = minimal_config(variant, backend=backend)
    if variant == "stage2_two_channel":
        data["stage2_ab"].update({"n_softctx_iter": 2, "coord_ctx_embed_mode": "st"})
    first = validate_config(_write(tmp_path / "leaf.yaml", data))
    shown = tmp_path / "shown.yaml"
    shown.write_text(to_yaml(first), encoding="utf-8")
    again = validate_config(shown)
    assert again.sha256 == first.sha256
    assert again.config == first.config


def test_validated_config_records_sources(tmp_path):
    _write(tmp_path / "base.yaml", {"template": {"max_length": 1024}})
    data = minimal_config("stage1")
    data["extends"] = "base.yaml"
    del data["template"]
    leaf = _write(tmp_path / "leaf.yaml", data)
    validated = validate_config(leaf)
    assert validated.source_path == str(leaf)
    assert validated.files == (str(tmp_path / "base.yaml"), str(leaf))
    assert validated.config.template.max_length == 1024
    assert str(validated.provenance.author(("template", "max_length"))).startswith(str(tmp_path / "base.yaml"))


# ---------------------------------------------------------------------------------------------
# Strategy and pipeline wiring (stub modules)


def test_strategy_per_variant(tmp_path):
    two = minimal_config("stage2_two_channel")
    two["stage2_ab"].update(
        {"n_softctx_iter": 3, "softctx_grad_mode": "unroll", "softctx_temperature": 0.5,
         "coord_ctx_embed_mode": "hard", "coord_decode_mode": "st"}
    )
    two["training"]["dynamic_packing"] = False
    strategy = load_config(_write(tmp_path / "two.yaml", two), registry=stub_registry()).strategy
    assert attrs.asdict(strategy) == {
        "trainer_variant": "stage2_two_channel",
        "packing": "none",
        "max_length": 512,
        "n_softctx_iter": 3,
        "softctx_grad_mode": "unroll",
        "softctx_temperature": 0.5,
        "coord_ctx_embed_mode": "hard",
        "coord_decode_mode": "st",
        "b_ratio": 0.5,
    }
    aligned = minimal_config("stage2_rollout_aligned")
    aligned["rollout_matching"]["coord_decode_mode"] = "st"
    strategy = load_config(_write(tmp_path / "al.yaml", aligned), registry=stub_registry()).strategy
    assert (strategy.packing, strategy.coord_decode_mode, strategy.b_ratio) == ("dynamic", "st", None)
    one = load_config(_write(tmp_path / "one.yaml", minimal_config("stage1")), registry=stub_registry())
    assert (one.strategy.packing, one.strategy.n_softctx_iter) == ("static", 1)


def test_default_pipeline_gets_authored_flat_knobs(tmp_path):
    data = minimal_config("stage2_two_channel")
    data["stage2_ab"].update({"desc_ce_weight": 0.5, "bbox_ciou_weight": 0.0})
    resolved = load_config(_write(tmp_path / "leaf.yaml", data), registry=stub_registry())
    entries = {entry.name: entry.entry() for entry in resolved.pipeline.objective}
    assert list(entries) == ["token_ce", "bbox_geo", "coord_reg"]
    assert entries["token_ce"]["config"]["desc_ce_weight"] == 0.5
    assert entries["token_ce"]["config"]["rollout_fn_desc_weight"] == 0.5
    assert entries["bbox_geo"]["config"]["ciou_weight"] == 0.0
    assert resolved.pipeline.is_default and resolved.pipeline.path == "stage2_ab.pipeline"


def test_authored_pipeline_is_resolved_for_each_variant(tmp_path):
    pipeline = {"objective": [{"name": "token_ce", "config": {"desc_ce_weight": 0.25}}, {"name": "coord_reg"}]}
    for variant, section in (
        ("stage1", "stage1"),
        ("stage2_two_channel", "stage2_ab"),
        ("stage2_rollout_aligned", "rollout_matching"),
    ):
        data = minimal_config(variant)
        data.setdefault(section, {})["pipeline"] = pipeline
        resolved = load_config(_write(tmp_path / f"{variant}.yaml", data), registry=stub_registry())
        assert resolved.pipeline.path == f"{section}.pipeline"
        assert not resolved.pipeline.is_default
        assert [entry.name for entry in resolved.pipeline.objective] == ["token_ce", "coord_reg"]


def test_pipeline_errors_carry_file_and_line(tmp_path):
    data = minimal_config("stage1")
    data["stage1"] = {"pipeline": {"objective": [{"name": "token_ce", "confg": {}}]}}
    leaf = _write(tmp_path / "leaf.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_config(leaf, registry=stub_registry())
    assert info.value.path == "stage1.pipeline.objective[0].confg"
    assert f"(at {leaf}:" in info.value.message


# ---------------------------------------------------------------------------------------------
# G9: preflight


@pytest.mark.parametrize(
    "variant, backend, expected",
    [
        (
            "stage2_rollout_aligned",
            "vllm",
            '{"rollout_backend":"vllm","server_base_urls":["http://127.0.0.1:8000"],"vllm_mode":"server"}',
        ),
        ("stage2_two_channel", "hf", '{"rollout_backend":"hf","server_base_urls":[],"vllm_mode":null}'),
        ("stage1", "hf", '{"rollout_backend":"hf","server_base_urls":[],"vllm_mode":null}'),
    ],
)
def test_preflight_prints_one_canonical_line(tmp_path, stubbed_loader, variant, backend, expected):
    leaf = _write(tmp_path / "leaf.yaml", minimal_config(variant, backend=backend))
    assert preflight(leaf) == expected
    out, err = io.StringIO(), io.StringIO()
    assert cmd_preflight([str(leaf)], stdout=out, stderr=err) == 0
    assert out.getvalue() == expected + "\n"
    assert err.getvalue() == ""
    payload = json.loads(out.getvalue())
    assert canonical(payload) == expected
    assert list(payload) == ["rollout_backend", "server_base_urls", "vllm_mode"]


def test_preflight_lists_every_server_in_order(tmp_path, stubbed_loader):
    data = minimal_config("stage2_two_channel", backend="vllm")
    data["rollout_matching"]["vllm"]["servers"] = [
        {"base_url": "http://10.0.0.2:8001/"},
        {"base_url": "http://10.0.0.1:8000"},
    ]
    leaf = _write(tmp_path / "leaf.yaml", data)
    payload = json.loads(preflight(leaf, ["training.seed=3"]))
    assert payload["server_base_urls"] == ["http://10.0.0.2:8001", "http://10.0.0.1:8000"]


@pytest.mark.parametrize(
    "mutate, argv_extra, needle",
    [
        (lambda d: d["rollout_matching"].update({"top_p": 0.9}), [], "rollout_matching.decoding.top_p"),
        (lambda d: d["rollout_matching"]["vllm"]["servers"].append({"base_url": "http://0.0.0.0:1"}), [], "bind-all"),
        (lambda d: d["training"].update({"sed": 1}), [], "training.sed"),
        (lambda d: None, ["training.seed=x"], "expected int"),
        (lambda d: None, ["--probe"], "unrecognized arguments"),
        (lambda d: None, ["not-an-override"], "dotted.key=value"),
    ],
)
def test_preflight_errors_exit_2_with_empty_stdout(tmp_path, stubbed_loader, mutate, argv_extra, needle):
    data = minimal_config("stage2_rollout_aligned", backend="vllm")
    mutate(data)
    leaf = _write(tmp_path / "leaf.yaml", data)
    out, err = io.StringIO(), io.StringIO()
    assert cmd_preflight([str(leaf), *argv_extra], stdout=out, stderr=err) == 2
    assert out.getvalue() == ""
    assert needle in err.getvalue()


def test_preflight_missing_file_and_no_arguments(stubbed_loader, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert cmd_preflight([str(tmp_path / "missing.yaml")], stdout=out, stderr=err) == 2
    assert out.getvalue() == "" and "not found" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert cmd_preflight([], stdout=out, stderr=err) == 2
    assert out.getvalue() == "" and "config" in err.getvalue()


def test_preflight_reports_unexpected_failures_as_exit_2(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("registry exploded")

    monkeypatch.setattr(preflight_module, "load_config", explode)
    out, err = io.StringIO(), io.StringIO()
    assert cmd_preflight([str(tmp_path / "x.yaml")], stdout=out, stderr=err) == 2
    assert out.getvalue() == "" and "RuntimeError: registry exploded" in err.getvalue()


# ---------------------------------------------------------------------------------------------
# profile families


def _family(tmp_path, leaves):
    family = tmp_path / "fam"
    base = minimal_config("stage2_two_channel", backend="vllm")
    shared = {key: base[key] for key in ("template", "custom")}
    shared["rollout_matching"] = {"vllm": base["rollout_matching"]["vllm"]}
    _write(family / "base.yaml", shared)
    for relative, b_ratio in leaves.items():
        leaf = minimal_config("stage2_two_channel", backend="vllm")
        leaf = {key: leaf[key] for key in ("model", "training", "stage2_ab", "rollout_matching")}
        leaf["rollout_matching"].pop("vllm")
        leaf["stage2_ab"]["schedule"]["b_ratio"] = b_ratio
        leaf["extends"] = "../base.yaml"
        _write(family / relative, leaf)
    return family


def test_validate_profiles_loads_every_leaf(tmp_path, stubbed_loader):
    family = _family(
        tmp_path,
        {"prod/a_only.yaml": 0.0, "prod/b_only.yaml": 1.0, "prod/ab_mixed.yaml": 0.5, "smoke/ab_mixed.yaml": 0.5},
    )
    loaded = validate_profiles(family)
    assert [name.split("fam/")[1] for name in loaded] == [
        "prod/a_only.yaml",
        "prod/ab_mixed.yaml",
        "prod/b_only.yaml",
        "smoke/ab_mixed.yaml",
    ]
    assert loaded[str(family / "prod" / "b_only.yaml")].strategy.b_ratio == 1.0


def test_validate_profiles_reports_all_failing_leaves(tmp_path, stubbed_loader):
    family = _family(tmp_path, {"prod/a_only.yaml": 0.0, "smoke/b_only.yaml": 1.0, "smoke/bad.yaml": 0.5})
    (family / "prod" / "a_only.yaml").write_text(
        (family / "prod" / "a_only.yaml").read_text().replace("b_ratio: 0.0", "b_ratio: 2.0")
    )
    text = (family / "smoke" / "bad.yaml").read_text().replace("extends: ../base.yaml", "extends: ./../base.yaml")
    (family / "smoke" / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        validate_profiles(family)
    message = info.value.message
    assert "2 failing" in message
    assert "a_only.yaml" in message and "must be in [0.0, 1.0]" in message
    assert "bad.yaml" in message and "exactly `extends: ../base.yaml`" in message


def test_validate_profiles_checks_the_layout(tmp_path):
    family = tmp_path / "fam"
    (family / "prod").mkdir(parents=True)
    (family / "prod" / "x.yml").write_text("a: 1\n")
    with pytest.raises(ConfigError) as info:
        validate_profiles(family)
    message = info.value.message
    assert "missing base.yaml" in message and "missing smoke/" in message
    assert "must end in .yaml" in message and "prod/ has no *.yaml leaves" in message


# ---------------------------------------------------------------------------------------------
# with the installed built-in modules



@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_omitted_pipeline_resolves_to_the_golden_default(tmp_path, variant):
    available = {entry.name for entry in ModuleRegistry().list_entries()}
    missing = {"token_ce", "bbox_geo", "coord_reg", "coord_diag"} - available
    if missing:
        pytest.skip(f"built-in modules not installed yet: {sorted(missing)}")
    resolved = load_config(_write(tmp_path / "leaf.yaml", minimal_config(variant)))
    assert resolved.pipeline.is_default
    assert resolved.pipeline.checksum == GOLDEN[variant]
    assert json.loads(preflight(tmp_path / "leaf.yaml"))["rollout_backend"] == "hf"
