"""Typed, frozen config sections (spec 05 §5.7–§5.10, 01 §1.1, 03 §3.1/§3.4/§3.5, 04 §4.1/§4.7/§4.8,
06 §6.7).

Every section is a frozen attrs class structured by :mod:`.structure` with cattrs: unknown keys at
any depth fail with their full dotted path (list indices included); ints are accepted for floats;
bools and strings are never coerced; NaN/Inf are rejected. A field without a default is required.
Sections are built once by the loader and passed to constructors; nothing reads YAML paths later.

The full reference (every key, default, bound, reader and legacy name) with an annotated example
is ``docs/configuration.md``. Defaults this module chose where the spec leaves a value open:

* ``model.dtype: float32``, ``model.attn_implementation: sdpa``,
  ``model.gradient_checkpointing: false``;
* ``template.max_length: 4096`` (bound >= 16: shorter cannot hold a prompt and a container),
  ``template.max_pixels: 1048576`` (1024²),
  ``template.min_pixels: 1024`` (one 32×32 merged patch);
* ``training.weight_decay: 0.0``, ``warmup_steps: 0``,
  ``lr_scheduler: cosine``, ``per_device_train_batch_size: 1``,
  ``per_device_eval_batch_size: 1``, ``max_grad_norm: 1.0`` (null = no clipping),
  ``mixed_precision: "no"`` (CPU-safe; GPU profiles set ``bf16``), ``dataloader_drop_last: false``,
  ``prefetch_steps: 0``, ``logging_steps: 10``, ``resume_from: null``; exactly one of ``max_steps`` /
  ``num_train_epochs`` must be set;
* ``custom.val_jsonl: null``, ``custom.extra: {}``;
* ``rollout_matching.debug_dump.max_per_step``/``max_total`` must be >= 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NewType, Optional

import attrs

from coordexp.core.pipeline.manifests import flat_knob_targets

from .validators import (
    FieldValueError,
    at_least,
    greater_than,
    non_blank,
    non_empty,
    non_empty_unique,
    top_k_value,
    within,
)

FreeMapping = NewType("FreeMapping", Mapping)
"""A free-form mapping, stored deep-frozen (mappings read-only, lists as tuples)."""

PipelineMapping = NewType("PipelineMapping", Mapping)
"""A raw pipeline section (spec 05 §5.2), validated by ``coordexp.core.pipeline.spec``."""

TrainerVariant = Literal["stage1", "stage2_two_channel", "stage2_rollout_aligned"]
TRAINER_VARIANTS: tuple[str, ...] = ("stage1", "stage2_two_channel", "stage2_rollout_aligned")
STAGE2_VARIANTS: frozenset[str] = frozenset({"stage2_two_channel", "stage2_rollout_aligned"})
EvalMetric = Literal["coco", "f1"]
EvalMetrics = NewType("EvalMetrics", tuple)
"""``coco``, ``f1`` or a list of them; stored as a tuple of unique names."""

_SEED_MAX = 2**32 - 1


# --------------------------------------------------------------------------------------------
# model / template


@attrs.frozen
class ModelSection:
    """``model.*`` — read by ``coordexp.train.models`` (model + processor construction).

    ``model``: a local Hugging Face checkpoint directory, or a built-in preset spec understood by
    ``coordexp.train.models`` (required leaf knob).
    """

    model: str = attrs.field(validator=non_blank)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal[
        "eager", "sdpa", "sdpa_varlen", "flash_attention_2", "flash_attention_3"
    ] = "sdpa"
    gradient_checkpointing: bool = False


@attrs.frozen
class TemplateSection:
    """``template.*`` — read by the data loader (``too_long``/``image_size`` rules), the processor,
    packing (cap = ``max_length``), the rollout backends and preflight (vLLM pixel limits)."""

    max_length: int = attrs.field(default=4096, validator=at_least(16))
    max_pixels: int = attrs.field(default=1_048_576, validator=at_least(1))
    min_pixels: int = attrs.field(default=1024, validator=at_least(1))

    def __attrs_post_init__(self) -> None:
        if self.min_pixels > self.max_pixels:
            raise FieldValueError(
                "min_pixels", f"must be <= max_pixels ({self.max_pixels}), got {self.min_pixels}"
            )


# --------------------------------------------------------------------------------------------
# training


@attrs.frozen
class TrainingSection:
    """``training.*`` — read by the Accelerate executor (optimizer param groups, scheduler, loop,
    checkpointing, logging), the step plan (04 §4.1), packing (06 §6.7) and the run manifest."""

    run_name: str = attrs.field(validator=non_blank)
    output_dir: str = attrs.field(validator=non_blank)
    logging_dir: str = attrs.field(validator=non_blank)
    seed: int = attrs.field(validator=within(0, _SEED_MAX))
    learning_rate: float = attrs.field(validator=at_least(0.0))
    vit_lr: float = attrs.field(validator=at_least(0.0))
    aligner_lr: float = attrs.field(validator=at_least(0.0))
    effective_batch_size: int = attrs.field(validator=at_least(1))
    eval_strategy: Literal["no", "steps"]
    eval_steps: int = attrs.field(validator=at_least(1))
    save_strategy: Literal["no", "steps"]
    save_steps: int = attrs.field(validator=at_least(1))
    weight_decay: float = attrs.field(default=0.0, validator=at_least(0.0))
    warmup_steps: int = attrs.field(default=0, validator=at_least(0))
    lr_scheduler: Literal["cosine", "linear", "constant", "warmup_stable_decay"] = "cosine"
    #: ``warmup_stable_decay`` only (a coordexp extension): the share of the steps spent decaying;
    #: null = 0.2
    lr_decay_ratio: Optional[float] = attrs.field(default=None, validator=within(0.0, 1.0, low_open=True))
    max_steps: Optional[int] = attrs.field(default=None, validator=at_least(1))
    num_train_epochs: Optional[float] = attrs.field(default=None, validator=greater_than(0.0))
    per_device_train_batch_size: int = attrs.field(default=1, validator=at_least(1))
    per_device_eval_batch_size: int = attrs.field(default=1, validator=at_least(1))
    gradient_accumulation_steps: Optional[int] = attrs.field(default=None, validator=at_least(1))
    max_grad_norm: Optional[float] = attrs.field(default=1.0, validator=greater_than(0.0))
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    packing: Optional[bool] = None
    dynamic_packing: Optional[bool] = None
    dataloader_drop_last: bool = False
    prefetch_steps: int = attrs.field(default=0, validator=at_least(0))
    logging_steps: int = attrs.field(default=10, validator=at_least(1))
    ddp_timeout_s: int = attrs.field(default=1800, validator=at_least(1))
    resume_from: Optional[str] = attrs.field(default=None, validator=non_blank)

    def __attrs_post_init__(self) -> None:
        if (self.max_steps is None) == (self.num_train_epochs is None):
            raise FieldValueError(
                "max_steps",
                "set exactly one of training.max_steps and training.num_train_epochs",
            )


# --------------------------------------------------------------------------------------------
# custom


@attrs.frozen
class CustomSection:
    """``custom.*`` — data and prompt identity (01 §1.1, §1.5, §1.6) and the trainer variant.

    ``trainer_variant`` selects the stage (05 §5.7); ``object_field_order``, ``object_ordering``,
    ``prompt_variant``, ``train_jsonl``, ``val_jsonl`` are read by the data loader and
    ``resolve_prompt``; ``extra`` is the only free-form mapping, reserved for third-party plugins
    (read through the run manifest hooks); ``extra.rollout_matching`` is rejected (legacy).
    """

    trainer_variant: TrainerVariant
    object_field_order: Literal["desc_first", "geometry_first"]
    train_jsonl: str = attrs.field(validator=non_blank)
    object_ordering: Literal["sorted", "random"] = "sorted"
    prompt_variant: str = attrs.field(default="default", validator=non_blank)
    val_jsonl: Optional[str] = attrs.field(default=None, validator=non_blank)
    extra: FreeMapping = attrs.field(factory=lambda: FreeMapping(MappingProxyType({})))


# --------------------------------------------------------------------------------------------
# stage1


@attrs.frozen
class Stage1EvalDetectionSection:
    """``stage1.eval_detection`` — opt-in detection eval during Stage-1 training (a coordexp
    extension of spec 05 §5.7, which keeps Stage-1 detection eval offline, D36).

    Read by ``coordexp.train.eval.step.DetectionEvalStep``: every ``training.eval_steps`` (and at the
    end) the first ``max_samples`` records of ``custom.val_jsonl`` are decoded greedily in batches of
    ``decode_batch_size`` with at most ``max_new_tokens`` new tokens, parsed in ``rollout`` mode and
    scored with the offline evaluator; the keys are those of 06 §6.6 (``rollout/mAP``, …).
    Disabled by default, so a config without this section behaves exactly as the spec says.
    """

    enabled: bool = False
    metrics: EvalMetrics = attrs.field(
        factory=lambda: EvalMetrics(("coco",)), validator=non_empty_unique
    )
    score_source: Literal["coord_logprob", "constant"] = "coord_logprob"
    max_samples: int = attrs.field(default=32, validator=at_least(1))
    max_new_tokens: int = attrs.field(default=256, validator=at_least(1))
    decode_batch_size: int = attrs.field(default=4, validator=at_least(1))
    #: ``token`` (greedy) or ``expectation`` (the expected bin at coord steps, coordexp.rollout.coord_pick)
    coord_pick: Literal["token", "expectation"] = "token"
    materialize_artifacts: bool = True


@attrs.frozen
class Stage1Section:
    """``stage1.*`` (variant ``stage1`` only) — ``pipeline`` is resolved by
    ``coordexp.core.pipeline.spec.resolve_pipeline``; omitted → default manifest (05 §5.4).
    ``eval_detection`` is the opt-in in-training detection eval (see its class)."""

    pipeline: Optional[PipelineMapping] = None
    eval_detection: Stage1EvalDetectionSection = attrs.field(factory=Stage1EvalDetectionSection)


# --------------------------------------------------------------------------------------------
# stage2_ab


FLAT_KNOBS: tuple[str, ...] = tuple(flat_knob_targets("stage2_two_channel"))
"""The single-mode flat knobs of ``stage2_ab`` (spec 05 §5.6; targets live in the core)."""


@attrs.frozen
class Stage2Schedule:
    """``stage2_ab.schedule`` — read by the Bresenham channel scheduler (04 §4.2)."""

    b_ratio: float = attrs.field(validator=within(0.0, 1.0))


def _flat_knob() -> Optional[float]:
    return attrs.field(default=None, validator=at_least(0.0))


@attrs.frozen
class Stage2ABSection:
    """``stage2_ab.*`` (variant ``stage2_two_channel`` only; 04 §4.7, §4.8, 05 §5.6).

    Strategy keys (``n_softctx_iter``, ``softctx_*``, ``coord_ctx_embed_mode``,
    ``coord_decode_mode``, ``schedule.b_ratio``) go into the ``Strategy`` read by the two-channel
    stage and hashed into ``strategy_sha256``. Flat knobs are ``None`` unless authored; authored
    values are handed to ``resolve_pipeline`` as ``flat_knobs`` (copied into the default manifest,
    or rejected when ``pipeline`` is present).
    """

    schedule: Stage2Schedule
    n_softctx_iter: int = attrs.field(default=1, validator=at_least(1))
    softctx_grad_mode: Literal["em_detach", "unroll"] = "em_detach"
    softctx_temperature: float = attrs.field(default=1.0, validator=greater_than(0.0))
    coord_ctx_embed_mode: Literal["soft", "st", "hard"] = "soft"
    coord_decode_mode: Literal["exp", "st"] = "exp"
    pipeline: Optional[PipelineMapping] = None
    desc_ce_weight: Optional[float] = _flat_knob()
    fmt_struct_ce_weight: Optional[float] = _flat_knob()
    bbox_smoothl1_weight: Optional[float] = _flat_knob()
    bbox_ciou_weight: Optional[float] = _flat_knob()
    coord_ce_weight: Optional[float] = _flat_knob()
    coord_soft_ce_weight: Optional[float] = _flat_knob()
    coord_w1_weight: Optional[float] = _flat_knob()
    coord_gate_weight: Optional[float] = _flat_knob()
    text_gate_weight: Optional[float] = _flat_knob()

    def authored_flat_knobs(self) -> dict[str, float]:
        """The flat knobs that were set (non-null), in §5.6 table order."""
        values = {name: getattr(self, name) for name in FLAT_KNOBS}
        return {name: value for name, value in values.items() if value is not None}


# --------------------------------------------------------------------------------------------
# rollout_matching


@attrs.frozen
class DecodingSection:
    """``rollout_matching.decoding`` (03 §3.1) — turned into an immutable ``DecodeParams`` for the
    rollout backends (training rollouts) and the evaluator (which forces greedy)."""

    max_new_tokens: int = attrs.field(validator=at_least(1))
    temperature: float = attrs.field(default=0.0, validator=at_least(0.0))
    top_p: float = attrs.field(default=1.0, validator=within(0.0, 1.0, low_open=True))
    top_k: int = attrs.field(default=-1, validator=top_k_value)
    repetition_penalty: float = attrs.field(default=1.0, validator=greater_than(0.0))
    num_beams: int = attrs.field(default=1, validator=at_least(1))
    #: a coordexp extension of 03 §3.1: ``expectation`` emits the expected bin at coord steps
    #: (coordexp.rollout.coord_pick; hf backend only)
    coord_pick: Literal["token", "expectation"] = "token"


@attrs.frozen
class MatchingSection:
    """``rollout_matching.matching`` (03 §3.4) — read by ``coordexp.rollout`` Hungarian matching
    and maskIoU."""

    candidate_top_k: int = attrs.field(default=10, validator=at_least(1))
    maskiou_gate: float = attrs.field(default=0.3, validator=within(0.0, 1.0))
    maskiou_resolution: int = attrs.field(default=256, validator=at_least(16))
    fp_cost: float = attrs.field(default=1.0, validator=greater_than(0.0))
    fn_cost: float = attrs.field(default=1.0, validator=greater_than(0.0))


@attrs.frozen
class PolyOTSection:
    """``rollout_matching.poly_ot`` (03 §3.5; rollout_aligned only) — read by the poly OT target
    builder."""

    epsilon: float = attrs.field(default=10.0, validator=greater_than(0.0))
    iters: int = attrs.field(default=30, validator=at_least(1))
    cost: Literal["l2", "l1"] = "l2"


@attrs.frozen
class VllmServer:
    """One ``rollout_matching.vllm.servers[]`` entry (a trailing ``/`` is dropped); the URL rules
    (http(s), no ``0.0.0.0``, no duplicates) are checked by the guardrails."""

    base_url: str = attrs.field(converter=lambda url: url.rstrip("/"), validator=non_blank)


@attrs.frozen
class VllmSync:
    """``rollout_matching.vllm.sync`` — weight sync policy of the vLLM backend (03 §3.1)."""

    mode: Literal["full", "none"] = "full"


@attrs.frozen
class VllmSection:
    """``rollout_matching.vllm`` (only with ``rollout_backend: vllm``) — read by the vLLM server
    client in ``coordexp.rollout`` and by preflight."""

    servers: tuple[VllmServer, ...] = attrs.field(validator=non_empty)
    max_model_len: int = attrs.field(validator=at_least(1))
    mode: Literal["server"] = "server"
    timeout_s: float = attrs.field(default=240.0, validator=greater_than(0.0))
    infer_timeout_s: Optional[float] = attrs.field(default=None, validator=greater_than(0.0))
    sync: VllmSync = attrs.field(factory=VllmSync)
    image_transport: Literal["base64", "file"] = "base64"


@attrs.frozen
class EvalDetectionSection:
    """``rollout_matching.eval_detection`` (04 §4.9, 06) — read by the in-training evaluator."""

    enabled: bool = True
    metrics: EvalMetrics = attrs.field(
        factory=lambda: EvalMetrics(("coco",)), validator=non_empty_unique
    )
    score_source: Literal["coord_logprob", "constant"] = "coord_logprob"
    category_match: Literal["exact"] = "exact"
    max_samples: Optional[int] = attrs.field(default=None, validator=at_least(1))
    materialize_artifacts: bool = True


@attrs.frozen
class DebugDumpSection:
    """``rollout_matching.debug_dump`` (03 §3.8) — read by the stage-2 rollout dump writer."""

    enabled: bool = False
    max_per_step: int = attrs.field(default=4, validator=at_least(1))
    max_total: int = attrs.field(default=200, validator=at_least(1))


@attrs.frozen
class RolloutMatchingSection:
    """``rollout_matching.*`` (stage-2 variants; 05 §5.10) — the shared rollout namespace.

    ``rollout_backend`` and ``decode_batch_size`` are read by the backend factory (hf generate
    batch per rank, or max in-flight requests per rank per vLLM server); ``prompt_mismatch_policy``
    by the prompt-parity check; ``coord_decode_mode``, ``poly_ot`` and ``pipeline`` only under
    ``stage2_rollout_aligned``.
    """

    decode_batch_size: int = attrs.field(validator=at_least(1))
    decoding: DecodingSection
    rollout_backend: Literal["hf", "vllm"] = "hf"
    matching: MatchingSection = attrs.field(factory=MatchingSection)
    poly_ot: PolyOTSection = attrs.field(factory=PolyOTSection)
    coord_decode_mode: Literal["exp", "st"] = "exp"
    prompt_mismatch_policy: Literal["error", "drop"] = "error"
    pipeline: Optional[PipelineMapping] = None
    vllm: Optional[VllmSection] = None
    eval_detection: EvalDetectionSection = attrs.field(factory=EvalDetectionSection)
    debug_dump: DebugDumpSection = attrs.field(factory=DebugDumpSection)


# --------------------------------------------------------------------------------------------
# root


@attrs.frozen
class CoordexpConfig:
    """The whole validated config. Section presence follows the variant table of 05 §5.7."""

    model: ModelSection
    training: TrainingSection
    custom: CustomSection
    template: TemplateSection = attrs.field(factory=TemplateSection)
    stage1: Optional[Stage1Section] = None
    stage2_ab: Optional[Stage2ABSection] = None
    rollout_matching: Optional[RolloutMatchingSection] = None

    @property
    def variant(self) -> str:
        """``custom.trainer_variant``."""
        return self.custom.trainer_variant


TOP_LEVEL_SECTIONS: tuple[str, ...] = (
    "model",
    "template",
    "training",
    "custom",
    "stage1",
    "stage2_ab",
    "rollout_matching",
)
"""Top-level sections in reference order (``extends`` is consumed before structuring)."""
