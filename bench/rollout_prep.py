"""Benchmark: rollout preparation throughput (parse + trim + match + targets), one CPU core.

Each synthetic sample has 30 GT objects and a 30-object rollout (24 jittered copies of GT objects
and 6 random ones, shuffled) in canonical CoordJSON, tokenized with the REAL bundled tiny tokenizer
of coordexp.train (byte-level BPE + coord tokens), closed and ended by ``<|im_end|>``. Per variant:

* ``stage2_two_channel``: boxes only (bbox-only geometry policy, no OT);
* ``stage2_rollout_aligned``: half boxes, half polygons (poly OT targets for matched pairs).

Prints one JSON object with samples/s per variant: ``samples_per_s`` divides by the process CPU
time (the process is pinned to one core, so this is single-core throughput even on a shared
machine), ``samples_per_wall_s`` by wall-clock time. Target: >= 500 samples/s on one core for both
variants (``meets_target``).

Named baseline, same run: ``tokenize_rollout`` — the tokenizer encoding each sample's rollout text
once (the raw HF call, no memo), on the same core. ``time_ratio`` = preparation CPU time / baseline
CPU time: how many tokenizer passes over the rollout one preparation costs. The two run in
alternating chunks of :data:`CHUNK` samples (each side's CPU time summed), so load that comes and
goes on a shared machine slows both alike and the ratio moves much less than samples/s. Before
timing, the cyclic garbage collector is run and the objects alive then (samples, tokenizer tables)
are frozen out of later collections, so that a full collection triggered by the bench's own data
cannot land in one variant's timed window.

``--batch N`` (default 16) prepares N samples per call: N > 1 is one
:meth:`RolloutPreparer.prepare_many` call per N consecutive samples, as Stage-2 prepares a decode
batch (the batch's maskIoU rasters and poly OT in one pass each; identical targets), 1 is a
:meth:`RolloutPreparer.prepare` call per sample (the per-sample loop). The alternating chunks are then the smallest multiple of N that holds
:data:`CHUNK` samples, and the per-sample latencies (``ms_per_sample_*``) are each call's time
divided by the samples it prepared.

    python bench/rollout_prep.py [--samples 300] [--seed 0] [--batch 16]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.rollout.backend import RolloutOutput
from coordexp.rollout.codec import TableCodec
from coordexp.rollout.coordsplit import coord_tokens_split_text
from coordexp.rollout.prepare import PrepareConfig, RolloutPreparer
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.models import build_tiny_tokenizer, vocab_token_bytes

N_OBJECTS = 30
TARGET_SAMPLES_PER_S = 500
N_COPIES = 24
CHUNK = 10  # samples per alternating preparation / baseline chunk
FIELD_ORDER = "desc_first"
DESCS = ("person", "car", "traffic light", "dog", "chair", "cup", "bicycle", "potted plant")


def raw_encoder() -> Callable[[str], list[int]]:
    """The bundled tiny tokenizer's plain-text encode (HF ``tokenizers``, no special tokens added)."""
    backend = build_tiny_tokenizer().backend_tokenizer

    def encode(text: str) -> list[int]:
        return backend.encode_batch_fast([text], add_special_tokens=False)[0].ids

    return encode


def make_codec() -> TableCodec:
    tokenizer = build_tiny_tokenizer()
    info = TokenizerInfo.build(tokenizer)
    return TableCodec(
        raw_encoder(),
        vocab_token_bytes(tokenizer),
        info.coord_vocab,
        info.eos_id,
        info.stop_ids,
        splits_at_coord_tokens=coord_tokens_split_text(tokenizer.backend_tokenizer),
    )


def _object(rng: np.random.Generator, poly: bool) -> CoordObject:
    desc = DESCS[int(rng.integers(len(DESCS)))]
    w, h = (int(v) for v in rng.integers(20, 250, size=2))
    x, y = int(rng.integers(0, 999 - w)), int(rng.integers(0, 999 - h))
    if not poly:
        return CoordObject(desc, "bbox_2d", (x, y, x + w, y + h))
    # a convex hexagon, clockwise on screen from its top vertex
    xs = (x + w // 2, x + w, x + w, x + w // 2, x, x)
    ys = (y, y + h // 4, y + 3 * h // 4, y + h, y + 3 * h // 4, y + h // 4)
    return CoordObject(desc, "poly", tuple(v for pair in zip(xs, ys, strict=True) for v in pair))


def _jitter(rng: np.random.Generator, obj: CoordObject) -> CoordObject:
    noisy = np.clip(np.asarray(obj.values) + rng.integers(-8, 9, size=len(obj.values)), 0, 999)
    if obj.geom_key == "bbox_2d":
        noisy = np.concatenate([np.minimum(noisy[:2], noisy[2:]), np.maximum(noisy[:2], noisy[2:])])
    return CoordObject(obj.desc, obj.geom_key, tuple(int(v) for v in noisy))


def make_sample(rng: np.random.Generator, codec: TableCodec, with_polys: bool):
    gts = [_object(rng, poly=with_polys and bool(k % 2)) for k in range(N_OBJECTS)]
    copies = [_jitter(rng, gts[i]) for i in rng.choice(N_OBJECTS, N_COPIES, replace=False)]
    extras = [_object(rng, poly=with_polys and bool(rng.integers(2))) for _ in range(N_OBJECTS - N_COPIES)]
    preds = copies + extras
    preds = [preds[i] for i in rng.permutation(N_OBJECTS)]
    ids = codec.encode(serialize(preds, FIELD_ORDER)) + [codec.eos_id]
    output = RolloutOutput(
        prompt_ids=[1],
        response_ids=ids,
        finish_reason="stop",
        max_new_tokens=4096,
        eos_token_ids=codec.stop_ids,
    )
    return output, gts



def _timed(work: Callable[[], None]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``work()``."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu0, time.perf_counter() - wall0


def run(variant: str, codec: TableCodec, samples: int, seed: int, batch: int = 1) -> dict:
    """Prepare ``samples`` synthetic rollouts of ``variant``, ``batch`` per call; the tokenizer
    baseline runs in alternating chunks (:data:`CHUNK` samples, rounded up to a multiple of
    ``batch``) with the preparation, each side's CPU time summed, so that load changes on a shared
    machine hit both sides of ``time_ratio`` alike."""
    with_polys = variant == "stage2_rollout_aligned"
    preparer = RolloutPreparer(codec, PrepareConfig(variant, FIELD_ORDER))
    encode = raw_encoder()
    rng = np.random.default_rng(seed)
    data = [make_sample(rng, codec, with_polys) for _ in range(samples)]
    texts = [b"".join(codec.token_bytes(output.response_ids)).decode("utf-8") for output, _ in data]
    for (output, gts), text in zip(data[:5], texts[:5], strict=True):
        preparer.prepare(output, gts)  # warm-up
        encode(text)
    if batch > 1:
        preparer.prepare_many(*zip(*data[:batch], strict=True))  # warm-up of the batched path
    # The samples above and the tokenizer tables are ~400k GC-tracked objects: a full collection
    # they trigger costs ~0.2 s, and where it lands (inside one variant's timed chunks or not) moved
    # the polygon variant's samples/s by ~25 % between identical runs. Collect now and keep these
    # objects out of later collections; collections caused by preparing itself still count.
    gc.collect()
    gc.freeze()
    times, matched, tokens = [], [], []

    def prepare_calls(chunk: list) -> None:
        for start in range(0, len(chunk), batch):
            part = chunk[start : start + batch]
            t0 = time.perf_counter()
            if batch == 1:
                prepared = [preparer.prepare(*part[0])]
            else:
                prepared = preparer.prepare_many(*zip(*part, strict=True))
            elapsed = time.perf_counter() - t0
            times.extend([elapsed / len(part)] * len(part))
            matched.extend(p.counters.matched for p in prepared)
            tokens.extend(len(output.response_ids) for output, _ in part)

    def encode_chunk(chunk: list[str]) -> None:
        for text in chunk:
            encode(text)

    chunk = batch * math.ceil(CHUNK / batch)
    cpu_s = wall_s = baseline_s = 0.0
    for start in range(0, samples, chunk):
        cpu, wall = _timed(functools.partial(prepare_calls, data[start : start + chunk]))
        cpu_s, wall_s = cpu_s + cpu, wall_s + wall
        baseline_s += _timed(functools.partial(encode_chunk, texts[start : start + chunk]))[0]
    gc.unfreeze()
    ms = sorted(1e3 * t for t in times)
    return {
        "samples_per_s": round(len(ms) / cpu_s, 1),
        "baseline_samples_per_s": round(len(ms) / baseline_s, 1),
        "time_ratio": round(cpu_s / baseline_s, 2),
        "samples_per_wall_s": round(len(ms) / wall_s, 1),
        "ms_per_sample_mean": round(statistics.fmean(ms), 3),
        "ms_per_sample_p50": round(ms[len(ms) // 2], 3),
        "ms_per_sample_p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "rollout_tokens_mean": round(statistics.fmean(tokens), 1),
        "matched_per_sample_mean": round(statistics.fmean(matched), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch",
        type=int,
        default=16,
        help="samples per preparation call: N > 1 = prepare_many() on N (a decode batch, as Stage-2 "
        "prepares it; default 16), 1 = prepare() per sample",
    )
    args = parser.parse_args()
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    codec = make_codec()
    results = {
        v: run(v, codec, args.samples, args.seed, args.batch)
        for v in ("stage2_two_channel", "stage2_rollout_aligned")
    }
    print(
        json.dumps(
            {
                "bench": "rollout_prep",
                "objects_per_rollout": N_OBJECTS,
                "gt_per_sample": N_OBJECTS,
                "samples": args.samples,
                "batch": args.batch,
                "tokenizer": "bundled tiny BPE (coordexp.train.models.build_tiny_tokenizer)",
                "baseline": "tokenize_rollout",
                "variants": results,
                "samples_per_s_min": min(r["samples_per_s"] for r in results.values()),
                "target_samples_per_s": TARGET_SAMPLES_PER_S,
                "meets_target": min(r["samples_per_s"] for r in results.values()) >= TARGET_SAMPLES_PER_S,
                "cores": 1,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
