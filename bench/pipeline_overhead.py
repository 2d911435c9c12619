"""Benchmark: overhead of the plugin pipeline vs one hand-fused loss function.

The full default pipeline of ``stage2_rollout_aligned`` (token_ce + bbox_geo + coord_reg +
coord_diag, resolved from the installed entry points, run by the real ``PipelineRunner`` with
denominators, metric objects and a ``StepAggregator`` reduction) is compared with a single
hand-written function computing the same losses and coord_diag metrics on the same rollout
context: vocabulary 151,936 + 1000 coord tokens, about 2k supervised rows (prefix, matched,
FP-excluded, FN, closure, eos rows; ~25 % coord rows). Both run forward and backward.

Two baselines, both hand-fused: ``hand_fused`` computes the full-vocabulary logsumexp with
``torch.logsumexp`` (what a single hand-written function would do); ``hand_fused_same_kernels``
takes it from the context's row-blocked kernel (``ctx.full_lse``), so the ``*_same_kernels``
ratios isolate the framework itself (masks, memoized views, module dispatch, metric objects,
runner checks, the step aggregator). Prints one JSON object:

* ``time_ratio`` / ``time_ratio_same_kernels``: best(pipeline) / best(baseline) wall time over
  interleaved repetitions (variant order alternates; interference from other processes only adds
  time, so the best repetition is the stable estimate on a shared machine); ``*_median`` and
  ``cpu_time_*`` (process CPU time) alongside.
* ``peak_mem_ratio`` / ``peak_mem_ratio_same_kernels``: peak memory above the resident logits,
  pipeline / baseline. On CUDA: ``torch.cuda.max_memory_allocated``. On CPU (no allocator
  statistics): the peak resident set size sampled every 0.5 ms by a thread reading
  ``/proc/self/statm`` (tensors of this size are ``mmap``-ed and returned on free, so RSS tracks
  live tensor memory).
* ``full_vocab_allocations``: per variant, the ops (forward and backward) that allocate an output
  of at least ``N × V / 2`` elements, recorded by a ``TorchDispatchMode`` (in-place ops and views
  excluded); ``extra_full_vocab_allocations`` must not be positive.
* ``work_ratio_same_kernels``: elements written by all dispatched ops, pipeline / same-kernel
  baseline (timing-free, so unaffected by other load on the machine).
* ``values_match``: loss and every shared metric agree to rtol 1e-5, and gradients to 1e-4 of
  the largest gradient entry (float32 summation order differs).

    python bench/pipeline_overhead.py [--rows 2000] [--reps 7] [--device cpu|cuda] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from coordexp.core.context import ContextSet, TeacherForcingContext
from coordexp.core.geometry import canonicalize_boxes, ciou_loss, smooth_l1
from coordexp.core.metrics import StepAggregator
from coordexp.core.pipeline.manifests import PIPELINE_PATHS
from coordexp.core.pipeline.runner import PipelineRunner
from coordexp.core.pipeline.spec import resolve_pipeline
from coordexp.core.plugins.protocol import Strategy
from coordexp.core.plugins.registry import ModuleRegistry
from coordexp.core.rows import pack_rows
from coordexp.core.tokens import SpanKind, Subset, TokenType
from coordexp.testing.factory import SyntheticVocab, make_samples

TEXT_VOCAB = 151_936
VOCAB = TEXT_VOCAB + 1000
COORD_START = 151_669  # Qwen3 ids of <|coord_0|>.. after expanding the tokenizer
EOS_ID = 151_645  # <|im_end|>
VARIANT = "stage2_rollout_aligned"
SMALL = SyntheticVocab(vocab_size=1200, coord_id_start=100)


# ------------------------------------------------------------------------------------- inputs


def _remap(ids: np.ndarray) -> np.ndarray:
    """Synthetic small-vocabulary ids → the real layout (coord ids and eos moved, text kept)."""
    out = ids.copy()
    coord = (ids >= SMALL.coord_id_start) & (ids < SMALL.coord_id_start + 1000)
    out[coord] = COORD_START + ids[coord] - SMALL.coord_id_start
    out[ids == SMALL.eos_id] = EOS_ID
    return out


def build_context(
    rows_wanted: int, seed: int, device: torch.device
) -> tuple[TeacherForcingContext, torch.Tensor]:
    """A metadata-only rollout context with about ``rows_wanted`` rows, and its logits ``[N, V]``."""
    samples, total, batch = [], 0, 0
    while total < rows_wanted:
        for sample in make_samples(
            seed + batch, context="rollout", n_samples=8, max_objects=10, max_fp=3, vocab=SMALL
        ):
            if total >= rows_wanted:
                break
            rows = sample.rows
            samples.append(attrs.evolve(rows, target_ids=_remap(rows.target_ids)))
            total += int((rows.span_kind != int(SpanKind.PREFIX_FP)).sum())
        batch += 1
    offsets = np.concatenate(([0], np.cumsum([s.length for s in samples])[:-1])).tolist()
    ctx, _ = pack_rows(
        samples,
        offsets,
        context="rollout",
        channel="B",
        trainer_variant=VARIANT,
        coord_ids=np.arange(COORD_START, COORD_START + 1000),
        coord_decode_mode="exp",
        device=device,
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn((ctx.n_rows, VOCAB), generator=generator, device=device) * 2.0
    rows = torch.arange(ctx.n_rows, device=device)
    logits[rows, ctx.target_ids] += 6.0  # a half-trained model: the target stands out
    coord = ctx.coord_row_index
    for offset, bump in ((-2, 2.0), (-1, 3.5), (1, 3.5), (2, 2.0)):  # coordinate mass around the target bin
        bins = (ctx.coord_targets + offset).clamp(0, 999)
        logits[coord, ctx.coord_ids[bins]] += bump
    return ctx, logits


# ------------------------------------------------------------------------------------- variants


def pipeline_step(
    runner: PipelineRunner, meta: TeacherForcingContext, leaf: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimizer-step's worth of pipeline work on one micro-batch, as the executor does it."""
    metadata = ContextSet.for_channel("B", {"rollout": meta})
    aggregator = StepAggregator(runner.step_keys("B", ["rollout"]), device=leaf.device)
    denominators = runner.denominators([metadata])
    ctxset = ContextSet.for_channel("B", {"rollout": meta.with_logits(leaf)})
    loss, metrics = runner.run(ctxset, denominators)
    loss.backward()
    aggregator.add(metrics)
    return loss.detach(), aggregator.reduce()


def hand_fused(
    meta: TeacherForcingContext, logits: torch.Tensor, shared_lse_kernel: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """token_ce + bbox_geo + coord_reg (defaults) and the coord_diag metrics, in one function.

    ``shared_lse_kernel``: take the full-vocabulary logsumexp from the context's row-blocked
    kernel (``ctx.full_lse``) instead of ``torch.logsumexp``, so that only the framework differs.
    """
    f32 = torch.float32
    token_type, span_kind = meta.token_type, meta.span_kind
    coord_ids, targets = meta.coord_ids, meta.target_ids
    out: dict[str, torch.Tensor] = {}

    # token_ce: default weights are 1.0 on every text row except matched-prefix desc.
    lse = meta.with_logits(logits).full_lse if shared_lse_kernel else torch.logsumexp(logits.float(), dim=-1)
    prefix = (span_kind == int(SpanKind.PREFIX_OPEN)) | (span_kind == int(SpanKind.PREFIX_MATCHED))
    text = (token_type != int(TokenType.COORD)) & ~(prefix & (token_type == int(TokenType.DESC)))
    weight = text.to(f32) * meta.row_mult
    rows = torch.nonzero(weight > 0).reshape(-1)
    ce = weight[rows] * (lse[rows] - logits[rows, targets[rows]].float())
    is_desc = token_type[rows] == int(TokenType.DESC)
    token_den = weight.sum()
    out["loss/rollout/struct_ce"] = ce[~is_desc].sum() / token_den
    out["loss/rollout/desc_ce"] = ce[is_desc].sum() / token_den

    # coord_reg: soft CE (σ = 2), W1 and the coord gate on the coord rows.
    coord_rows = torch.nonzero((token_type == int(TokenType.COORD)) & (meta.coord_target >= 0)).reshape(-1)
    bins = meta.coord_target[coord_rows]
    row_weight = meta.row_mult[coord_rows].clone()
    groups = meta.bbox_groups
    position = torch.cumsum((token_type == int(TokenType.COORD)) & (meta.coord_target >= 0), 0) - 1
    row_weight[position[groups.rows]] = groups.weight[:, None].expand(-1, 4)
    coord_logits = logits[coord_rows[:, None], coord_ids[None, :]].float().clamp(-1e4, 1e4)
    log_p = torch.log_softmax(coord_logits, dim=-1)
    p = log_p.exp()
    grid = torch.arange(1000, device=logits.device, dtype=f32)
    q = torch.softmax(-0.5 * ((grid[None, :] - bins[:, None].to(f32)) / 2.0) ** 2, dim=-1)
    coord_den = row_weight.sum()
    out["loss/rollout/coord_soft_ce"] = (row_weight * -(q * log_p).sum(-1)).sum() / coord_den
    w1 = (torch.cumsum(p, -1) - torch.cumsum(q, -1))[:, :999].abs().sum(-1) / 999
    out["loss/rollout/coord_w1"] = (row_weight * w1).sum() / coord_den
    coord_lse = torch.logsumexp(coord_logits, dim=-1)
    gate = (lse[coord_rows] - coord_lse).clamp_min(0)
    out["loss/rollout/coord_gate"] = (row_weight * gate).sum() / coord_den

    # bbox_geo: decoded expectation boxes vs GT, SmoothL1 (β = 0.02) and CIoU.
    expected = p @ (grid / 999)
    pred = canonicalize_boxes(expected[position[groups.rows]])
    gt = canonicalize_boxes(groups.target.to(f32) / 999)
    g = groups.weight * (groups.subset != int(Subset.FP)).to(f32)
    out["loss/rollout/bbox_smoothl1"] = (g * smooth_l1(pred, gt, 0.02)).sum() / g.sum()
    out["loss/rollout/bbox_ciou"] = (g * ciou_loss(pred, gt)).sum() / g.sum()
    loss = sum(out.values())

    with torch.no_grad():  # coord_diag
        live = meta.row_mult[coord_rows] > 0
        lp, pp, s, t = log_p[live], p[live], coord_logits[live], bins[live]
        n = float(t.numel())
        p_gt = pp.gather(1, t[:, None]).squeeze(1)
        out["coord_diag/rollout/coord_rows_count"] = torch.tensor(n)
        out["coord_diag/rollout/coord_vocab_mass_mean"] = (
            torch.exp((coord_lse[live] - lse[coord_rows][live]).clamp_max(0)).sum() / n
        )
        out["coord_diag/rollout/p_gt_mean"] = p_gt.sum() / n
        out["coord_diag/rollout/acc_top1_rate"] = (s.argmax(-1) == t).to(f32).sum() / n
        out["coord_diag/rollout/acc_topk_rate"] = (s.topk(5, -1).indices == t[:, None]).any(-1).to(
            f32
        ).sum() / n
        out["coord_diag/rollout/margin_mean"] = (
            s.max(-1).values - s.gather(1, t[:, None]).squeeze(1)
        ).sum() / n
        out["coord_diag/rollout/expected_bin_mae_mean"] = (pp @ grid - t.to(f32)).abs().sum() / n
        out["coord_diag/rollout/w1_to_delta_mean"] = (pp * (grid[None] - t[:, None].to(f32)).abs()).sum() / n
        text_rows = torch.nonzero((token_type != int(TokenType.COORD)) & (meta.row_mult > 0)).reshape(-1)
        text_coord = torch.logsumexp(
            logits[text_rows[:, None], coord_ids[None, :]].float().clamp(-1e4, 1e4), -1
        )
        mass = torch.exp((text_coord - lse[text_rows]).clamp_max(0))
        out["coord_diag/rollout/text_coord_vocab_mass_mean"] = mass.sum() / float(text_rows.numel())
        del lp
    loss.backward()
    return loss.detach(), {k: v.detach() for k, v in out.items()}


# ------------------------------------------------------------------------------------- measurement


class PeakMemory:
    """Peak memory above the level at ``__enter__``: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: torch.device, period_s: float = 0.0005) -> None:
        self.device = device
        self.period_s = period_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss() - self._base)
            time.sleep(self.period_s)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._rss() - self._base)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nest of tuples, lists and dicts (op arguments and results)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class DispatchCounter(TorchDispatchMode):
    """Counts every dispatched op (forward and backward), the elements they write, and the ops
    that allocate an output of at least ``threshold`` elements.

    An output is a new allocation when its storage is shared with no input: in-place ops,
    ``out=`` variants and views do not allocate. Elements written count every tensor output.
    """

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold
        self.ops = 0
        self.elements = 0
        self.full_vocab: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        seen = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        result = func(*args, **kwargs)
        self.ops += 1
        for output in _tensors(result):
            self.elements += output.numel()
            if output.numel() >= self.threshold and output.untyped_storage().data_ptr() not in seen:
                self.full_vocab.append(str(func.overloadpacket.__name__))
        return result


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds over all threads, result)``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)

    meta, logits = build_context(args.rows, args.seed, device)
    strategy = Strategy(trainer_variant=VARIANT, packing="dynamic", max_length=8192)
    resolved = resolve_pipeline(
        None, variant=VARIANT, path=PIPELINE_PATHS[VARIANT], strategy=strategy, registry=ModuleRegistry()
    )
    runner = PipelineRunner(resolved)
    leaf = logits.requires_grad_(True)

    def run_pipeline() -> tuple[torch.Tensor, dict[str, float]]:
        leaf.grad = None
        return pipeline_step(runner, meta, leaf)

    def run_fused() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        leaf.grad = None
        return hand_fused(meta, leaf)

    def run_fused_same_kernels() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        leaf.grad = None
        return hand_fused(meta, leaf, shared_lse_kernel=True)

    variants = {
        "pipeline": run_pipeline,
        "hand_fused": run_fused,
        "hand_fused_same_kernels": run_fused_same_kernels,
    }

    # Warm-up, values and gradients.
    pipe_loss, reduced = run_pipeline()
    pipe_grad = leaf.grad.clone()
    fused_loss, fused_metrics = run_fused()
    grad_diff = float((leaf.grad - pipe_grad).abs().max())
    grad_scale = float(pipe_grad.abs().max())
    run_fused_same_kernels()
    grad_diff = max(grad_diff, float((leaf.grad - pipe_grad).abs().max()))
    del pipe_grad
    leaf.grad = None
    mismatched = [
        key
        for key, value in fused_metrics.items()
        if key not in reduced or not math.isclose(reduced[key], float(value), rel_tol=1e-5, abs_tol=1e-6)
    ]
    values_match = (
        math.isclose(float(pipe_loss), float(fused_loss), rel_tol=1e-5)
        and grad_diff <= 1e-4 * max(grad_scale, 1e-12)
        and not mismatched
    )

    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_times: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, int] = dict.fromkeys(variants, 0)
    for rep in range(args.reps):
        order = list(variants.items())
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            leaf.grad = None
            with PeakMemory(device) as peak:
                elapsed, cpu_elapsed, _ = _timed(fn, device)
            times[name].append(elapsed)
            cpu_times[name].append(cpu_elapsed)
            peaks[name] = max(peaks[name], peak.peak_bytes)
    leaf.grad = None

    counts: dict[str, DispatchCounter] = {}
    threshold = logits.numel() // 2
    for name, fn in variants.items():
        with DispatchCounter(threshold) as counter:
            fn()
        counts[name] = counter
        leaf.grad = None

    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    cpu_best = {name: min(values) for name, values in cpu_times.items()}
    result = {
        "bench": "pipeline_overhead",
        "baseline": "hand_fused",
        "variant": VARIANT,
        "modules": resolved.describe(),
        "device": str(device),
        "rows": meta.n_rows,
        "coord_rows": int(meta.coord_rows.sum()),
        "bbox_groups": meta.bbox_groups.n_groups,
        "vocab": VOCAB,
        "reps": args.reps,
        "pipeline_s": [round(t, 4) for t in times["pipeline"]],
        "hand_fused_s": [round(t, 4) for t in times["hand_fused"]],
        "hand_fused_same_kernels_s": [round(t, 4) for t in times["hand_fused_same_kernels"]],
        "time_ratio": round(best["pipeline"] / best["hand_fused"], 4),
        "time_ratio_same_kernels": round(best["pipeline"] / best["hand_fused_same_kernels"], 4),
        "time_ratio_median": round(median["pipeline"] / median["hand_fused"], 4),
        "time_ratio_median_same_kernels": round(median["pipeline"] / median["hand_fused_same_kernels"], 4),
        "cpu_time_ratio": round(cpu_best["pipeline"] / cpu_best["hand_fused"], 4),
        "cpu_time_ratio_same_kernels": round(cpu_best["pipeline"] / cpu_best["hand_fused_same_kernels"], 4),
        "time_method": (
            "interleaved repetitions (order alternates); ratios of the best repetition (interference only adds "
            "time), medians alongside; wall clock (perf_counter) and process CPU time (process_time, all threads)"
        ),
        "pipeline_peak_mib": round(peaks["pipeline"] / 2**20, 1),
        "hand_fused_peak_mib": round(peaks["hand_fused"] / 2**20, 1),
        "hand_fused_same_kernels_peak_mib": round(peaks["hand_fused_same_kernels"] / 2**20, 1),
        "peak_mem_ratio": round(peaks["pipeline"] / max(peaks["hand_fused"], 1), 4),
        "peak_mem_ratio_same_kernels": round(peaks["pipeline"] / max(peaks["hand_fused_same_kernels"], 1), 4),
        "peak_mem_method": (
            "torch.cuda.max_memory_allocated above the resident logits"
            if device.type == "cuda"
            else "max RSS above the resident logits, sampled every 0.5 ms from /proc/self/statm "
            "(torch CPU has no allocator stats; tensors this large are mmap-ed and returned on free)"
        ),
        "ops_dispatched": {name: c.ops for name, c in counts.items()},
        "elements_written": {name: c.elements for name, c in counts.items()},
        "work_ratio_same_kernels": round(
            counts["pipeline"].elements / counts["hand_fused_same_kernels"].elements, 4
        ),
        "work_method": (
            "TorchDispatchMode over forward+backward: elements written by every dispatched op; a "
            "timing-free measure of the extra work the framework does over the same kernels"
        ),
        "full_vocab_allocations": {name: len(c.full_vocab) for name, c in counts.items()},
        "full_vocab_allocation_ops": {name: c.full_vocab for name, c in counts.items()},
        "full_vocab_method": (
            f"the same TorchDispatchMode: ops whose output has >= N*V/2 = {threshold} elements in a "
            "storage shared with no input (in-place ops and views excluded)"
        ),
        "extra_full_vocab_allocations": len(counts["pipeline"].full_vocab)
        - len(counts["hand_fused"].full_vocab),
        "extra_full_vocab_allocations_same_kernels": (
            len(counts["pipeline"].full_vocab) - len(counts["hand_fused_same_kernels"].full_vocab)
        ),
        "values_match": values_match,
        "loss": round(float(pipe_loss), 6),
        "max_abs_grad_diff": grad_diff,
        "max_abs_grad": grad_scale,
        "mismatched_metrics": mismatched,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
