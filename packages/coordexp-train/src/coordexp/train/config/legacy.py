"""Legacy config names fail fast and name their replacement (spec 05 §5.8, D11).

Checked on the merged raw document (after ``extends`` and overrides, before the strict schema), so
a legacy key gets this message rather than a generic "unknown key". Every hit is reported in one
error (the first hit's path is the error path; the others follow, each with its location).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import attrs

from coordexp.core.errors import ConfigError

from .keypath import KeyPath, Provenance, format_path

ANY_INDEX = object()
"""Pattern element: every index of a list."""

PIPELINE_SECTIONS = frozenset({"stage1", "stage2_ab", "rollout_matching"})
PIPELINE_LISTS = frozenset({"objective", "diagnostics"})

LEGACY_TRAINER_VARIANTS = {
    "stage2_ab_training": "stage2_two_channel",
    "rollout_matching_sft": "stage2_rollout_aligned",
}
_REMOVED = "removed (the rollout budget is `training.effective_batch_size`); delete it"
_MODULE_CONFIG_RENAMES = {
    "bbox_smoothl1_weight": "smoothl1_weight",
    "coord_soft_ce_weight": "soft_ce_weight",
    "coord_w1_weight": "w1_weight",
}
_CUSTOM_LOSS_KEYS = {
    "coord_soft_ce_w1": "a `coord_reg` entry in stage1.pipeline.objective",
    "bbox_geo": "a `bbox_geo` entry in stage1.pipeline.objective",
    "coord_loss": "a `coord_reg` entry in stage1.pipeline.objective",
    "coord_expectation_metrics": "a `coord_diag` entry in stage1.pipeline.diagnostics",
}
_TOKEN_CE_KEYS = (
    "token_ce config in the pipeline (spec 02 §2.4: struct_ce_weight, desc_ce_weight, "
    "rollout_fn_desc_weight, rollout_matched_prefix_struct_weight, self_context_struct_weight)"
)

Pattern = tuple[object, ...]
"""Elements: a key (str), a set of keys (frozenset), or ANY_INDEX."""


@attrs.frozen
class LegacyRule:
    """One §5.8 row: where the legacy name sits and how to say what replaces it.

    ``message(path, value)`` returns the replacement text, or None when the value at a matching
    path is not legacy (used for value-level rows such as ``vllm.mode: colocate``).
    """

    pattern: Pattern
    message: Callable[[KeyPath, object], str | None]


def _names(*names: str) -> frozenset[str]:
    return frozenset(names)


def _fixed(text: str) -> Callable[[KeyPath, object], str]:
    return lambda path, value: text


LEGACY_RULES: tuple[LegacyRule, ...] = (
    LegacyRule(
        ("custom", "trainer_variant"),
        lambda path, value: (
            f"legacy trainer variant {value!r}; use {LEGACY_TRAINER_VARIANTS[value]!r}"
            if isinstance(value, str) and value in LEGACY_TRAINER_VARIANTS
            else None
        ),
    ),
    LegacyRule(
        ("custom", "extra", "rollout_matching"),
        _fixed("legacy location; move it to the top-level `rollout_matching` (same subkeys)"),
    ),
    LegacyRule(
        ("rollout_matching", _names("temperature", "top_p", "top_k")),
        lambda path, value: f"legacy key; use rollout_matching.decoding.{path[-1]}",
    ),
    LegacyRule(
        (
            "rollout_matching",
            _names(
                "channel_b_decode_batch_size",
                "eval_decode_batch_size",
                "rollout_generate_batch_size",
                "rollout_infer_batch_size",
            ),
        ),
        _fixed("legacy key; use rollout_matching.decode_batch_size"),
    ),
    LegacyRule(
        ("stage2_ab", "channel_b", "rollout_decode_batch_size"),
        _fixed("legacy key; use rollout_matching.decode_batch_size"),
    ),
    LegacyRule(
        (
            "rollout_matching",
            _names("candidate_top_k", "maskiou_gate", "maskiou_resolution", "fp_cost", "fn_cost"),
        ),
        lambda path, value: f"legacy key; use rollout_matching.matching.{path[-1]}",
    ),
    LegacyRule(
        ("rollout_matching", "vllm", "server", _names("base_url", "group_port")),
        _fixed(
            "legacy key; use rollout_matching.vllm.servers: [{base_url: ...}] "
            "(servers[].base_url)"
        ),
    ),
    LegacyRule(
        (
            "rollout_matching",
            _names("rollout_buffer", "post_rollout_pack_scope", "repeat_terminate"),
        ),
        _fixed(_REMOVED),
    ),
    LegacyRule(
        (
            "stage2_ab",
            "channel_b",
            _names("mode", "async", "rollouts_per_step", "enable_pipeline"),
        ),
        _fixed(_REMOVED),
    ),
    LegacyRule(
        ("stage2_ab", "schedule", "pattern"),
        _fixed("legacy key; use stage2_ab.schedule.b_ratio (fraction of B steps in [0, 1])"),
    ),
    LegacyRule(
        (
            "stage2_ab",
            _names(
                "reordered_gt_sft",
                "desc_ce_weight_matched",
                "semantic_desc_gate",
                "drop_invalid_struct_ce_multiplier",
                "stop_neutral",
            ),
        ),
        _fixed(f"legacy key; express it as {_TOKEN_CE_KEYS}"),
    ),
    LegacyRule(
        ("custom", frozenset(_CUSTOM_LOSS_KEYS)),
        lambda path, value: f"legacy key; use {_CUSTOM_LOSS_KEYS[str(path[-1])]}",
    ),
    LegacyRule(
        (
            PIPELINE_SECTIONS,
            "pipeline",
            PIPELINE_LISTS,
            ANY_INDEX,
            "config",
            frozenset(_MODULE_CONFIG_RENAMES),
        ),
        lambda path, value: f"legacy module config key; use `{_MODULE_CONFIG_RENAMES[str(path[-1])]}`",
    ),
    LegacyRule(
        (PIPELINE_SECTIONS, "pipeline", PIPELINE_LISTS, ANY_INDEX, _names("application", "preset")),
        _fixed("legacy module spec key; use `channels` (e.g. channels: [A, B])"),
    ),
    LegacyRule(("inherit",), _fixed("legacy key; use `extends`")),
    LegacyRule(("training", "packing_length"), _fixed("legacy key; use template.max_length")),
    LegacyRule(
        ("rollout_matching", "vllm", "mode"),
        lambda path, value: (
            "vllm.mode `colocate` is not supported; use `server` "
            "(colocate is a possible future plugin)"
            if value == "colocate"
            else None
        ),
    ),
)


def find_matches(data: object, pattern: Pattern, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, object]]:
    """Yield ``(path, value)`` for every value of ``data`` matched by ``pattern``."""
    if not pattern:
        yield prefix, data
        return
    head, rest = pattern[0], pattern[1:]
    if head is ANY_INDEX:
        if isinstance(data, list):
            for index, item in enumerate(data):
                yield from find_matches(item, rest, (*prefix, index))
        return
    if not isinstance(data, Mapping):
        return
    keys = sorted(head) if isinstance(head, frozenset) else [head]
    for key in keys:
        if key in data:
            yield from find_matches(data[key], rest, (*prefix, key))


def legacy_hits(data: Mapping[str, object]) -> list[tuple[KeyPath, str]]:
    """Every legacy name in ``data`` with its replacement message, in rule order."""
    hits: list[tuple[KeyPath, str]] = []
    for rule in LEGACY_RULES:
        for path, value in find_matches(data, rule.pattern):
            message = rule.message(path, value)
            if message is not None:
                hits.append((path, message))
    return hits


def check_legacy(data: Mapping[str, object], provenance: Provenance | None = None) -> None:
    """Raise one ConfigError listing every legacy name in ``data`` (first hit = error path)."""
    hits = legacy_hits(data)
    if not hits:
        return

    def render(path: KeyPath, message: str) -> str:
        where = provenance.locate(path) if provenance is not None else None
        return f"{message} (at {where})" if where is not None else message

    first_path, first_message = hits[0]
    text = render(first_path, first_message)
    for path, message in hits[1:]:
        text += f"\n  also {format_path(path)}: {render(path, message)}"
    raise ConfigError(format_path(first_path), text)
