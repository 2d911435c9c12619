"""Pipeline YAML structuring, validation rules (1)–(8), defaults and flat knobs (spec 05 §5.2–§5.6).

The fake modules below mirror the config schemas of the built-in modules (spec 05 §5.3–§5.4), so
the default manifests must reproduce the golden checksums (G2) with module classes alone.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import ConfigError, PluginError
from coordexp.core.pipeline.checksum import canonical
from coordexp.core.pipeline.manifests import FLAT_KNOB_TARGETS, PIPELINE_PATHS, default_manifest
from coordexp.core.pipeline.spec import (
    ModuleSpec,
    PipelineSpec,
    resolve_pipeline,
    structure_module_config,
    structure_pipeline_spec,
)
from coordexp.core.plugins.protocol import DiagnosticModule, ModuleOutput, ObjectiveModule, Strategy
from coordexp.core.plugins.registry import KIND_GROUPS, ModuleRegistry
from coordexp.testing.golden import GOLDEN_CHECKSUMS as GOLDEN, STAGE1_PAYLOAD

GE0 = attrs.validators.ge(0.0)


class _Inert(ObjectiveModule):
    """Objective test double: the spec layer never runs modules."""

    def denominators(self, ctxset: Any, cfg: Any) -> dict[str, float]:
        return {}

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        return ModuleOutput()


class FakeTokenCE(_Inert):
    name = "token_ce"
    atoms = ("struct_ce", "desc_ce")

    @attrs.frozen
    class Config:
        struct_ce_weight: float = attrs.field(default=1.0, validator=GE0)
        desc_ce_weight: float = attrs.field(default=1.0, validator=GE0)
        rollout_fn_desc_weight: float | None = None
        rollout_matched_prefix_struct_weight: float = attrs.field(default=1.0, validator=GE0)
        self_context_struct_weight: float = attrs.field(default=0.0, validator=GE0)

        def resolved(self) -> FakeTokenCE.Config:
            if self.rollout_fn_desc_weight is not None:
                return self
            return attrs.evolve(self, rollout_fn_desc_weight=self.desc_ce_weight)

    def validate(self, cfg: Any, variant: str, strategy: Strategy) -> None:
        if variant == "stage1" and cfg.rollout_fn_desc_weight is not None:
            raise ConfigError("rollout_fn_desc_weight", "applies to Channel B only; remove it under stage1")
        if cfg.self_context_struct_weight != 0.0 and strategy.n_softctx_iter == 1:
            raise ConfigError("self_context_struct_weight", "is inert with n_softctx_iter = 1")

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"struct_ce": cfg.struct_ce_weight, "desc_ce": cfg.desc_ce_weight}


class FakeCoordReg(_Inert):
    name = "coord_reg"
    atoms = (
        "coord_token_ce",
        "coord_soft_ce",
        "coord_w1",
        "coord_entropy",
        "coord_el1",
        "coord_ehuber",
        "coord_gate",
        "text_gate",
    )

    @attrs.frozen
    class Config:
        coord_ce_weight: float = 0.0
        soft_ce_weight: float = 1.0
        w1_weight: float = 1.0
        entropy_weight: float = 0.0
        el1_weight: float = 0.0
        ehuber_weight: float = 0.0
        coord_gate_weight: float = 1.0
        text_gate_weight: float = 0.0
        temperature: float = 1.0
        target_sigma: float = 2.0
        target_truncate: int | None = None
        huber_delta: float = 0.001

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {
            "coord_token_ce": cfg.coord_ce_weight,
            "coord_soft_ce": cfg.soft_ce_weight,
            "coord_w1": cfg.w1_weight,
            "coord_entropy": cfg.entropy_weight,
            "coord_el1": cfg.el1_weight,
            "coord_ehuber": cfg.ehuber_weight,
            "coord_gate": cfg.coord_gate_weight,
            "text_gate": cfg.text_gate_weight,
        }


class FakeBBoxGeo(_Inert):
    name = "bbox_geo"
    atoms = ("bbox_smoothl1", "bbox_ciou")

    @attrs.frozen
    class Config:
        smoothl1_weight: float = 1.0
        ciou_weight: float = 1.0
        smoothl1_beta: float = 0.02

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"bbox_smoothl1": cfg.smoothl1_weight, "bbox_ciou": cfg.ciou_weight}


class FakeCoordDiag(DiagnosticModule):
    name = "coord_diag"

    @attrs.frozen
    class Config:
        acc_top_k: int = attrs.field(default=5, validator=[attrs.validators.ge(1), attrs.validators.le(1000)])

    def compute(self, ctxset: Any, cfg: Any) -> ModuleOutput:
        return ModuleOutput()


class FakeStructDup(FakeBBoxGeo):
    name = "struct_dup"
    atoms = ("struct_ce",)

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"struct_ce": 1.0}


@attrs.frozen
class FakeDist:
    name: str
    version: str = "0.1.0"


@attrs.frozen
class FakeEntryPoint:
    name: str
    group: str
    target: Any
    dist: FakeDist = FakeDist("coordexp-losses")
    error: BaseException | None = None

    @property
    def value(self) -> str:
        return f"fake.module:{self.name}"

    def load(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.target


ENTRY_POINTS = [
    FakeEntryPoint("token_ce", KIND_GROUPS["objective"], FakeTokenCE),
    FakeEntryPoint("coord_reg", KIND_GROUPS["objective"], FakeCoordReg),
    FakeEntryPoint("bbox_geo", KIND_GROUPS["objective"], FakeBBoxGeo),
    FakeEntryPoint("struct_dup", KIND_GROUPS["objective"], FakeStructDup, FakeDist("third-party", "2.0")),
    FakeEntryPoint("broken", KIND_GROUPS["objective"], None, error=ImportError("cannot import name 'x'")),
    FakeEntryPoint("coord_diag", KIND_GROUPS["diagnostic"], FakeCoordDiag),
]


def registry() -> ModuleRegistry:
    return ModuleRegistry(lambda group: [ep for ep in ENTRY_POINTS if ep.group == group], environ={})


def strategy(variant: str, **kwargs: Any) -> Strategy:
    if variant == "stage2_two_channel":
        kwargs.setdefault("b_ratio", 0.5)
    return Strategy(trainer_variant=variant, packing="none", max_length=4096, **kwargs)


def resolve(raw: Any, variant: str = "stage2_two_channel", flat: Any = None, **strategy_kwargs: Any):
    return resolve_pipeline(
        raw,
        variant=variant,
        path=PIPELINE_PATHS[variant],
        strategy=strategy(variant, **strategy_kwargs),
        registry=registry(),
        flat_knobs=flat,
    )


def stage2(**overrides: Any) -> dict:
    raw = default_manifest("stage2_two_channel")
    raw.update(overrides)
    return raw


def config_error(raw: Any, variant: str = "stage2_two_channel", **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve(raw, variant, **kwargs)
    return info.value


# ------------------------------------------------------------------ G2 defaults and goldens


@pytest.mark.parametrize("variant", sorted(GOLDEN))
def test_g2_default_manifests_match_the_golden_checksums(variant: str) -> None:
    resolved = resolve(None, variant)
    assert resolved.is_default
    assert resolved.checksum == GOLDEN[variant]
    authored = resolve(default_manifest(variant), variant)
    assert not authored.is_default and authored.checksum == GOLDEN[variant]


def test_stage1_default_payload_is_byte_exact() -> None:
    assert canonical(resolve(None, "stage1").payload()) == STAGE1_PAYLOAD


def test_describe_is_the_init_log_module_list() -> None:
    raw = stage2(
        objective=[
            {"name": "token_ce", "weight": 0.5},
            {"name": "bbox_geo", "enabled": False},
            {"name": "coord_reg", "channels": ["B"]},
        ]
    )
    assert resolve(raw).describe() == (
        "[token_ce(A,B,w=0.5), bbox_geo(A,B,w=1.0,disabled), coord_reg(B,w=1.0), coord_diag(A,B)]"
    )


def test_resolved_entries_expose_module_and_config() -> None:
    resolved = resolve(
        stage2(objective=[{"name": "token_ce", "config": {"desc_ce_weight": 0.5}}, {"name": "coord_reg"}])
    )
    token_ce = resolved.objective[0]
    assert token_ce.module_cls is FakeTokenCE and isinstance(token_ce.module, FakeTokenCE)
    assert token_ce.config.rollout_fn_desc_weight == 0.5  # null-inheritance resolved
    assert token_ce.authored_keys == {"desc_ce_weight"}
    assert dict(token_ce.atom_weights) == {"struct_ce": 1.0, "desc_ce": 0.5}
    assert token_ce.path == "stage2_ab.pipeline.objective[0]"


def test_only_referenced_modules_are_loaded() -> None:
    resolve(None)  # "broken" is installed but unreferenced
    with pytest.raises(
        PluginError, match=r"stage2_ab\.pipeline\.objective\[0\]\.name: .*ImportError: cannot import"
    ):
        resolve(stage2(objective=[{"name": "broken"}]))


# ------------------------------------------------------------------ G1 through resolution


def _shuffle_mapping(obj: Any, rng: random.Random) -> Any:
    if isinstance(obj, dict):
        items = list(obj.items())
        rng.shuffle(items)
        return {k: _shuffle_mapping(v, rng) for k, v in items}
    if isinstance(obj, list):
        return [_shuffle_mapping(v, rng) for v in obj]
    return obj


AUTHORED = {
    "diagnostics": [{"name": "coord_diag", "config": {"acc_top_k": 3}, "channels": ["B", "A"]}],
    "objective": [
        {
            "name": "token_ce",
            "weight": 2,
            "config": {
                "desc_ce_weight": 0.5,
                "struct_ce_weight": 1,
                "rollout_matched_prefix_struct_weight": 0.0,
            },
        },
        {"name": "bbox_geo", "enabled": False, "channels": ["B"]},
        {"name": "coord_reg", "config": {"w1_weight": 0.25, "target_truncate": 8, "text_gate_weight": 0.1}},
    ],
}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_g1_checksum_ignores_yaml_key_order(seed: int) -> None:
    assert resolve(_shuffle_mapping(AUTHORED, random.Random(seed))).checksum == resolve(AUTHORED).checksum


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw["objective"].reverse(),
        lambda raw: raw["objective"][0].update(weight=2.5),
        lambda raw: raw["objective"][1].update(enabled=True),
        lambda raw: raw["objective"][2].update(channels=["A"]),
        lambda raw: raw["objective"][0]["config"].update(desc_ce_weight=0.25),
        lambda raw: raw["objective"][2]["config"].update(target_truncate=9),
        lambda raw: raw["diagnostics"][0]["config"].update(acc_top_k=4),
        lambda raw: raw["diagnostics"].clear(),
    ],
)
def test_g1_checksum_changes_with_order_weight_enabled_channels_and_config(edit: Any) -> None:
    raw = copy.deepcopy(AUTHORED)
    edit(raw)
    assert resolve(raw).checksum != resolve(AUTHORED).checksum


def test_int_for_float_and_negative_zero_hash_like_their_float() -> None:
    as_int = stage2(
        objective=[
            {"name": "token_ce", "weight": 1, "config": {"self_context_struct_weight": -0.0}},
            {"name": "bbox_geo"},
            {"name": "coord_reg"},
        ]
    )
    assert resolve(as_int).checksum == GOLDEN["stage2_two_channel"]


def test_g7_disabled_modules_are_checksummed() -> None:
    raw = stage2()
    raw["objective"][1]["enabled"] = False
    resolved = resolve(raw)
    assert [e["name"] for e in resolved.payload()["objective"]] == ["token_ce", "bbox_geo", "coord_reg"]
    assert resolved.payload()["objective"][1]["enabled"] is False
    assert resolved.checksum != GOLDEN["stage2_two_channel"]


# ------------------------------------------------------------------ rule (1): unknown keys


def test_rule1_unknown_spec_key_has_the_full_dotted_path() -> None:
    raw = stage2()
    raw["objective"][1]["confg"] = {}
    err = config_error(raw)
    assert err.path == "stage2_ab.pipeline.objective[1].confg"
    assert "valid keys: channels, config, enabled, name, weight" in err.message
    assert "did you mean `config`" in err.message


@pytest.mark.parametrize("legacy", ["application", "preset"])
def test_rule1_legacy_spec_keys_say_use_channels(legacy: str) -> None:
    raw = stage2()
    raw["objective"][0][legacy] = "both"
    err = config_error(raw)
    assert err.path == f"stage2_ab.pipeline.objective[0].{legacy}"
    assert "use `channels`" in err.message


def test_rule1_unknown_pipeline_key() -> None:
    err = config_error({"objective": [{"name": "token_ce"}], "objectives": []})
    assert err.path == "stage2_ab.pipeline.objectives"


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ([{"name": "token_ce"}], "stage2_ab.pipeline", "expected a mapping with keys objective, diagnostics"),
        ({"diagnostics": []}, "stage2_ab.pipeline.objective", "required key is missing"),
        ({"objective": {"name": "token_ce"}}, "stage2_ab.pipeline.objective", "expected a list"),
        ({"objective": ["token_ce"]}, "stage2_ab.pipeline.objective[0]", "expected a mapping"),
        ({"objective": [{"weight": 1.0}]}, "stage2_ab.pipeline.objective[0].name", "required key is missing"),
        ({"objective": [{"name": ""}]}, "stage2_ab.pipeline.objective[0].name", "non-empty"),
        ({"objective": [{"name": 3}]}, "stage2_ab.pipeline.objective[0].name", "expected a string"),
        (
            {"objective": [{"name": "token_ce", "enabled": "yes"}]},
            "stage2_ab.pipeline.objective[0].enabled",
            "expected true or false",
        ),
        (
            {"objective": [{"name": "token_ce", "weight": -1}]},
            "stage2_ab.pipeline.objective[0].weight",
            ">= 0",
        ),
        (
            {"objective": [{"name": "token_ce", "weight": float("nan")}]},
            "stage2_ab.pipeline.objective[0].weight",
            "finite",
        ),
        (
            {"objective": [{"name": "token_ce", "weight": "1.0"}]},
            "stage2_ab.pipeline.objective[0].weight",
            "expected a number",
        ),
        (
            {"objective": [{"name": "token_ce", "channels": "A"}]},
            "stage2_ab.pipeline.objective[0].channels",
            "expected a list",
        ),
        (
            {"objective": [{"name": "token_ce", "config": None}]},
            "stage2_ab.pipeline.objective[0].config",
            "expected a mapping",
        ),
        ({"objective": []}, "stage2_ab.pipeline.objective", "at least one objective"),
    ],
)
def test_malformed_spec_shapes_name_their_path(raw: Any, path: str, message: str) -> None:
    err = config_error(raw)
    assert err.path == path
    assert message in err.message


def test_structured_spec_is_frozen_with_defaults() -> None:
    spec = structure_pipeline_spec({"objective": [{"name": "token_ce"}]}, "p")
    assert spec == PipelineSpec(objective=(ModuleSpec("token_ce"),))
    assert spec.objective[0].channels is None and spec.objective[0].weight == 1.0
    with pytest.raises(TypeError):
        spec.objective[0].config["x"] = 1  # type: ignore[index]


# ------------------------------------------------------------------ rules (2)-(4)


def test_rule2_unregistered_name_lists_available_modules() -> None:
    err = config_error(stage2(objective=[{"name": "tokn_ce"}]))
    assert err.path == "stage2_ab.pipeline.objective[0].name"
    assert "token_ce (coordexp-losses 0.1.0)" in err.message and "struct_dup (third-party 2.0)" in err.message
    assert "did you mean 'token_ce'" in err.message


def test_rule2_names_are_looked_up_in_their_own_list() -> None:
    err = config_error(stage2(diagnostics=[{"name": "token_ce"}]))
    assert err.path == "stage2_ab.pipeline.diagnostics[0].name"
    assert "is registered as an objective, not as a diagnostic" in err.message


def test_rule3_duplicate_names() -> None:
    raw = stage2()
    raw["objective"].append({"name": "token_ce", "enabled": False})
    err = config_error(raw)
    assert err.path == "stage2_ab.pipeline.objective[3].name" and "already at index 0" in err.message
    err = config_error(stage2(diagnostics=[{"name": "coord_diag"}, {"name": "coord_diag"}]))
    assert err.path == "stage2_ab.pipeline.diagnostics[1].name"


@pytest.mark.parametrize(
    ("channels", "variant", "path", "message"),
    [
        ([], "stage2_two_channel", "stage2_ab.pipeline.objective[0].channels", "at least one channel"),
        (
            ["A", "A"],
            "stage2_two_channel",
            "stage2_ab.pipeline.objective[0].channels[1]",
            "duplicate channel",
        ),
        (["A", "C"], "stage2_two_channel", "stage2_ab.pipeline.objective[0].channels[1]", "not a channel"),
        (["B"], "stage1", "stage1.pipeline.objective[0].channels[0]", "not a channel of stage1"),
        (
            ["A"],
            "stage2_rollout_aligned",
            "rollout_matching.pipeline.objective[0].channels[0]",
            "its channels: B",
        ),
    ],
)
def test_rule4_channels(channels: list, variant: str, path: str, message: str) -> None:
    raw = default_manifest(variant)
    raw["objective"][0]["channels"] = channels
    err = config_error(raw, variant)
    assert err.path == path and message in err.message


# ------------------------------------------------------------------ rule (5): module configs


@pytest.mark.parametrize(
    ("config", "path", "message"),
    [
        ({"desc_ce_weight": "1.0"}, ".desc_ce_weight", "expected a number, got str"),
        ({"desc_ce_weight": True}, ".desc_ce_weight", "expected a number, got bool"),
        ({"desc_ce_weight": -0.5}, ".desc_ce_weight", "must be >= 0"),
        ({"rollout_fn_desc_weight": [1.0]}, ".rollout_fn_desc_weight", "expected a number"),
        ({"desc_weight": 1.0}, ".desc_weight", "valid keys: desc_ce_weight, rollout_fn_desc_weight"),
    ],
)
def test_rule5_token_ce_config_errors(config: dict, path: str, message: str) -> None:
    err = config_error(stage2(objective=[{"name": "token_ce", "config": config}, {"name": "coord_reg"}]))
    assert err.path == "stage2_ab.pipeline.objective[0].config" + path
    assert message in err.message


@pytest.mark.parametrize(
    ("module", "legacy", "replacement"),
    [
        ("bbox_geo", "bbox_smoothl1_weight", "smoothl1_weight"),
        ("coord_reg", "coord_soft_ce_weight", "soft_ce_weight"),
        ("coord_reg", "coord_w1_weight", "w1_weight"),
    ],
)
def test_rule5_legacy_config_keys_name_their_replacement(module: str, legacy: str, replacement: str) -> None:
    raw = stage2()
    index = [e["name"] for e in raw["objective"]].index(module)
    raw["objective"][index]["config"] = {legacy: 1.0}
    err = config_error(raw)
    assert err.path == f"stage2_ab.pipeline.objective[{index}].config.{legacy}"
    assert f"use `{replacement}`" in err.message


def test_rule5_ints_are_exact_and_bounded() -> None:
    def diag(value: Any) -> ConfigError:
        return config_error(stage2(diagnostics=[{"name": "coord_diag", "config": {"acc_top_k": value}}]))

    assert "expected an integer, got float" in diag(5.0).message
    assert "expected an integer, got bool" in diag(True).message
    err = diag(0)
    assert err.path == "stage2_ab.pipeline.diagnostics[0].config.acc_top_k" and ">= 1" in err.message
    assert "<= 1000" in diag(1001).message


class WithCollections(_Inert):
    name = "with_collections"
    atoms = ("c",)

    @attrs.frozen
    class Config:
        sizes: tuple[float, ...] = (1.0,)
        tags: frozenset[str] = frozenset()
        mode: Literal["exp", "st"] = "exp"
        extra: dict[str, int] = attrs.field(factory=dict)

    def atom_weights(self, cfg: Any) -> dict[str, float]:
        return {"c": 1.0}


def test_rule5_collections_and_literals_are_strict() -> None:
    raw = {"sizes": [1, 2.5], "tags": ["b", "a"], "mode": "st", "extra": {"k": 2}}
    cfg = structure_module_config(WithCollections, raw, "p.config")
    assert cfg == WithCollections.Config(
        sizes=(1.0, 2.5), tags=frozenset({"a", "b"}), mode="st", extra={"k": 2}
    )
    for bad, path, message in [
        ({"sizes": "1,2"}, "p.config.sizes", "expected a list"),
        ({"sizes": [1, "2"]}, "p.config.sizes[1]", "expected a number"),
        ({"tags": "ab"}, "p.config.tags", "expected a list"),
        ({"mode": "hard"}, "p.config.mode", "expected one of 'exp', 'st'"),
        ({"extra": {"k": 1.5}}, "p.config.extra", "expected an integer"),
        ({"extra": [1]}, "p.config.extra", "expected a mapping"),
    ]:
        with pytest.raises(ConfigError) as info:
            structure_module_config(WithCollections, bad, "p.config")
        assert info.value.path.startswith(path) and message in info.value.message, (bad, info.value)


def test_structure_module_config_fills_defaults() -> None:
    cfg = structure_module_config(FakeCoordReg, {"target_truncate": 3, "w1_weight": 2}, "x.config")
    assert cfg == FakeCoordReg.Config(target_truncate=3, w1_weight=2.0)
    assert isinstance(cfg.w1_weight, float)


# ------------------------------------------------------------------ rule (6): validation, inert settings


def test_rule6_module_validation_is_located() -> None:
    raw = default_manifest("stage1")
    raw["objective"][0]["config"] = {"rollout_fn_desc_weight": 0.0}
    err = config_error(raw, "stage1")
    assert err.path == "stage1.pipeline.objective[0].config.rollout_fn_desc_weight"
    assert "Channel B only" in err.message


def test_rule6_inert_setting_depends_on_strategy() -> None:
    raw = stage2(
        objective=[{"name": "token_ce", "config": {"self_context_struct_weight": 0.5}}, {"name": "coord_reg"}]
    )
    err = config_error(raw)
    assert err.path == "stage2_ab.pipeline.objective[0].config.self_context_struct_weight"
    assert resolve(raw, n_softctx_iter=2).objective[0].config.self_context_struct_weight == 0.5


def test_l9_enabled_module_with_all_weights_zero_raises() -> None:
    zero = {"smoothl1_weight": 0.0, "ciou_weight": 0}
    err = config_error(stage2(objective=[{"name": "token_ce"}, {"name": "bbox_geo", "config": zero}]))
    assert err.path == "stage2_ab.pipeline.objective[1].config" and "every atom weight" in err.message
    resolve(stage2(objective=[{"name": "token_ce"}, {"name": "bbox_geo", "enabled": False, "config": zero}]))


def test_l9_enabled_objective_with_weight_zero_is_inert() -> None:
    err = config_error(stage2(objective=[{"name": "token_ce"}, {"name": "coord_reg", "weight": 0}]))
    assert err.path == "stage2_ab.pipeline.objective[1].weight" and "enabled: false" in err.message


def test_diagnostics_are_not_weighted() -> None:
    err = config_error(stage2(diagnostics=[{"name": "coord_diag", "weight": 2.0}]))
    assert err.path == "stage2_ab.pipeline.diagnostics[0].weight"


# ------------------------------------------------------------------ rules (7), (8)


def test_rule7_every_channel_needs_a_weighted_objective() -> None:
    raw = stage2(
        objective=[
            {"name": "token_ce", "channels": ["A"]},
            {"name": "coord_reg", "channels": ["A"]},
            {"name": "bbox_geo", "channels": ["B"], "enabled": False},
        ]
    )
    err = config_error(raw)
    assert err.path == "stage2_ab.pipeline.objective" and "channel B" in err.message
    raw["objective"][2]["enabled"] = True
    resolve(raw)


def test_rule8_two_modules_producing_one_atom() -> None:
    err = config_error(stage2(objective=[{"name": "token_ce"}, {"name": "struct_dup"}]))
    assert err.path == "stage2_ab.pipeline.objective[1].name"
    assert "'struct_ce' is produced by both 'token_ce'" in err.message
    resolve(stage2(objective=[{"name": "token_ce"}, {"name": "struct_dup", "enabled": False}]))


# ------------------------------------------------------------------ flat knobs (§5.6), guardrails


def test_g6_flat_desc_weight_reaches_gt_and_fn_desc() -> None:
    resolved = resolve(None, flat={"desc_ce_weight": 0.5})
    token_ce = resolved.objective[0].config
    assert (token_ce.desc_ce_weight, token_ce.rollout_fn_desc_weight) == (0.5, 0.5)
    explicit = stage2(
        objective=[
            {"name": "token_ce", "config": {"desc_ce_weight": 0.5}},
            {"name": "bbox_geo"},
            {"name": "coord_reg"},
        ]
    )
    assert resolved.checksum == resolve(explicit).checksum
    assert resolved.is_default


@pytest.mark.parametrize("knob", sorted(FLAT_KNOB_TARGETS["stage2_two_channel"]))
def test_flat_knobs_copy_into_the_default_manifest(knob: str) -> None:
    module, key = FLAT_KNOB_TARGETS["stage2_two_channel"][knob]
    resolved = resolve(None, flat={knob: 0.25}, n_softctx_iter=2)
    entry = next(m for m in resolved.objective if m.name == module)
    assert getattr(entry.config, key) == 0.25 and key in entry.authored_keys


@pytest.mark.parametrize("knob", sorted(FLAT_KNOB_TARGETS["stage2_two_channel"]))
def test_g5_pipeline_plus_flat_knob_says_where_to_move_it(knob: str) -> None:
    module, key = FLAT_KNOB_TARGETS["stage2_two_channel"][knob]
    err = config_error(stage2(), flat={knob: 0.25})
    assert err.path == f"stage2_ab.{knob}"
    assert f"move `stage2_ab.{knob}` to `stage2_ab.pipeline.objective[{module}].config.{key}`" in err.message


def test_flat_knob_errors_point_at_the_flat_key() -> None:
    err = config_error(None, flat={"desc_ce_weight": "high"})
    assert err.path == "stage2_ab.desc_ce_weight" and "expected a number" in err.message
    err = config_error(None, flat={"desc_ce_weight": -1.0})  # the Config's bound
    assert err.path == "stage2_ab.desc_ce_weight" and ">= 0" in err.message
    err = config_error(None, flat={"fmt_struct_ce_weight": 0.5})  # inert with N = 1
    assert err.path == "stage2_ab.fmt_struct_ce_weight" and "inert" in err.message
    err = config_error(None, flat={"coord_temperature": 1.0})
    assert err.path == "stage2_ab.coord_temperature" and "not a flat objective knob" in err.message


@pytest.mark.parametrize("variant", ["stage1", "stage2_rollout_aligned"])
def test_other_variants_have_no_flat_knobs(variant: str) -> None:
    err = config_error(None, variant, flat={"desc_ce_weight": 0.5})
    assert "accepted: none" in err.message


def test_strategy_must_match_the_variant() -> None:
    with pytest.raises(ConfigError, match="strategy is for 'stage1'"):
        resolve_pipeline(
            None,
            variant="stage2_rollout_aligned",
            path="rollout_matching.pipeline",
            strategy=strategy("stage1"),
            registry=registry(),
        )
    with pytest.raises(ConfigError, match="unknown trainer variant"):
        resolve_pipeline(
            None,
            variant="stage2_ab_training",
            path="stage2_ab.pipeline",
            strategy=strategy("stage1"),
            registry=registry(),
        )
