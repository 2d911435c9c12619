"""`coordexp infer SOURCE --data VAL.jsonl --out DIR`: batched greedy detection → gt_vs_pred.jsonl.

SOURCE is a run directory (its `run_manifest.json` fixes the prompt identity and `final/` is the
model), a training config YAML (its trained `final/` when present, else `model.model`), or a bare
checkpoint directory (prompt settings from the arguments). With a run directory, prompt arguments
that disagree with the manifest raise (spec 06 §6.1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from coordexp.core.errors import ConfigError
from coordexp.train.data.jsonl import load_jsonl
from coordexp.train.data.prompts import resolve_prompt
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.eval.records import GT_VS_PRED_FILE, write_records
from coordexp.train.infer.predict import PredictSettings, Predictor
from coordexp.train.models.factory import load_model_and_processor


@attrs.frozen
class PromptIdentity:
    variant: str = "default"
    ordering: str = "sorted"
    field_order: str = "desc_first"
    max_pixels: int | None = None


@attrs.frozen
class InferSource:
    model_dir: Path
    prompt: PromptIdentity
    trainer_variant: str | None


def resolve_source(source: str | Path, requested: dict[str, Any]) -> InferSource:
    """Find the model and the prompt identity of `source` (see the module docstring)."""
    path = Path(source)
    given = {k: v for k, v in requested.items() if v is not None}
    if path.is_dir() and (path / "run_manifest.json").is_file():
        config = json.loads(json.loads((path / "run_manifest.json").read_text())["config"])
        identity = _identity(config)
        for key, value in given.items():
            if getattr(identity, key) != value:
                raise ConfigError(
                    f"--{key.replace('_', '-')}",
                    f"{value!r} conflicts with the run manifest's {getattr(identity, key)!r}",
                )
        model_dir = path / "final"
        if not model_dir.is_dir():
            raise ConfigError(str(path), "the run has no final/ checkpoint yet (training did not finish)")
        return InferSource(model_dir, identity, config["custom"]["trainer_variant"])
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from coordexp.train.config import load_config

        cfg = load_config(path).config
        final = Path(cfg.training.output_dir) / "final"
        identity = attrs.evolve(_identity({"custom": attrs.asdict(cfg.custom), "template": attrs.asdict(cfg.template)}), **given)
        return InferSource(final if final.is_dir() else Path(cfg.model.model), identity, cfg.variant)
    if path.is_dir() and (path / "config.json").is_file():
        return InferSource(path, PromptIdentity(**given), None)
    raise ConfigError(
        str(path), "expected a run directory (run_manifest.json), a config YAML or a checkpoint directory (config.json)"
    )


def _identity(config: dict[str, Any]) -> PromptIdentity:
    custom = config["custom"]
    return PromptIdentity(
        variant=custom.get("prompt_variant", "default"),
        ordering=custom.get("object_ordering", "sorted"),
        field_order=custom["object_field_order"],
        max_pixels=config.get("template", {}).get("max_pixels"),
    )


def run_inference(
    source: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    max_new_tokens: int = 512,
    decode_batch_size: int = 4,
    coord_pick: str = "token",
    max_samples: int | None = None,
    score_source: str = "coord_logprob",
    prompt_overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Write `{out_dir}/gt_vs_pred.jsonl` for the first `max_samples` records of `data`, decoded
    greedily; `coord_pick` `expectation` emits the expected bin at coord steps
    (:mod:`coordexp.rollout.coord_pick`)."""
    resolved = resolve_source(source, prompt_overrides or {})
    identity = resolved.prompt
    model, processor = load_model_and_processor(resolved.model_dir, max_pixels=identity.max_pixels)
    info = TokenizerInfo.build(processor.tokenizer, model.get_input_embeddings().num_embeddings)
    prompt = resolve_prompt(identity.variant, identity.ordering, identity.field_order)
    dataset = load_jsonl(
        data,
        max_pixels=identity.max_pixels,
        trainer_variant=resolved.trainer_variant,
        field_order=identity.field_order,
        ordering="sorted",
    )
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    geometry = "bbox_only" if resolved.trainer_variant == "stage2_two_channel" else "any"
    predictor = Predictor(
        model,
        processor,
        info,
        prompt,
        PredictSettings(
            max_new_tokens=max_new_tokens,
            decode_batch_size=decode_batch_size,
            coord_pick=coord_pick,
            score_source=score_source,
            geometry_policy=geometry,
            field_order=identity.field_order,
        ),
    )
    records = []
    bar = _progress(n, progress)
    for start in range(0, n, decode_batch_size):
        ids = list(range(start, min(n, start + decode_batch_size)))
        records.extend(predictor.predict([dataset[i] for i in ids], ids))
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GT_VS_PRED_FILE
    write_records(path, records)
    return path


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="infer", unit="img", dynamic_ncols=True)

