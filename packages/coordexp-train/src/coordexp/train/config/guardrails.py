"""Cross-section guardrails (spec 05 §5.7, §5.9, §5.10; 04 §4.1, §4.8; D37, D43).

Two kinds of checks:

* on the merged raw document, before the strict schema (so the message is the specific one):
  the variant table of §5.7 (:func:`check_variant_sections`) and the required leaf knobs of §5.9
  (:func:`check_required_leaf_knobs`, every missing knob reported together);
* on the typed config (:func:`check_typed`): the inert-knob rule of §4.8, the ``vllm`` section
  rules of §5.10, decoding/backend compatibility, and the batch-shape rule of §4.1
  (:func:`gradient_accumulation_steps` needs the world size, known at launch).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

from coordexp.core.errors import ConfigError

from .keypath import KeyPath, Provenance, format_path, located_error
from .schema import (
    STAGE2_VARIANTS,
    TRAINER_VARIANTS,
    CoordexpConfig,
    RolloutMatchingSection,
    Stage2ABSection,
    TrainingSection,
)
from .tree import get_path

COMMON_LEAF_KNOBS: tuple[KeyPath, ...] = (
    ("model", "model"),
    *(
        ("training", key)
        for key in (
            "run_name",
            "output_dir",
            "logging_dir",
            "seed",
            "learning_rate",
            "vit_lr",
            "aligner_lr",
            "effective_batch_size",
            "eval_strategy",
            "eval_steps",
            "save_strategy",
            "save_steps",
        )
    ),
)
STAGE2_LEAF_KNOBS: tuple[KeyPath, ...] = (
    ("rollout_matching", "rollout_backend"),
    ("rollout_matching", "decode_batch_size"),
    ("rollout_matching", "decoding", "max_new_tokens"),
)
TWO_CHANNEL_LEAF_KNOBS: tuple[KeyPath, ...] = (
    ("stage2_ab", "schedule", "b_ratio"),
    ("stage2_ab", "n_softctx_iter"),
)
INERT_WITH_ONE_ITERATION = ("coord_ctx_embed_mode", "softctx_grad_mode", "softctx_temperature")
UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::"})

_ABSENT = object()


def _present(data: Mapping[str, object], path: KeyPath) -> bool:
    """Authored with a non-null value."""
    return get_path(data, path, None) is not None


def read_variant(data: Mapping[str, object], provenance: Provenance | None = None) -> str:
    """``custom.trainer_variant`` from the raw document; required and one of the three variants."""
    value = get_path(data, ("custom", "trainer_variant"), _ABSENT)
    choices = ", ".join(TRAINER_VARIANTS)
    if value is _ABSENT or value is None:
        raise located_error(
            ("custom", "trainer_variant"), f"required key is missing (one of {choices})", provenance
        )
    if not isinstance(value, str) or value not in TRAINER_VARIANTS:
        raise located_error(
            ("custom", "trainer_variant"), f"expected one of {choices}, got {value!r}", provenance
        )
    return value


def check_variant_sections(data: Mapping[str, object], provenance: Provenance | None = None) -> str:
    """Apply the §5.7 variant table to the raw document; returns the variant."""
    variant = read_variant(data, provenance)
    forbidden: list[tuple[KeyPath, str]] = []
    if variant != "stage1":
        forbidden.append((("stage1",), "stage1 is for custom.trainer_variant: stage1"))
        forbidden.append(
            (("training", "packing"), "static packing is stage1-only; use training.dynamic_packing")
        )
    if variant != "stage2_two_channel":
        forbidden.append((("stage2_ab",), "stage2_ab is for stage2_two_channel"))
    if variant == "stage1":
        forbidden.append(
            (
                ("rollout_matching",),
                "rollout_matching is not used by stage1 (detection eval for stage1 runs offline "
                "with `coordexp eval`, D36)",
            )
        )
        forbidden.append(
            (("training", "dynamic_packing"), "dynamic packing is stage-2-only; use training.packing")
        )
    if variant == "stage2_two_channel":
        forbidden.append((("rollout_matching", "pipeline"), "use stage2_ab.pipeline"))
        forbidden.append(
            (("rollout_matching", "coord_decode_mode"), "use stage2_ab.coord_decode_mode")
        )
        forbidden.append(
            (
                ("rollout_matching", "poly_ot"),
                "poly_ot is for stage2_rollout_aligned only (stage2_two_channel is bbox-only)",
            )
        )
    for path, message in forbidden:
        if _present(data, path):
            raise located_error(path, f"not allowed with trainer_variant {variant}: {message}", provenance)
    return variant


def inapplicable_paths(config: CoordexpConfig) -> tuple[KeyPath, ...]:
    """Keys that take no effect for this config and that the guardrails forbid authoring.

    The resolved config omits them, so that it reloads to itself.
    """
    paths: list[KeyPath] = []
    if config.variant == "stage1":
        paths.append(("training", "dynamic_packing"))
    else:
        paths.append(("training", "packing"))
    if config.variant == "stage2_two_channel":
        paths += [("rollout_matching", "pipeline"), ("rollout_matching", "coord_decode_mode"),
                  ("rollout_matching", "poly_ot")]
        if config.stage2_ab is not None and config.stage2_ab.n_softctx_iter == 1:
            paths += [("stage2_ab", key) for key in INERT_WITH_ONE_ITERATION]
    return tuple(paths)


def required_leaf_knobs(variant: str) -> tuple[KeyPath, ...]:
    """The knobs a leaf must author itself for ``variant`` (spec 05 §5.9, D37)."""
    knobs = COMMON_LEAF_KNOBS
    if variant in STAGE2_VARIANTS:
        knobs += STAGE2_LEAF_KNOBS
    if variant == "stage2_two_channel":
        knobs += TWO_CHANNEL_LEAF_KNOBS
    return knobs


def check_required_leaf_knobs(
    data: Mapping[str, object],
    provenance: Provenance,
    variant: str,
    leaf_origins: Collection[str],
    leaf_name: str,
) -> None:
    """Every required knob must be authored (non-null) by the leaf or its overrides.

    ``leaf_origins`` are the location names that count as the leaf (the entry file and its CLI
    overrides). All problems are reported in one error.
    """
    problems: list[tuple[KeyPath, str]] = []
    for path in required_leaf_knobs(variant):
        if not _present(data, path):
            problems.append((path, "missing"))
            continue
        author = provenance.author(path)
        if author is not None and author.file not in leaf_origins:
            problems.append((path, f"inherited from {author}"))
    if not problems:
        return
    listed = ", ".join(f"{format_path(path)} ({why})" for path, why in problems)
    raise ConfigError(
        format_path(problems[0][0]),
        f"required leaf knobs must be authored in the leaf {leaf_name} itself (D37): {listed}",
    )


def check_typed(
    config: CoordexpConfig, data: Mapping[str, object], provenance: Provenance | None = None
) -> None:
    """Value guardrails on the typed config (``data`` is the raw document, for 'authored' tests)."""
    if config.stage2_ab is not None:
        check_inert_knobs(config.stage2_ab, data, provenance)
    if config.rollout_matching is not None:
        check_rollout_matching(config, config.rollout_matching, provenance)
    stage1 = config.stage1
    if stage1 is not None and stage1.eval_detection.enabled and config.custom.val_jsonl is None:
        raise located_error(
            ("custom", "val_jsonl"),
            "required while stage1.eval_detection.enabled is true (set it to false to train "
            "without detection eval)",
            provenance,
        )
    check_batch_shape(config.training, provenance)
    if config.training.lr_decay_ratio is not None and config.training.lr_scheduler != "warmup_stable_decay":
        raise located_error(
            ("training", "lr_decay_ratio"),
            "only read by lr_scheduler: warmup_stable_decay (this config's is "
            f"{config.training.lr_scheduler}); delete it or switch the scheduler",
            provenance,
        )


def check_inert_knobs(
    section: Stage2ABSection, data: Mapping[str, object], provenance: Provenance | None = None
) -> None:
    """04 §4.8 / D43: self-context knobs are inert with ``n_softctx_iter: 1`` and must not be set."""
    if section.n_softctx_iter != 1:
        return
    for key in INERT_WITH_ONE_ITERATION:
        path = ("stage2_ab", key)
        if get_path(data, path, _ABSENT) is not _ABSENT:
            raise located_error(
                path,
                "inert with stage2_ab.n_softctx_iter: 1 (no self-context iteration); delete it or "
                "set n_softctx_iter >= 2",
                provenance,
            )
    if section.fmt_struct_ce_weight not in (None, 0.0):
        raise located_error(
            ("stage2_ab", "fmt_struct_ce_weight"),
            "a non-zero value is inert with stage2_ab.n_softctx_iter: 1 (the self_context struct "
            "stabilizer needs n_softctx_iter >= 2)",
            provenance,
        )


def check_rollout_matching(
    config: CoordexpConfig, section: RolloutMatchingSection, provenance: Provenance | None = None
) -> None:
    """§5.10 rules: vllm section vs backend, servers, lengths, beams, sync mode, eval data."""
    base: KeyPath = ("rollout_matching",)
    decoding = section.decoding
    if section.rollout_backend == "hf":
        if section.vllm is not None:
            raise located_error(
                (*base, "vllm"),
                "the vllm section is only allowed with rollout_backend: vllm (D43); delete it",
                provenance,
            )
    else:
        vllm = section.vllm
        if vllm is None:
            raise located_error(
                (*base, "vllm"),
                "rollout_backend: vllm needs a vllm section with servers: [{base_url: ...}] and "
                "max_model_len",
                provenance,
            )
        check_servers([server.base_url for server in vllm.servers], provenance)
        if vllm.max_model_len < config.template.max_length:
            raise located_error(
                (*base, "vllm", "max_model_len"),
                f"must be >= template.max_length ({config.template.max_length}), "
                f"got {vllm.max_model_len}",
                provenance,
            )
        if vllm.max_model_len <= decoding.max_new_tokens:
            raise located_error(
                (*base, "vllm", "max_model_len"),
                f"must be > decoding.max_new_tokens ({decoding.max_new_tokens}), "
                f"got {vllm.max_model_len}",
                provenance,
            )
        if vllm.sync.mode != "full":
            raise located_error(
                (*base, "vllm", "sync", "mode"),
                "training needs `full` (rollouts must come from the current weights); `none` is "
                "for eval-only runs",
                provenance,
            )
    if decoding.num_beams > 1 and (section.rollout_backend != "hf" or decoding.temperature != 0.0):
        raise located_error(
            (*base, "decoding", "num_beams"),
            "num_beams > 1 needs rollout_backend: hf and decoding.temperature: 0",
            provenance,
        )
    if decoding.coord_pick == "expectation" and section.rollout_backend != "hf":
        raise located_error(
            (*base, "decoding", "coord_pick"),
            "expectation needs rollout_backend: hf (the vllm server picks coord tokens itself); "
            "use coord_pick: token with vllm",
            provenance,
        )
    if section.eval_detection.enabled and config.custom.val_jsonl is None:
        raise located_error(
            ("custom", "val_jsonl"),
            "required while rollout_matching.eval_detection.enabled is true (set "
            "eval_detection.enabled: false to train without detection eval)",
            provenance,
        )


def check_servers(urls: list[str], provenance: Provenance | None = None) -> None:
    """``vllm.servers[].base_url``: http(s) server roots, no unspecified host, no duplicates."""
    seen: dict[tuple[str, str, int, str], int] = {}
    for index, url in enumerate(urls):
        path: KeyPath = ("rollout_matching", "vllm", "servers", index, "base_url")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise located_error(path, f"invalid URL {url!r}: {exc}", provenance) from None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        if scheme not in ("http", "https") or not host:
            raise located_error(
                path, f"expected an http(s)://host:port URL, got {url!r}", provenance
            )
        if host in UNSPECIFIED_HOSTS:
            raise located_error(
                path,
                f"{url!r} is a bind-all address, not one a client can reach; use the server's "
                "host name or IP (e.g. 127.0.0.1)",
                provenance,
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise located_error(
                path, f"{url!r} must not carry credentials, a query or a fragment", provenance
            )
        route = parts.path.rstrip("/")
        if route.endswith("/v1"):
            raise located_error(
                path,
                f"{url!r}: give the server root; the client appends /v1/... itself",
                provenance,
            )
        key = (scheme, host, port if port is not None else (443 if scheme == "https" else 80), route)
        if key in seen:
            raise located_error(
                path,
                f"duplicate server {url!r} (same as servers[{seen[key]}])",
                provenance,
            )
        seen[key] = index


def check_batch_shape(training: TrainingSection, provenance: Provenance | None = None) -> None:
    """World-size-free part of 04 §4.1: an explicit GAS must divide E together with d."""
    gas = training.gradient_accumulation_steps
    if gas is None:
        return
    per_step = training.per_device_train_batch_size * gas
    if training.effective_batch_size % per_step:
        raise located_error(
            ("training", "gradient_accumulation_steps"),
            f"effective_batch_size {training.effective_batch_size} is not a multiple of "
            f"per_device_train_batch_size × gradient_accumulation_steps = {per_step}, so no world "
            "size can satisfy E = d·GAS·W",
            provenance,
        )


def gradient_accumulation_steps(training: TrainingSection, world_size: int) -> int:
    """GAS = E / (d·W) (spec 04 §4.1); E must be divisible by d·W and an explicit GAS must match."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError("", f"world size must be an int >= 1, got {world_size!r}")
    effective = training.effective_batch_size
    per_device = training.per_device_train_batch_size
    quantum = per_device * world_size
    if effective % quantum:
        raise ConfigError(
            "training.effective_batch_size",
            f"{effective} is not divisible by per_device_train_batch_size × world size = "
            f"{per_device} × {world_size} = {quantum}",
        )
    gas = effective // quantum
    explicit = training.gradient_accumulation_steps
    if explicit is not None and explicit != gas:
        raise ConfigError(
            "training.gradient_accumulation_steps",
            f"{explicit} does not match effective_batch_size / (per_device_train_batch_size × "
            f"world size) = {effective} / ({per_device} × {world_size}) = {gas}; delete it or "
            f"set {gas}",
        )
    return gas
