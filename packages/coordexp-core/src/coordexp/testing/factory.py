"""Context factory for plugin authors: realistic random contexts without a model or tokenizer.

A synthetic sample is a prompt followed by a CoordJSON-shaped assistant sequence (``{"objects": [``,
records with desc tokens and 4 coord tokens, ``]}``, eos) whose token types and span kinds come
from the real builders of ``coordexp.core.tokens`` applied to synthetic character spans; adjacent
structural tokens are fused at random, so fused-token precedence (D26) is exercised. Rollout
samples mix matched and FP records in the prefix and append FN records.

Each sample owns its own sequence logits (``[length, V]``; row p predicts token p + 1). Packing
gathers them through the ``predict_positions`` of ``pack_rows``, exactly like an executor gathers
hidden states, so the same samples re-split into different packs (``repack``) give contexts whose
losses and gradients (with respect to ``SyntheticSample.seq_logits``) must agree.

Typical use::

    ctx = make_context(0, context="rollout")              # one packed context with leaf logits
    ctxset = make_context_set(0, channel="A", n_softctx_iter=2)
    samples = make_samples(0, context="gt", n_samples=5)
    packs = repack(samples, random_packing(len(samples), seed=1))
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch

from coordexp.core.context import ContextSet, SegmentInfo, TeacherForcingContext
from coordexp.core.errors import PipelineError
from coordexp.core.geometry import NUM_BINS
from coordexp.core.rows import SampleRows, pack_rows
from coordexp.core.tokens import (
    Channel,
    ContextName,
    SpanKind,
    Subset,
    span_kinds_for_tokens,
    token_types_for_tokens,
)

__all__ = [
    "SyntheticSample",
    "SyntheticVocab",
    "make_context",
    "make_context_set",
    "make_samples",
    "pack_samples",
    "random_packing",
    "repack",
    "resample_logits",
]

_ROLE_STRUCT, _ROLE_DESC, _ROLE_COORD, _ROLE_EOS = "struct", "desc", "coord", "eos"


@attrs.frozen
class SyntheticVocab:
    """A vocabulary with 1000 contiguous coord ids ``coord_id_start .. coord_id_start + 999``.

    ``eos_id`` defaults to the last id; every other id is a text id.
    """

    vocab_size: int = 1200
    coord_id_start: int = 100
    eos_id: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.coord_id_start < 0 or self.coord_id_start + NUM_BINS > self.vocab_size:
            raise PipelineError(
                f"SyntheticVocab: coord ids {self.coord_id_start}..{self.coord_id_start + NUM_BINS - 1} "
                f"must fit in vocab_size={self.vocab_size}"
            )
        if self.eos_id is None:
            object.__setattr__(self, "eos_id", self.vocab_size - 1)
        if not 0 <= self.eos_id < self.vocab_size or self.coord_mask[self.eos_id]:
            raise PipelineError(
                f"SyntheticVocab: eos_id {self.eos_id} must be a non-coord id below {self.vocab_size}"
            )
        if self.text_ids.size == 0:
            raise PipelineError("SyntheticVocab: no id is left for text tokens; enlarge vocab_size")

    @property
    def coord_ids(self) -> np.ndarray:
        """int64 ``[1000]``: the token id of each bin."""
        return np.arange(self.coord_id_start, self.coord_id_start + NUM_BINS, dtype=np.int64)

    @property
    def coord_mask(self) -> np.ndarray:
        """bool ``[V]``: True at coord ids."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[self.coord_id_start : self.coord_id_start + NUM_BINS] = True
        return mask

    @property
    def text_ids(self) -> np.ndarray:
        """int64: the ids that are neither coord ids nor eos."""
        keep = ~self.coord_mask
        keep[self.eos_id] = False
        return np.flatnonzero(keep).astype(np.int64)


@attrs.frozen(eq=False)
class SyntheticSample:
    """One synthetic sample: its target rows, full token sequence and sequence logits.

    Attributes:
        context: the context the rows were built for (gt and self_context share row layouts).
        rows: the sample's ``SampleRows`` (``prefix_fp`` rows included).
        token_ids: int64 ``[length]`` prompt + assistant ids.
        seq_logits: ``[length, V]`` leaf tensor; row p predicts ``token_ids[p + 1]``.
        vocab: the vocabulary the ids come from.
    """

    context: ContextName
    rows: SampleRows
    token_ids: np.ndarray
    seq_logits: torch.Tensor
    vocab: SyntheticVocab


class _AssistantBuilder:
    """Appends synthetic tokens with character spans and per-token metadata."""

    def __init__(self, rng: np.random.Generator, vocab: SyntheticVocab) -> None:
        self.rng = rng
        self.vocab = vocab
        self.text_ids = vocab.text_ids
        self.char_pos = 0
        self.tokens: list[dict] = []

    def _push(self, token_id: int, width: int, role: str, **meta: int) -> None:
        self.tokens.append(
            {
                "id": int(token_id),
                "start": self.char_pos,
                "end": self.char_pos + width,
                "role": role,
                "object": meta.get("object", -1),
                "slot": meta.get("slot", -1),
                "target": meta.get("target", -1),
            }
        )
        self.char_pos += width

    def text(self, max_tokens: int, role: str = _ROLE_STRUCT, obj: int = -1) -> None:
        for _ in range(int(self.rng.integers(1, max_tokens + 1))):
            self._push(self.rng.choice(self.text_ids), int(self.rng.integers(1, 6)), role, object=obj)

    def coord(self, token_bin: int, target: int, obj: int, slot: int) -> None:
        self._push(self.vocab.coord_ids[token_bin], 13, _ROLE_COORD, object=obj, slot=slot, target=target)

    def eos(self) -> None:
        # A special token covers no text: a zero-width span at the end (see coordexp.core.tokens).
        self._push(self.vocab.eos_id, 0, _ROLE_EOS)

    def record(self, obj: int, token_bins: np.ndarray, target_bins: np.ndarray | None, desc: list) -> None:
        """``{"desc": "<desc>", "bbox_2d": [c, c, c, c]}``; appends the desc value interval to ``desc``."""
        self.text(2, obj=obj)
        start = self.char_pos
        self.text(3, role=_ROLE_DESC, obj=obj)
        desc.append((start, self.char_pos))
        self.text(3, obj=obj)
        for slot in range(4):
            if slot:
                self.text(1, obj=obj)
            target = -1 if target_bins is None else int(target_bins[slot])
            self.coord(int(token_bins[slot]), target, obj, slot)
        self.text(1, obj=obj)

    def fuse(self, probability: float) -> None:
        """Merge random pairs of adjacent structural tokens into one token spanning both."""
        fused: list[dict] = []
        for token in self.tokens:
            previous = fused[-1] if fused else None
            if (
                previous is not None
                and previous["role"] == token["role"] == _ROLE_STRUCT
                and self.rng.random() < probability
            ):
                previous["end"] = token["end"]
                previous["id"] = int(self.rng.choice(self.text_ids))
                if previous["object"] != token["object"]:
                    previous["object"] = -1
            else:
                fused.append(dict(token))
        self.tokens = fused

    def column(self, key: str) -> np.ndarray:
        return np.array([token[key] for token in self.tokens], dtype=np.int64)


def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """int64 ``[count, 4]`` canonical boxes in bins (x1 ≤ x2, y1 ≤ y2)."""
    lo = rng.integers(0, NUM_BINS, size=(count, 2))
    hi = rng.integers(lo, NUM_BINS)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def _build_gt(builder: _AssistantBuilder, n_objects: int) -> tuple[dict, list, list]:
    rng = builder.rng
    boxes = _random_boxes(rng, n_objects)
    desc: list = []
    groups: list = []
    builder.text(3)  # {"objects": [
    for obj in range(n_objects):
        if obj:
            builder.text(1)  # ", "
        builder.record(obj, boxes[obj], boxes[obj], desc)
        groups.append((obj, boxes[obj], Subset.NONE))
    closure_start = builder.char_pos
    builder.text(1)  # ]}
    intervals = {SpanKind.CLOSURE: [(closure_start, builder.char_pos)]}
    builder.eos()
    intervals[SpanKind.EOS] = [(builder.char_pos, builder.char_pos + 1)]
    return intervals, desc, groups


def _build_rollout(builder: _AssistantBuilder, n_gt: int, max_fp: int) -> tuple[dict, list, list]:
    rng = builder.rng
    gt_boxes = _random_boxes(rng, n_gt)
    n_matched = int(rng.integers(0, n_gt + 1))
    gt_order = rng.permutation(n_gt)
    matched_gt, fn_gt = sorted(gt_order[:n_matched].tolist()), sorted(gt_order[n_matched:].tolist())
    predictions = [("matched", g) for g in matched_gt] + [("fp", -1)] * int(rng.integers(0, max_fp + 1))
    rng.shuffle(predictions)
    intervals: dict[SpanKind, list] = {
        kind: []
        for kind in (
            SpanKind.PREFIX_OPEN,
            SpanKind.PREFIX_MATCHED,
            SpanKind.PREFIX_FP,
            SpanKind.FN,
            SpanKind.CLOSURE,
            SpanKind.EOS,
        )
    }
    desc: list = []
    groups: list = []
    builder.text(3)
    intervals[SpanKind.PREFIX_OPEN].append((0, builder.char_pos))
    for index, (kind, gt) in enumerate(predictions):
        start = builder.char_pos
        if index:
            builder.text(1)
        if kind == "matched":
            noise = rng.integers(-6, 7, size=4)
            pred_bins = np.clip(gt_boxes[gt] + noise, 0, NUM_BINS - 1)
            builder.record(gt, pred_bins, gt_boxes[gt], desc)
            intervals[SpanKind.PREFIX_MATCHED].append((start, builder.char_pos))
            groups.append((gt, gt_boxes[gt], Subset.MATCHED))
        else:
            builder.record(-1, _random_boxes(rng, 1)[0], None, desc)
            intervals[SpanKind.PREFIX_FP].append((start, builder.char_pos))
    if fn_gt:
        start = builder.char_pos
        for index, gt in enumerate(fn_gt):
            if index or predictions:
                builder.text(1)
            builder.record(gt, gt_boxes[gt], gt_boxes[gt], desc)
            groups.append((gt, gt_boxes[gt], Subset.FN))
        intervals[SpanKind.FN].append((start, builder.char_pos))
    closure_start = builder.char_pos
    builder.text(1)
    intervals[SpanKind.CLOSURE].append((closure_start, builder.char_pos))
    builder.eos()
    intervals[SpanKind.EOS].append((builder.char_pos, builder.char_pos + 1))
    return intervals, desc, groups


def _make_sample(
    rng: np.random.Generator,
    sample_id: int,
    context: ContextName,
    vocab: SyntheticVocab,
    *,
    max_objects: int,
    max_fp: int,
    max_prompt_len: int,
    fuse_prob: float,
    requires_grad: bool,
    dtype: torch.dtype,
) -> SyntheticSample:
    builder = _AssistantBuilder(rng, vocab)
    n_objects = int(rng.integers(0, max_objects + 1))
    if context is ContextName.ROLLOUT:
        intervals, desc, groups = _build_rollout(builder, n_objects, max_fp)
        default = SpanKind.PREFIX_OPEN
    else:
        intervals, desc, groups = _build_gt(builder, n_objects)
        default = SpanKind.BODY
    builder.fuse(fuse_prob)

    ids = builder.column("id")
    starts, ends = builder.column("start"), builder.column("end")
    desc_intervals = np.array(desc, dtype=np.int64).reshape(-1, 2)
    token_type = token_types_for_tokens(ids, starts, ends, desc_intervals, vocab.coord_mask, vocab.eos_id)
    span_kind = span_kinds_for_tokens(
        starts,
        ends,
        {kind: np.array(v, dtype=np.int64).reshape(-1, 2) for kind, v in intervals.items()},
        default,
    )

    prompt_len = int(rng.integers(0, max_prompt_len + 1))
    length = prompt_len + ids.shape[0]
    first = max(1, prompt_len) - prompt_len  # with no prompt the first assistant token is no target
    positions = prompt_len + np.arange(first, ids.shape[0], dtype=np.int64)
    take = slice(first, None)
    coord_target = np.where(span_kind == int(SpanKind.PREFIX_FP), -1, builder.column("target"))[take]
    objects, slots = builder.column("object"), builder.column("slot")

    # Group rows: the rows of the 4 coord tokens of each grouped object (same object, coord role).
    row_of_token = np.arange(ids.shape[0]) - first
    grouped_coord = (slots >= 0) & (span_kind != int(SpanKind.PREFIX_FP))
    group_rows, group_target, group_subset = [], [], []
    for obj, target_bins, subset in groups:
        members = np.flatnonzero((objects == obj) & grouped_coord)
        group_rows.append(row_of_token[members[np.argsort(slots[members])]])
        group_target.append(target_bins)
        group_subset.append(int(subset))

    rows = SampleRows(
        segment=SegmentInfo(
            sample_id=sample_id,
            length=length,
            prompt_len=prompt_len,
            lengths={"assistant_len": int(ids.shape[0])},
            counters={"objects": float(n_objects), "groups": float(len(groups))},
        ),
        positions=positions,
        target_ids=ids[take],
        token_type=token_type[take],
        span_kind=span_kind[take],
        object_index=objects[take],
        slot=slots[take],
        coord_target=coord_target,
        group_rows=np.array(group_rows, dtype=np.int64).reshape(-1, 4),
        group_target=np.array(group_target, dtype=np.int64).reshape(-1, 4),
        group_subset=np.array(group_subset, dtype=np.int64),
    )
    token_ids = np.concatenate([rng.choice(vocab.text_ids, size=prompt_len), ids]).astype(np.int64)
    seq_logits = _sequence_logits(int(rng.integers(0, 2**31 - 1)), token_ids, vocab, requires_grad, dtype)
    return SyntheticSample(
        context=context, rows=rows, token_ids=token_ids, seq_logits=seq_logits, vocab=vocab
    )


def _sequence_logits(
    seed: int, token_ids: np.ndarray, vocab: SyntheticVocab, requires_grad: bool, dtype: torch.dtype
) -> torch.Tensor:
    """``[length, V]`` Gaussian logits with a bump on the next token (a half-trained model)."""
    generator = torch.Generator().manual_seed(seed)
    logits = (
        torch.randn((token_ids.shape[0], vocab.vocab_size), generator=generator, dtype=torch.float64) * 2.0
    )
    bump = torch.rand(max(0, token_ids.shape[0] - 1), generator=generator, dtype=torch.float64) * 8.0
    next_ids = torch.as_tensor(token_ids[1:])
    logits[torch.arange(next_ids.shape[0]), next_ids] += bump
    return logits.to(dtype).requires_grad_(requires_grad)


def make_samples(
    seed: int,
    *,
    context: ContextName | str = ContextName.GT,
    n_samples: int = 3,
    max_objects: int = 4,
    max_fp: int = 2,
    max_prompt_len: int = 8,
    fuse_prob: float = 0.3,
    vocab: SyntheticVocab | None = None,
    requires_grad: bool = True,
    dtype: torch.dtype = torch.float32,
) -> list[SyntheticSample]:
    """``n_samples`` random samples for ``context`` (deterministic in ``seed``).

    Each gt sample has 0..``max_objects`` boxes; each rollout sample has 0..``max_objects`` GT
    objects (a random part matched, the rest FN) and 0..``max_fp`` FP records. Prompts have
    0..``max_prompt_len`` tokens.
    """
    name = ContextName(context)
    chosen_vocab = vocab if vocab is not None else SyntheticVocab()
    if n_samples < 1:
        raise PipelineError(f"make_samples: n_samples must be >= 1, got {n_samples}")
    rng = np.random.default_rng(seed)
    return [
        _make_sample(
            rng,
            index,
            name,
            chosen_vocab,
            max_objects=max_objects,
            max_fp=max_fp,
            max_prompt_len=max_prompt_len,
            fuse_prob=fuse_prob,
            requires_grad=requires_grad,
            dtype=dtype,
        )
        for index in range(n_samples)
    ]


def resample_logits(
    samples: Sequence[SyntheticSample], seed: int, *, requires_grad: bool = True
) -> list[SyntheticSample]:
    """The same samples with fresh sequence logits (e.g. the self_context iteration of gt samples)."""
    rng = np.random.default_rng(seed)
    return [
        attrs.evolve(
            sample,
            seq_logits=_sequence_logits(
                int(rng.integers(0, 2**31 - 1)),
                sample.token_ids,
                sample.vocab,
                requires_grad,
                sample.seq_logits.dtype,
            ),
        )
        for sample in samples
    ]


def _default_variant(context: ContextName, coord_decode_mode: str) -> str:
    if context is ContextName.GT and coord_decode_mode == "exp":
        return "stage1"
    return "stage2_two_channel"


def pack_samples(
    samples: Sequence[SyntheticSample],
    *,
    context: ContextName | str | None = None,
    trainer_variant: str | None = None,
    coord_decode_mode: str = "exp",
    with_logits: bool = True,
    row_mult: Sequence[float] | None = None,
    gap: int = 0,
) -> TeacherForcingContext:
    """Pack ``samples`` back to back (``gap`` unused tokens between them) into one context.

    The logits are gathered from the samples' ``seq_logits`` through ``predict_positions``, so
    gradients flow back to each sample's leaf tensor. ``context`` defaults to the samples' own
    (gt samples may also be packed as ``self_context``); the channel follows the context.
    """
    if not samples:
        raise PipelineError("pack_samples: at least one sample is required")
    name = ContextName(context) if context is not None else samples[0].context
    vocab = samples[0].vocab
    lengths = np.array([sample.rows.length for sample in samples], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths + gap)[:-1]))
    ctx, predict_positions = pack_rows(
        [sample.rows for sample in samples],
        offsets.tolist(),
        context=name,
        channel=Channel.B if name is ContextName.ROLLOUT else Channel.A,
        trainer_variant=trainer_variant or _default_variant(name, coord_decode_mode),
        coord_ids=vocab.coord_ids,
        coord_decode_mode=coord_decode_mode,
        row_mult=row_mult,
    )
    if not with_logits:
        return ctx
    parts: list[torch.Tensor] = []
    for sample in samples:
        parts.append(sample.seq_logits)
        if gap:
            parts.append(sample.seq_logits.new_zeros((gap, vocab.vocab_size)))
    return ctx.with_logits(torch.cat(parts)[predict_positions])


def random_packing(n_samples: int, seed: int, max_packs: int | None = None) -> list[list[int]]:
    """A random partition of ``range(n_samples)`` into non-empty packs, each in random order."""
    rng = np.random.default_rng(seed)
    limit = n_samples if max_packs is None else max(1, min(max_packs, n_samples))
    n_packs = int(rng.integers(1, limit + 1))
    order = rng.permutation(n_samples)
    cuts = (
        np.sort(rng.choice(np.arange(1, n_samples), size=n_packs - 1, replace=False)) if n_packs > 1 else []
    )
    return [part.tolist() for part in np.split(order, cuts)]


def repack(
    samples: Sequence[SyntheticSample], packs: Sequence[Sequence[int]], **pack_kwargs: object
) -> list[TeacherForcingContext]:
    """One context per pack; ``packs`` lists sample indices (each sample used at most once)."""
    used = [index for pack in packs for index in pack]
    if len(set(used)) != len(used) or any(not 0 <= i < len(samples) for i in used):
        raise PipelineError(
            f"repack: packs must use distinct sample indices below {len(samples)}, got {packs!r}"
        )
    return [pack_samples([samples[i] for i in pack], **pack_kwargs) for pack in packs if pack]


def make_context(
    seed: int,
    *,
    context: ContextName | str = ContextName.GT,
    n_samples: int = 2,
    max_objects: int = 4,
    max_fp: int = 2,
    vocab_size: int = 1200,
    coord_id_start: int = 100,
    with_logits: bool = True,
    requires_grad: bool = True,
    coord_decode_mode: str = "exp",
    trainer_variant: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TeacherForcingContext:
    """One packed context of ``n_samples`` random segments; its logits are a fresh leaf tensor."""
    samples = make_samples(
        seed,
        context=context,
        n_samples=n_samples,
        max_objects=max_objects,
        max_fp=max_fp,
        vocab=SyntheticVocab(vocab_size=vocab_size, coord_id_start=coord_id_start),
        requires_grad=False,
        dtype=dtype,
    )
    ctx = pack_samples(samples, trainer_variant=trainer_variant, coord_decode_mode=coord_decode_mode)
    if not with_logits:
        return ctx.without_logits()
    return ctx.with_logits(ctx.logits.detach().clone().requires_grad_(requires_grad))


def make_context_set(
    seed: int,
    *,
    channel: Channel | str = Channel.A,
    n_softctx_iter: int = 1,
    n_samples: int = 2,
    max_objects: int = 4,
    max_fp: int = 2,
    vocab_size: int = 1200,
    coord_id_start: int = 100,
    with_logits: bool = True,
    requires_grad: bool = True,
    coord_decode_mode: str = "exp",
    trainer_variant: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> ContextSet:
    """The contexts of one micro-batch, routed per spec 02 §2.2.

    Channel A: ``gt`` (and ``self_context`` on the same samples with other logits when
    ``n_softctx_iter ≥ 2``). Channel B: ``rollout``. Each context's logits are a fresh leaf.
    """
    chosen = Channel(channel)
    names = (
        [ContextName.ROLLOUT]
        if chosen is Channel.B
        else [ContextName.GT] + ([ContextName.SELF_CONTEXT] if n_softctx_iter >= 2 else [])
    )
    variant = trainer_variant
    if variant is None:
        single_gt = chosen is Channel.A and n_softctx_iter == 1 and coord_decode_mode == "exp"
        variant = "stage1" if single_gt else "stage2_two_channel"
    samples = make_samples(
        seed,
        context=names[0],
        n_samples=n_samples,
        max_objects=max_objects,
        max_fp=max_fp,
        vocab=SyntheticVocab(vocab_size=vocab_size, coord_id_start=coord_id_start),
        requires_grad=False,
        dtype=dtype,
    )
    contexts: dict[ContextName, TeacherForcingContext] = {}
    for index, name in enumerate(names):
        source = samples if index == 0 else resample_logits(samples, seed + index, requires_grad=False)
        ctx = pack_samples(source, context=name, trainer_variant=variant, coord_decode_mode=coord_decode_mode)
        contexts[name] = (
            ctx.with_logits(ctx.logits.detach().clone().requires_grad_(requires_grad))
            if with_logits
            else ctx.without_logits()
        )
    return ContextSet.for_channel(chosen, contexts, n_softctx_iter=n_softctx_iter)
