"""`coordexp train CONFIG`: the training recipe, read top to bottom.

1. Accelerate + rank facts + seeds          5. optimizer, LR schedule, resume
2. model, processor, tokenizer facts         6. run manifest + init log line
3. data (validated before anything trains)   7. the loop (executor.Trainer)
4. stage + pipeline runner                   8. final export (HF checkpoint + processor)

Stage-2 variants plug in at step 4; everything else is shared.
"""

from __future__ import annotations

import datetime
import logging
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import torch

from coordexp.core.errors import ConfigError, PipelineError
from coordexp.core.pipeline.runner import PipelineRunner
from coordexp.core.plugins.manager import get_plugin_manager
from coordexp.train.config.loader import ResolvedConfig
from coordexp.train.data.jsonl import load_jsonl
from coordexp.train.data.prompts import prompt_sha256, resolve_prompt
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.executor.dist import DistContext
from coordexp.train.executor.optim import build_optimizer
from coordexp.train.executor.selective import SelectiveLogitsLM
from coordexp.train.executor.trainer import DecideTotal, LoopSettings, StepResult, Trainer
from coordexp.train.models.factory import load_model_and_processor
from coordexp.train.run import checkpoint as ckpt
from coordexp.train.run.logsink import MetricsLog
from coordexp.train.run.manifest import (
    check_resume_compatible,
    distribution_versions,
    git_revision,
    read_manifest,
    sha256_file,
    tokenizer_sha256,
    write_manifest,
)
from coordexp.train.run.rng import capture_rng_state, restore_rng_state, seed_everything
from coordexp.train.run.schedule import DEFAULT_DECAY_RATIO, Horizon, Schedule, build_scheduler
from coordexp.train.stages.gt_packs import GTEncoder
from coordexp.train.stages.stage1 import Stage1

log = logging.getLogger("coordexp.train")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@attrs.frozen
class TrainResult:
    output_dir: Path
    history: tuple[StepResult, ...]
    final_checkpoint: Path | None
    manifest: dict[str, Any]


def run_training(
    resolved: ResolvedConfig,
    *,
    force_resume: bool = False,
    progress: bool = True,
    decide_total: DecideTotal | None = None,
) -> TrainResult:
    """Run the config's training. `decide_total` (executor/trainer.py) fixes the step count at the end
    of warm-up, at most the configured one; the count is kept in the checkpoints (resume continues
    it) and in the run manifest (`horizon`)."""
    cfg = resolved.config
    training = cfg.training
    if cfg.variant != "stage1":
        raise ConfigError(
            "custom.trainer_variant",
            f"{cfg.variant} training needs the stage-2 trainers, which this build does not include yet; "
            "use stage1",
        )

    # 1. Accelerate, ranks, seeds -----------------------------------------------------------
    accelerator = _accelerator(training)
    dist = DistContext(accelerator.process_index, accelerator.num_processes, accelerator.device)
    seed_everything(training.seed)
    output_dir = Path(training.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # 2. model, processor, tokenizer facts ------------------------------------------------
    model, processor = load_model_and_processor(
        cfg.model.model,
        dtype=DTYPES[cfg.model.dtype],
        attn_implementation=cfg.model.attn_implementation,
        min_pixels=cfg.template.min_pixels,
        max_pixels=cfg.template.max_pixels,
    )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    info = TokenizerInfo.build(processor.tokenizer, model.get_input_embeddings().num_embeddings)

    # 3. data -------------------------------------------------------------------------------
    custom = cfg.custom
    prompt = resolve_prompt(custom.prompt_variant, custom.object_ordering, custom.object_field_order)
    load = dict(
        max_pixels=cfg.template.max_pixels,
        trainer_variant=cfg.variant,
        field_order=custom.object_field_order,
        ordering=custom.object_ordering,
    )
    train_set = load_jsonl(custom.train_jsonl, **load)
    val_set = load_jsonl(custom.val_jsonl, **load) if custom.val_jsonl else None

    # 4. stage + pipeline runner ------------------------------------------------------------
    packing = bool(training.packing)
    per_device = training.per_device_train_batch_size
    if packing and per_device != 1:
        raise ConfigError(
            "training.per_device_train_batch_size",
            "with training.packing: true each micro-batch is one pack; set it to 1 "
            "(training.effective_batch_size counts packs)",
        )
    packs_per_step = training.effective_batch_size if packing else training.effective_batch_size // per_device
    encoder_args = dict(info=info, processor=processor, prompt=prompt, field_order=custom.object_field_order, seed=training.seed)
    stage = Stage1(
        GTEncoder(train_set, **encoder_args),
        val_encoder=GTEncoder(val_set, **encoder_args) if val_set is not None else None,
        info=info,
        rope_model=model,
        max_length=cfg.template.max_length,
        max_pixels=cfg.template.max_pixels,
        packing=packing,
        per_device_batch=per_device,
        packs_per_step=packs_per_step,
        world_size=dist.world_size,
        drop_last=training.dataloader_drop_last,
        seed=training.seed,
        cache_dir=output_dir / "cache",
        device=dist.device,
    )
    plan_differs = dist.broadcast_object(stage.plan_sha256) != stage.plan_sha256  # spec 06 §6.7 cross-check
    if dist.max_flag(float(plan_differs)) > 0:
        raise PipelineError(
            f"rank {dist.rank}: the packing plan differs between ranks (this rank "
            f"{stage.plan_sha256[:16]}); every rank must read the same data, tokenizer and config"
        )
    runner = PipelineRunner(resolved.pipeline, world_size=dist.world_size, warn=log.warning)
    max_steps = training.max_steps or max(1, math.floor(training.num_train_epochs * stage.schedule.steps_per_epoch))

    # 5. optimizer, schedule, resume --------------------------------------------------------
    optimizer = build_optimizer(
        model,
        learning_rate=training.learning_rate,
        vit_lr=training.vit_lr,
        aligner_lr=training.aligner_lr,
        weight_decay=training.weight_decay,
    )
    schedule = Schedule(
        kind=training.lr_scheduler,
        warmup_steps=training.warmup_steps,
        decay_ratio=DEFAULT_DECAY_RATIO if training.lr_decay_ratio is None else training.lr_decay_ratio,
    )
    horizon = Horizon(max_steps, schedule=schedule)
    scheduler = build_scheduler(optimizer, schedule, horizon)
    manifest = _manifest(resolved, info, prompt, train_set, val_set, stage, dist)
    start_step = 0
    resume_dir = _resume_dir(training.resume_from, output_dir)
    if resume_dir is not None:
        if (output_dir / "run_manifest.json").is_file():
            check_resume_compatible(read_manifest(output_dir), manifest, force=force_resume)
        model_state, state, meta = ckpt.load_checkpoint(resume_dir)
        check_resume_compatible(meta, manifest, force=force_resume)
        loaded = model.load_state_dict(model_state, strict=False)
        aliases = set(model.state_dict()) - set(ckpt.unique_state_dict(model))  # tied weights: saved once
        missing = sorted(set(loaded.missing_keys) - aliases)
        if loaded.unexpected_keys or missing:
            raise ckpt.CheckpointError(
                f"{resume_dir}: weights do not fit the model (missing {missing[:5]}, unexpected "
                f"{sorted(loaded.unexpected_keys)[:5]}); resume with the model the run started from"
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"][dist.rank] if dist.rank < len(state["rng"]) else state["rng"][0])
        start_step = int(meta["step"])
        saved_horizon = meta.get("horizon") or {}
        if saved_horizon.get("fixed_at") is not None:  # a count fixed in the saved run's warm-up
            horizon.restore(int(saved_horizon["total_steps"]), int(saved_horizon["fixed_at"]))
        saved_plan = meta.get("data_position", {}).get("plan_sha256")
        if saved_plan != stage.plan_sha256:
            log.warning(
                "resuming at step %d with another packing plan (checkpoint %s, now %s): the data, lengths, "
                "max_length or world size changed, so the rest of the epoch does not continue the old order",
                start_step, str(saved_plan)[:16], stage.plan_sha256[:16],
            )
    wrapped = SelectiveLogitsLM(model)
    wrapped, optimizer = accelerator.prepare(wrapped, optimizer)

    # 6. run manifest + init log ------------------------------------------------------------
    hooks = get_plugin_manager()
    if dist.is_main:
        manifest.update(hooks.run_manifest_fields(manifest))
        write_manifest(output_dir, manifest)
        built = MappingProxyType({**resolved.pipeline.payload(), "checksum": resolved.pipeline.checksum})
        hooks.call_each("coordexp_pipeline_built", manifest=built)  # the hookspec's payload + checksum
    log.info(
        "pipeline checksum=%s variant=%s modules=%s config=%s run_name=%s seed=%s",
        resolved.pipeline.checksum, cfg.variant, resolved.pipeline.describe(), resolved.source_path,
        training.run_name, training.seed,
    )

    # 7. the loop ---------------------------------------------------------------------------
    metrics_log = MetricsLog(training.logging_dir, enabled=dist.is_main, start_step=start_step)

    def save(step: int) -> None:
        rng_states = _gather_rng(dist)
        if dist.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states}
            meta = {k: manifest[k] for k in ("pipeline_checksum", "strategy_sha256", "config_sha256")}
            meta["data_position"] = {"epoch": stage.schedule.epoch_of(step), "plan_sha256": stage.plan_sha256}
            meta["horizon"] = horizon.as_dict()
            ckpt.save_checkpoint(output_dir, step, model_state=ckpt.unique_state_dict(model), state=state, meta=meta, keep_last=3)

    detection = _detection_eval_step(cfg, model, processor, info, prompt, val_set, dist, output_dir)

    def evaluate(step: int) -> dict[str, float]:
        from coordexp.train.executor.evaluate import teacher_forced_eval

        metrics = teacher_forced_eval(stage, wrapped, runner, dist, accelerator)
        if detection is not None:
            metrics.update(detection(step))
        return metrics

    trainer = Trainer(
        accelerator=accelerator,
        model=wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        stage=stage,
        runner=runner,
        dist=dist,
        settings=LoopSettings(
            max_steps=max_steps,
            max_grad_norm=training.max_grad_norm,
            logging_steps=training.logging_steps,
            eval_steps=training.eval_steps if training.eval_strategy == "steps" and val_set is not None else None,
            save_steps=training.save_steps if training.save_strategy == "steps" else None,
            prefetch_steps=training.prefetch_steps,
        ),
        log=metrics_log,
        hooks=hooks,
        save=save if training.save_strategy == "steps" else None,
        evaluate=evaluate,
        progress=progress,
        horizon=horizon,
        decide_total=decide_total,
    )
    history = trainer.train(start_step)
    metrics_log.close()
    if horizon.fixed_at is not None:
        manifest["horizon"] = horizon.as_dict()
        if dist.is_main:
            write_manifest(output_dir, manifest)

    # 8. final export -----------------------------------------------------------------------
    final = None
    accelerator.wait_for_everyone()
    if dist.is_main:
        final = output_dir / "final"
        model.save_pretrained(final, safe_serialization=True)
        processor.save_pretrained(final)
    accelerator.wait_for_everyone()
    return TrainResult(output_dir, tuple(history), final, manifest)


def _detection_eval_step(cfg, model, processor, info, prompt, val_set, dist, output_dir):
    """The opt-in in-training detection eval (`stage1.eval_detection`), or None."""
    section = cfg.stage1.eval_detection if cfg.stage1 is not None else None
    if section is None or not section.enabled or val_set is None:
        return None
    from coordexp.train.eval.step import DetectionEvalStep
    from coordexp.train.infer.predict import PredictSettings, Predictor

    predictor = Predictor(
        model,
        processor,
        info,
        prompt,
        PredictSettings(
            max_new_tokens=section.max_new_tokens,
            decode_batch_size=section.decode_batch_size,
            coord_pick=section.coord_pick,
            score_source=section.score_source,
            field_order=cfg.custom.object_field_order,
        ),
    )
    return DetectionEvalStep(
        predictor=predictor,
        dataset=val_set,
        max_samples=section.max_samples,
        metrics=tuple(section.metrics),
        score_source=section.score_source,
        dist=dist,
        output_dir=output_dir / "eval" if section.materialize_artifacts else None,
    )


def _accelerator(training: Any) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    return Accelerator(
        mixed_precision=training.mixed_precision,
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=training.ddp_timeout_s)),
            DistributedDataParallelKwargs(find_unused_parameters=False),
        ],
    )


def _resume_dir(resume_from: str | None, output_dir: Path) -> Path | None:
    if resume_from is None:
        return None
    if resume_from in ("latest", "auto"):
        found = ckpt.latest_checkpoint(output_dir)
        if found is None and resume_from == "latest":
            raise ConfigError("training.resume_from", f"no checkpoint under {output_dir / 'checkpoints'}")
        return found
    path = Path(resume_from)
    if not path.is_dir():
        raise ConfigError("training.resume_from", f"{path} is not a checkpoint directory")
    return path


def _gather_rng(dist: DistContext) -> list[dict[str, Any]]:
    state = capture_rng_state()
    if not dist.distributed:
        return [state]
    import torch.distributed as tdist

    gathered: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(gathered, state)
    return gathered


def _manifest(resolved, info, prompt, train_set, val_set, stage, dist) -> dict[str, Any]:
    cfg = resolved.config
    coord_ids = info.coord_vocab.coord_ids
    return {
        "config_path": resolved.source_path,
        "run_name": cfg.training.run_name,
        "seed": cfg.training.seed,
        "config": resolved.canonical_json,
        "config_sha256": resolved.sha256,
        "pipeline": {"entries": resolved.pipeline.payload(), "describe": resolved.pipeline.describe()},
        "pipeline_checksum": resolved.pipeline.checksum,
        "strategy": resolved.strategy.payload(),
        "strategy_sha256": resolved.strategy.sha256(),
        "versions": distribution_versions(),
        "git": git_revision(Path(__file__).resolve().parent),  # the code that trains
        "world_size": dist.world_size,
        "tokenizer": {
            "sha256": tokenizer_sha256(info.tokenizer),
            "vocab_size": len(info.tokenizer),
            "coord_id_min": int(coord_ids.min()),
            "coord_id_max": int(coord_ids.max()),
        },
        "prompt_sha256": prompt_sha256(prompt),
        "data": {
            "train_sha256": sha256_file(train_set.path),
            "val_sha256": sha256_file(val_set.path) if val_set is not None else None,
            "train_counters": dict(train_set.counters),
            "plan_sha256": stage.plan_sha256,
            "packs": len(stage.packs),
        },
        "score_source": None,
    }
