"""Benchmark: one Stage-1 training step (forward + backward through the declared pipeline) with
selective logits vs full-sequence logits, on the real Qwen3 vocabulary (152,669 rows with the
coord tokens) and image-heavy packs.

* `selective_logits` — `SelectiveLogitsLM`: base model to the last hidden state, `lm_head` on the
  supervised rows only → `[N, V]` (what the executor runs);
* `full_logits` (baseline) — the model's normal forward, `[T, V]` logits for every position, then
  the same rows gathered → `[N, V]` and the same pipeline.

Both run the same packed micro-batch (`--samples` synthetic detection records with
`--image-size`² images, packed padding-free) through `configs/demo/stage1.yaml`'s pipeline. Each
variant runs in a fresh subprocess: a warm-up step, then `--repeats` timed steps; `time_ratio`
compares the fastest step of each (the one least disturbed by other processes; medians are
reported too). Memory is the process's peak RSS during the timed steps above its resident set
before them (`VmHWM` reset via `/proc/self/clear_refs`), plus the whole-process peak, plus the
analytic size of the logits. Prints one JSON object.

    python bench/stage1_step.py [--samples 3] [--image-size 640] [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINE_CONFIG = REPO_ROOT / "configs" / "demo" / "stage1.yaml"
VARIANTS = ("selective_logits", "full_logits")
TARGETS = {"peak_mem_ratio": 0.5, "time_ratio": 0.8}
STATS = (
    "step_s_min",
    "step_s_median",
    "step_s_all",
    "step_peak_rss_mib",
    "process_peak_rss_mib",
    "loss",
    "grad_norm",
)


# ---------------------------------------------------------------------------------------------
# memory probes (Linux /proc)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") <= _status_kib("VmRSS") + 1024


# ---------------------------------------------------------------------------------------------
# setup (parent process)


def prepare(workdir: Path, samples: int, image_size: int, seed: int) -> None:
    from coordexp.train.data.commands import cmd_synth
    from coordexp.train.models import create_model

    if not (workdir / "model" / "config.json").is_file():
        pixels = image_size * image_size
        create_model(
            "tiny", "qwen3", seed, workdir / "model", min_pixels=32 * 32, max_pixels=pixels, overwrite=True
        )
    if not (workdir / "data" / "train.jsonl").is_file():
        status = cmd_synth(
            workdir / "data",
            n_train=samples,
            n_val=1,
            seed=seed,
            image_sizes=[(image_size, image_size)],
            max_objects=8,
            out=io.StringIO(),
        )
        if status != 0:
            raise RuntimeError("the synthetic benchmark data failed validation")


# ---------------------------------------------------------------------------------------------
# one variant (worker process)


def _build(workdir: Path, image_size: int):
    import torch

    from coordexp.core.pipeline.runner import PipelineRunner, reduce_denominators
    from coordexp.train.config import load_config
    from coordexp.train.data.jsonl import load_jsonl
    from coordexp.train.data.prompts import resolve_prompt
    from coordexp.train.encode.vocab import TokenizerInfo
    from coordexp.train.models import load_model_and_processor
    from coordexp.train.stages.gt_packs import GTEncoder, build_pack

    pixels = image_size * image_size
    model, processor = load_model_and_processor(workdir / "model", min_pixels=32 * 32, max_pixels=pixels)
    model.train()
    info = TokenizerInfo.build(processor.tokenizer, model.get_input_embeddings().num_embeddings)
    data = load_jsonl(
        workdir / "data" / "train.jsonl",
        max_pixels=pixels,
        trainer_variant="stage1",
        field_order="desc_first",
    )
    prompt = resolve_prompt("default", "sorted", "desc_first")
    encoder = GTEncoder(data, info=info, processor=processor, prompt=prompt, field_order="desc_first", seed=0)
    encoded = [encoder.encode(i, 0) for i in range(len(data))]
    mb = build_pack(
        encoded,
        rope_model=model,
        info=info,
        cap=sum(s.length for s in encoded),
        context="gt",
        channel="A",
        trainer_variant="stage1",
        coord_decode_mode="exp",
    )
    runner = PipelineRunner(load_config(str(PIPELINE_CONFIG), []).pipeline)
    denominators = reduce_denominators(runner.denominators([mb.meta]), None)
    image_tokens = int((mb.model_inputs["input_ids"] == model.config.image_token_id).sum())
    return torch, model, mb, runner, denominators, image_tokens


def run_variant(variant: str, workdir: Path, image_size: int, threads: int, repeats: int) -> dict:
    torch, model, mb, runner, denominators, image_tokens = _build(workdir, image_size)
    torch.set_num_threads(threads)
    from coordexp.train.executor.selective import SelectiveLogitsLM, full_sequence_logits

    selective = SelectiveLogitsLM(model)
    inputs, rows = dict(mb.model_inputs), mb.predict_positions

    def step() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        if variant == "selective_logits":
            logits = selective(rows, **inputs)
        else:
            logits = full_sequence_logits(model, **inputs).index_select(0, rows)
        loss, _ = runner.run(mb.meta.with_logits({"gt": logits}), denominators)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        return float(loss.detach()), float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    step()  # warm-up: lazy initialisation, allocator caches, parameter .grad storage
    rss_before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    times, loss, grad_norm = [], math.nan, math.nan
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss, grad_norm = step()
        times.append(time.perf_counter() - t0)
    peak = _status_kib("VmHWM")
    vocab = model.get_output_embeddings().weight.shape[0]
    logits_rows = int(rows.numel()) if variant == "selective_logits" else mb.n_tokens
    return {
        "variant": variant,
        "step_s_min": min(times),
        "step_s_median": statistics.median(times),
        "step_s_all": times,
        "step_peak_rss_mib": (peak - rss_before) / 1024 if reset else None,
        "process_peak_rss_mib": peak / 1024,
        "peak_reset": reset,
        "loss": loss,
        "grad_norm": grad_norm,
        "logits_shape": [logits_rows, vocab],
        "logits_bytes": logits_rows * vocab * 4,
        "tokens": mb.n_tokens,
        "supervised_rows": int(rows.numel()),
        "image_tokens": image_tokens,
        "segments": mb.n_segments,
        "vocab_size": vocab,
    }


# ---------------------------------------------------------------------------------------------


def _worker(variant: str, args: argparse.Namespace, workdir: Path) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", variant, "--workdir", str(workdir),
        "--image-size", str(args.image_size), "--threads", str(args.threads), "--repeats", str(args.repeats),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="records packed into the micro-batch")
    parser.add_argument("--image-size", type=int, default=640, help="square image side (multiple of 32)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    parser.add_argument("--threads", type=int, default=cores, help="torch threads per variant")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep data + model here (default: temp)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_variant(args.worker, args.workdir, args.image_size, args.threads, args.repeats)))
        return

    with tempfile.TemporaryDirectory(prefix="coordexp-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        prepare(workdir, args.samples, args.image_size, args.seed)
        sel, full = (_worker(v, args, workdir) for v in VARIANTS)

    loss_rel = abs(sel["loss"] - full["loss"]) / max(abs(full["loss"]), 1e-12)
    grad_rel = abs(sel["grad_norm"] - full["grad_norm"]) / max(abs(full["grad_norm"]), 1e-12)
    time_ratio = _ratio(sel["step_s_min"], full["step_s_min"])
    mem_ratio = _ratio(sel["step_peak_rss_mib"], full["step_peak_rss_mib"])
    report = {
        "bench": "stage1_step",
        "variant": "selective_logits",
        "baseline": "full_logits",
        "vocab_size": sel["vocab_size"],
        "samples": sel["segments"],
        "image_size": args.image_size,
        "tokens": sel["tokens"],
        "image_tokens": sel["image_tokens"],
        "supervised_rows": sel["supervised_rows"],
        "time_ratio": time_ratio,
        "peak_mem_ratio": mem_ratio,
        "process_peak_rss_ratio": _ratio(sel["process_peak_rss_mib"], full["process_peak_rss_mib"]),
        "time_ratio_median": _ratio(sel["step_s_median"], full["step_s_median"]),
        "logits_bytes": {"selective_logits": sel["logits_bytes"], "full_logits": full["logits_bytes"]},
        "logits_bytes_ratio": _ratio(sel["logits_bytes"], full["logits_bytes"]),
        "losses_match": loss_rel <= 1e-5 and grad_rel <= 1e-4,
        "loss_rel_diff": loss_rel,
        "grad_norm_rel_diff": grad_rel,
        "targets": TARGETS,
        "targets_met": None
        if mem_ratio is None
        else bool(mem_ratio <= TARGETS["peak_mem_ratio"] and time_ratio <= TARGETS["time_ratio"]),
        "selective_logits": {k: sel[k] for k in STATS},
        "full_logits": {k: full[k] for k in STATS},
        "threads": args.threads,
        "python": platform.python_version(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
