"""One rollout end to end: generated ids → teacher-forced target (spec 03 §3.2–3.8, 04 §4.6).

:meth:`RolloutPreparer.prepare` runs, for one sample:

1. **prompt parity** (03 §3.1): the backend's prompt ids vs the local generation prompt;
   ``error`` raises, ``drop`` returns a dropped sample counted in ``prompt_mismatch_dropped``;
2. **token-aligned parse** (03 §3.2): byte-based spans → hard stop (first eos-type id or fused
   ``<|im_end|>``) → ``parse(text, "rollout", geometry_policy)`` → coord extraction from the ids;
   ``geometry_policy`` is ``bbox_only`` for ``stage2_two_channel`` and ``any`` for
   ``stage2_rollout_aligned``;
3. **suffix-only trim** (03 §3.3, :mod:`coordexp.rollout.trim`); an invalid rollout keeps no
   predictions and gets the canonical prefix;
4. **matching** (03 §3.4) of the valid records (appearance order) against the GT (GT order);
5. **poly OT targets** (03 §3.5, ``stage2_rollout_aligned`` only) for matched pairs with a poly on
   either side; bbox–bbox pairs use the GT bins. An :class:`~coordexp.rollout.ot.OTFailure` excludes
   the pair: the prediction becomes a masked FP span and its GT is appended as FN;
6. **FN append, ``Y_train`` and meta** (03 §3.6–3.7, :mod:`coordexp.rollout.targets`);
7. **overlength fallback** (04 §4.6, D34): ``prompt_len + train_len > template.max_length`` →
   rebuilt as an invalid rollout with ``overlength_fallback``;
8. **counters** (03 §3.8, :class:`~coordexp.rollout.counters.SampleCounters`).

Only the tokens before the hard stop influence the result (E3).

The steps run in phases: steps 1–3 (``_front``), the matching of step 4 (``_pair_many``), the
OT of step 5 (``_ot_many``), and the rest of step 5 with steps 6–8 (``_finish``).
:meth:`RolloutPreparer.prepare_many` runs phase 1 for every sample, the matching of all valid
rollouts in one :func:`~coordexp.rollout.matching.match_many` call (their mask IoUs rasterized
together), the poly OT of all samples' pairs in one :func:`~coordexp.rollout.ot.ot_targets_many`
call, then the last phase per sample;
:meth:`RolloutPreparer.prepare` is the same for a batch of one. A pair's OT targets are
independent of its batch mates to the bit, so batching changes nothing but the cost.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from coordexp.core.coordjson.aligned import TokenText, extract_coord_positions, hard_stop, token_char_spans
from coordexp.core.coordjson.parse import ParseResult, parse
from coordexp.core.coordjson.serialize import FIELD_ORDERS, CoordObject
from coordexp.core.errors import ConfigError, DataContractError, PipelineError
from coordexp.rollout.backend import RolloutOutput
from coordexp.rollout.codec import TextCodec, bytes_and_lengths, check_codec
from coordexp.rollout.counters import SampleCounters
from coordexp.rollout.decoding import DecodeParams
from coordexp.rollout.maskiou import GeometryBatch
from coordexp.rollout.matching import MatchingConfig, MatchResult, match_many
from coordexp.rollout.ot import OTFailure, OTTarget, PolyOTConfig, ot_targets_many
from coordexp.rollout.parity import check_policy, check_prompt_parity
from coordexp.rollout.record import DecodeInfo, MatchSummary, ParseCounts, RolloutFlags, RolloutTarget
from coordexp.rollout.targets import BBOX_KEY, POLY_KEY, PrefixElement, PrefixTable, build_rollout_target
from coordexp.rollout.trim import (
    OVERLENGTH,
    RETOKENIZE_FAIL,
    TrimResult,
    fallback_prefix_ids,
    invalid_trim,
    trim_rollout,
)

TWO_CHANNEL = "stage2_two_channel"
ROLLOUT_ALIGNED = "stage2_rollout_aligned"
GEOMETRY_POLICY_OF_VARIANT = {TWO_CHANNEL: "bbox_only", ROLLOUT_ALIGNED: "any"}
PROMPT_MISMATCH = "prompt_mismatch"


def _check_variant(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in GEOMETRY_POLICY_OF_VARIANT:
        raise ConfigError(
            "custom.trainer_variant",
            f"rollouts need one of {sorted(GEOMETRY_POLICY_OF_VARIANT)}, got {value!r}",
        )


def _check_field_order(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in FIELD_ORDERS:
        raise ConfigError("custom.object_field_order", f"expected one of {FIELD_ORDERS}, got {value!r}")


def _check_max_length(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
    ):
        raise ConfigError("template.max_length", f"expected null or an int >= 1, got {value!r}")


@attrs.frozen
class PrepareConfig:
    """What :class:`RolloutPreparer` needs from the run config.

    ``trainer_variant`` (``custom.trainer_variant``) picks the geometry policy and whether poly OT
    runs; ``field_order`` (``custom.object_field_order``) is the FN serialization order and the
    order ``field_order_mismatch`` is counted against; ``max_length`` (``template.max_length``,
    None = unchecked) triggers the overlength fallback; ``prompt_mismatch_policy`` is
    ``rollout_matching.prompt_mismatch_policy``.
    """

    trainer_variant: str = attrs.field(validator=_check_variant)
    field_order: str = attrs.field(validator=_check_field_order)
    matching: MatchingConfig = attrs.field(factory=MatchingConfig)
    poly_ot: PolyOTConfig = attrs.field(factory=PolyOTConfig)
    max_length: int | None = attrs.field(default=None, validator=_check_max_length)
    prompt_mismatch_policy: str = attrs.field(default="error")

    @prompt_mismatch_policy.validator
    def _check_policy(self, attribute: attrs.Attribute, value: Any) -> None:
        check_policy(value)

    @property
    def geometry_policy(self) -> str:
        return GEOMETRY_POLICY_OF_VARIANT[self.trainer_variant]

    @property
    def uses_poly_ot(self) -> bool:
        return self.trainer_variant == ROLLOUT_ALIGNED


@attrs.frozen
class PreparedSample:
    """The result for one sample: ``target`` (None when dropped), its ``counters``, the
    ``dropped_reason`` (``"prompt_mismatch"`` or None), and the rollout text before the hard stop
    (for debug dumps)."""

    sample_id: int | str | None
    target: RolloutTarget | None
    counters: SampleCounters
    dropped_reason: str | None = None
    rollout_text: str = ""

    @property
    def dropped(self) -> bool:
        return self.target is None


@attrs.frozen(eq=False)
class _AlignedRollout:
    """The tokens before the hard stop with their bytes, unclipped spans and aligned parse."""

    ids: np.ndarray
    token_bytes: list[bytes]
    char_starts: np.ndarray
    char_ends: np.ndarray
    text: str
    parse: ParseResult
    coord_positions: tuple[tuple[int, ...], ...]
    ends_with_eos: bool


# One prepare() call's arguments: output, gt_objects, local_prompt_ids, seed, params, sample_id.
_Request = tuple[
    RolloutOutput,
    Sequence[CoordObject],
    Sequence[int] | None,
    int | None,
    DecodeParams | None,
    int | str | None,
]


@attrs.frozen(eq=False)
class _Matched:
    """A valid rollout matched against its GT: the matching ``result``, the stacked geometries it
    was computed on, and ``ot_pairs``, the ``(pred_index, gt_index)`` pairs that need poly OT (a
    poly on either side, ``stage2_rollout_aligned`` only), in ``result.pairs`` order."""

    result: MatchResult
    pred_geoms: GeometryBatch
    gt_geoms: GeometryBatch
    ot_pairs: tuple[tuple[int, int], ...]


@attrs.frozen(eq=False)
class _Pending:
    """One sample between phase 1 and phase 3: everything but its OT results. ``matched`` is None
    for an invalid rollout (nothing is matched; every GT object is FN), and for a valid one until
    the batch's matching (:meth:`RolloutPreparer._pair_many`) fills it in."""

    sample_id: int | str | None
    gt: list[CoordObject]
    aligned: _AlignedRollout
    trim: TrimResult
    matched: _Matched | None
    prompt_len: int
    flags: RolloutFlags
    counts: ParseCounts
    decode: DecodeInfo


def _kept_head(aligned: _AlignedRollout, kept: int) -> TokenText | None:
    """The spans of the ``kept`` leading rollout tokens as decoded with the whole rollout, when they
    end on a character of their own (no later token shares their last character); else None."""
    if not kept:
        return None
    head_chars = int(aligned.char_ends[kept - 1])
    if kept < len(aligned.ids) and int(aligned.char_starts[kept]) < head_chars:
        return None
    return TokenText(aligned.text[:head_chars], aligned.char_starts[:kept], aligned.char_ends[:kept])


def _check_gt(gt_objects: Sequence[CoordObject], cfg: PrepareConfig) -> list[CoordObject]:
    objects = list(gt_objects)
    for index, obj in enumerate(objects):
        if not isinstance(obj, CoordObject):
            raise DataContractError(
                "geom_count",
                f"GT objects must be CoordObject values, got {type(obj).__name__}",
                object_index=index,
            )
        if obj.geom_key == POLY_KEY and cfg.geometry_policy == "bbox_only":
            raise DataContractError(
                "variant_geom",
                f"a GT poly under {cfg.trainer_variant} (bbox only, D18)",
                object_index=index,
                field="poly",
            )
    return objects


def _prefix_table(
    aligned: _AlignedRollout, open_end: int, supervised: dict[int, tuple[int, tuple[int, ...]]]
) -> PrefixTable:
    """The prefix elements of a valid rollout: every complete record (appearance order), its extent
    running from the previous element's end (``open_end`` for the first). ``supervised`` maps a
    prediction index (valid records numbered in order) to its ``(gt_index, target bins)``; the other
    elements are FP spans."""
    records = aligned.parse.records
    ends = np.array(aligned.parse.record_ends, dtype=np.int64).reshape(-1)
    extents = np.empty((len(records), 2), dtype=np.int64)
    extents[:, 1] = ends
    extents[:1, 0] = open_end
    extents[1:, 0] = ends[:-1]
    preds = [record for record in records if record.valid]
    # Matched predictions in order (the supervised pairs come sorted by prediction already).
    matched_of = sorted(supervised.items())
    pred_of = [p for p, _ in matched_of]
    element = [preds[p].index for p in pred_of]
    targets = [target for _, (_, target) in matched_of]
    coord_positions = aligned.coord_positions
    positions = [coord_positions[k] for k in element]
    matched = np.zeros(len(records), dtype=bool)
    matched[element] = True
    arity = np.fromiter(map(len, targets), np.int64, len(targets))
    total = int(arity.sum())
    desc_spans = [r.desc_span for r in records if r.desc_span is not None]
    return PrefixTable(
        extents=extents,
        matched=matched,
        desc_spans=np.fromiter(
            itertools.chain.from_iterable(desc_spans), np.int64, 2 * len(desc_spans)
        ).reshape(-1, 2),
        element=np.array(element, dtype=np.int64),
        pred_index=np.array(pred_of, dtype=np.int64),
        gt_index=np.array([g for _, (g, _) in matched_of], dtype=np.int64),
        is_box=np.array([preds[p].geom_key == BBOX_KEY for p in pred_of], dtype=bool),
        arity=arity,
        coord_pos=np.fromiter(itertools.chain.from_iterable(positions), np.int64, total),
        target=np.fromiter(itertools.chain.from_iterable(targets), np.int64, total),
    )


class RolloutPreparer:
    """Turns rollouts into :class:`RolloutTarget` records for one run (module doc).

    Built once per run: validates the codec and pre-encodes the invalid-rollout prefix. Stateless
    between calls, so one instance serves every sample.
    """

    def __init__(self, codec: TextCodec, cfg: PrepareConfig) -> None:
        if not isinstance(cfg, PrepareConfig):
            raise ConfigError("rollout_matching", f"expected a PrepareConfig, got {type(cfg).__name__}")
        check_codec(codec)
        self.codec = codec
        self.cfg = cfg
        self.fallback_ids = fallback_prefix_ids(codec)
        self.fallback_bytes = tuple(codec.token_bytes(self.fallback_ids))

    # -- public ---------------------------------------------------------------------------------
    def prepare(
        self,
        output: RolloutOutput,
        gt_objects: Sequence[CoordObject],
        *,
        local_prompt_ids: Sequence[int] | None = None,
        seed: int | None = None,
        params: DecodeParams | None = None,
        sample_id: int | str | None = None,
    ) -> PreparedSample:
        """Prepare one rollout against its GT objects (in GT order).

        ``local_prompt_ids``: the local generation prompt for the parity check (None skips it;
        then ``output.prompt_ids`` is the prompt). ``seed``/``params`` are recorded in the meta.
        """
        (prepared,) = self._prepare_batch([(output, gt_objects, local_prompt_ids, seed, params, sample_id)])
        return prepared

    def prepare_many(
        self,
        outputs: Sequence[RolloutOutput],
        gt_lists: Sequence[Sequence[CoordObject]],
        *,
        local_prompt_ids: Sequence[Sequence[int]] | None = None,
        seeds: Sequence[int] | None = None,
        params: DecodeParams | None = None,
        sample_ids: Sequence[int | str] | None = None,
    ) -> list[PreparedSample]:
        """:meth:`prepare` over aligned sequences (one entry per sample, in order).

        The result equals ``[prepare(...) for each sample]`` exactly (same targets to the bit, same
        counters, and the error the first failing sample would raise), but the poly OT of every
        sample's matched pairs runs as one :func:`~coordexp.rollout.ot.ot_targets_many` call: a
        batch's fixed NumPy cost is paid once per call, not once per sample, and a pair's targets
        do not depend on the pairs sharing its batch (:mod:`coordexp.rollout.ot`).
        """
        n = len(outputs)
        for name, seq in (
            ("gt_lists", gt_lists),
            ("local_prompt_ids", local_prompt_ids),
            ("seeds", seeds),
            ("sample_ids", sample_ids),
        ):
            if seq is not None and len(seq) != n:
                raise PipelineError(f"prepare_many got {len(seq)} {name} for {n} outputs")
        return self._prepare_batch(
            [
                (
                    outputs[i],
                    gt_lists[i],
                    None if local_prompt_ids is None else local_prompt_ids[i],
                    None if seeds is None else seeds[i],
                    params,
                    None if sample_ids is None else sample_ids[i],
                )
                for i in range(n)
            ]
        )

    # -- phases ---------------------------------------------------------------------------------
    def _prepare_batch(self, requests: Sequence[_Request]) -> list[PreparedSample]:
        """Phase 1 (parity, align, trim) for each request in order, the matching of every valid
        rollout (mask IoUs of all samples together), then one OT pass over all matched pairs, then
        phase 3 (targets, overlength fallback, counters) in order.

        Errors keep the per-sample order: when request ``i`` fails in phase 1, requests
        ``0..i-1`` still finish (so an error one of them raises in phase 3 wins, as it would
        sample by sample) before request ``i``'s error is raised.
        """
        fronts: list[PreparedSample | _Pending] = []
        deferred: Exception | None = None
        for request in requests:
            try:
                fronts.append(self._front(*request))
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the earlier samples
                deferred = exc
                break
        valid = [f for f in fronts if isinstance(f, _Pending) and f.trim.valid]
        found = iter(self._pair_many(valid))
        fronts = [
            attrs.evolve(f, matched=next(found)) if isinstance(f, _Pending) and f.trim.valid else f
            for f in fronts
        ]
        matched = [f.matched for f in fronts if isinstance(f, _Pending) and f.matched is not None]
        ot_lists = iter(self._ot_many(matched))
        prepared: list[PreparedSample] = []
        for front in fronts:
            if isinstance(front, PreparedSample):
                prepared.append(front)
            else:
                prepared.append(self._finish(front, next(ot_lists) if front.matched is not None else ()))
        if deferred is not None:
            raise deferred
        return prepared

    def _front(
        self,
        output: RolloutOutput,
        gt_objects: Sequence[CoordObject],
        local_prompt_ids: Sequence[int] | None,
        seed: int | None,
        params: DecodeParams | None,
        sample_id: int | str | None,
    ) -> PreparedSample | _Pending:
        """Phase 1 of one sample: a dropped :class:`PreparedSample` on a prompt mismatch under
        ``drop``, else the aligned and trimmed rollout (``matched`` is filled in by
        :meth:`_pair_many` when the rollout is valid)."""
        if not isinstance(output, RolloutOutput):
            raise PipelineError(f"prepare expects a RolloutOutput, got {type(output).__name__}")
        gt = _check_gt(gt_objects, self.cfg)
        if local_prompt_ids is not None and not check_prompt_parity(
            local_prompt_ids, output.prompt_ids, self.cfg.prompt_mismatch_policy, sample_id=sample_id
        ):
            return PreparedSample(sample_id, None, SampleCounters.prompt_mismatch(), PROMPT_MISMATCH)
        aligned = self._align(output.response_ids)
        trim = trim_rollout(
            aligned.ids,
            aligned.token_bytes,
            aligned.char_starts,
            aligned.char_ends,
            aligned.text,
            aligned.parse,
            self.codec,
            self.fallback_ids,
        )
        result = aligned.parse
        counts = ParseCounts(
            drop_counts=dict(result.drop_counts),
            valid_records=sum(r.valid for r in result.records),
            field_order_mismatch=result.field_order_mismatch,
            degenerate_pred_bbox=result.degenerate_pred_bbox,
            dropped_incomplete_tail=int(result.incomplete_tail),
        )
        decode = DecodeInfo(
            seed=seed,
            params=params.to_dict() if params is not None else {},
            rollout_len=len(output.response_ids),
            finish_reason=output.finish_reason,
        )
        flags = RolloutFlags(
            invalid_rollout=not trim.valid,
            invalid_reason=trim.invalid_reason,
            truncated=output.truncated and not aligned.ends_with_eos,
            ends_with_eos=aligned.ends_with_eos,
            retokenize_fail=trim.invalid_reason == RETOKENIZE_FAIL,
        )
        prompt_len = len(local_prompt_ids) if local_prompt_ids is not None else len(output.prompt_ids)
        return _Pending(sample_id, gt, aligned, trim, None, prompt_len, flags, counts, decode)

    def _finish(self, pending: _Pending, ot_results: Sequence[OTTarget | OTFailure]) -> PreparedSample:
        """Phase 3 of one sample: prefix table and match summary from its OT results (one per
        ``pending.matched.ot_pairs`` entry), ``Y_train``, the overlength fallback and counters."""
        aligned, trim, gt, flags = pending.aligned, pending.trim, pending.gt, pending.flags
        counts, decode, prompt_len = pending.counts, pending.decode, pending.prompt_len
        if pending.matched is not None:
            elements, summary, fn = self._supervise(aligned, trim, gt, pending.matched, ot_results)
        else:
            elements, summary, fn = (), MatchSummary(fn=tuple(range(len(gt)))), tuple(range(len(gt)))
        target = self._build(aligned, trim, elements, gt, fn, prompt_len, summary, flags, counts, decode)
        max_length = self.cfg.max_length
        if max_length is not None and target.encoded_len > max_length:
            flags = attrs.evolve(
                flags, invalid_rollout=True, invalid_reason=OVERLENGTH, overlength_fallback=True
            )
            everything = tuple(range(len(gt)))
            target = self._build(
                None,
                invalid_trim(self.fallback_ids, OVERLENGTH),
                (),
                gt,
                everything,
                prompt_len,
                MatchSummary(fn=everything),
                flags,
                counts,
                decode,
            )
            if target.encoded_len > max_length:
                raise PipelineError(
                    f"sample {pending.sample_id!r}: even the invalid-rollout fallback needs "
                    f"{target.encoded_len} tokens (> template.max_length {max_length}); the load-time "
                    "too_long check should have rejected it"
                )
        return PreparedSample(
            pending.sample_id, target, SampleCounters.from_target(target, len(gt)), None, aligned.text
        )

    # -- steps ----------------------------------------------------------------------------------
    def _align(self, response_ids: Sequence[int]) -> _AlignedRollout:
        codec, cfg = self.codec, self.cfg
        ids = np.asarray(response_ids, dtype=np.int64)
        per_token, lengths = bytes_and_lengths(codec, ids)
        full = token_char_spans(per_token, lengths)
        stop = hard_stop(ids, full, codec.stop_ids)
        kept = full.truncated(stop.n_tokens, stop.n_chars)
        result = parse(
            kept.text, mode="rollout", geometry_policy=cfg.geometry_policy, field_order=cfg.field_order
        )
        aligned = extract_coord_positions(result, kept, ids[: stop.n_tokens], codec.coord_vocab)
        n = stop.n_tokens
        return _AlignedRollout(
            ids=ids[:n],
            token_bytes=per_token[:n],
            char_starts=full.starts[:n],
            char_ends=full.ends[:n],
            text=kept.text,
            parse=aligned.result,
            coord_positions=aligned.coord_positions,
            ends_with_eos=stop.ends_with_eos,
        )

    def _pair_many(self, pending: Sequence[_Pending]) -> list[_Matched]:
        """Match each valid rollout's valid records against its GT (one
        :func:`~coordexp.rollout.matching.match_many` call) and pick the pairs that need poly OT."""
        stacks = []
        for sample in pending:
            preds = [record for record in sample.aligned.parse.records if record.valid]
            # Valid records and CoordObjects already hold checked CoordJSON geometries: stack them
            # once, unvalidated; matching and OT share the stacks.
            stacks.append(
                (
                    GeometryBatch.from_bins([r.geom_key for r in preds], [r.values for r in preds]),
                    GeometryBatch.from_bins([o.geom_key for o in sample.gt], [o.values for o in sample.gt]),
                )
            )
        out = []
        results = match_many(stacks, self.cfg.matching)
        for (pred_geoms, gt_geoms), result in zip(stacks, results, strict=True):
            ot_pairs: list[tuple[int, int]] = []
            if self.cfg.uses_poly_ot:
                pred_box, gt_box = pred_geoms.is_box.tolist(), gt_geoms.is_box.tolist()
                ot_pairs = [(p, g) for p, g, _ in result.pairs if not (pred_box[p] and gt_box[g])]
            out.append(_Matched(result, pred_geoms, gt_geoms, tuple(ot_pairs)))
        return out

    def _ot_many(self, matched: Sequence[_Matched]) -> list[list[OTTarget | OTFailure]]:
        """The OT results of every sample's ``ot_pairs`` (one list per sample, in pair order),
        from a single :func:`ot_targets_many` call over the samples' concatenated geometries."""
        busy = [m for m in matched if m.ot_pairs]
        if not busy:
            return [[] for _ in matched]
        if len(busy) == 1:
            pred, gt, pairs = busy[0].pred_geoms, busy[0].gt_geoms, list(busy[0].ot_pairs)
        else:
            pred, pred_bases = GeometryBatch.concat([m.pred_geoms for m in busy])
            gt, gt_bases = GeometryBatch.concat([m.gt_geoms for m in busy])
            pairs = [
                (p + pred_base, g + gt_base)
                for m, pred_base, gt_base in zip(busy, pred_bases, gt_bases, strict=True)
                for p, g in m.ot_pairs
            ]
        found = iter(ot_targets_many(pred, gt, pairs, self.cfg.poly_ot))
        return [list(itertools.islice(found, len(m.ot_pairs))) for m in matched]

    def _supervise(
        self,
        aligned: _AlignedRollout,
        trim: TrimResult,
        gt: list[CoordObject],
        matched: _Matched,
        ot_results: Sequence[OTTarget | OTFailure],
    ) -> tuple[PrefixTable, MatchSummary, tuple[int, ...]]:
        """Prefix table, match summary and FN list of a valid rollout: a bbox–bbox pair (or any
        pair outside ``stage2_rollout_aligned``) is supervised with its GT bins, an OT pair with its
        target; an :class:`OTFailure` excludes the pair (its prediction FP, its GT FN)."""
        result = matched.result
        by_pair = dict(zip(matched.ot_pairs, ot_results, strict=True))
        supervised: dict[int, tuple[int, tuple[int, ...]]] = {}
        pairs: list[tuple[int, int, float]] = []
        excluded: list[tuple[int, int]] = []
        for pred_index, gt_index, iou in result.pairs:
            found = by_pair.get((pred_index, gt_index))
            if found is None:
                target = gt[gt_index].values
            elif isinstance(found, OTFailure):
                excluded.append((pred_index, gt_index))
                continue
            else:
                target = found.values
            supervised[pred_index] = (gt_index, target)
            pairs.append((pred_index, gt_index, iou))
        table = _prefix_table(aligned, trim.open_end, supervised)
        fn = tuple(sorted((*result.fn, *(g for _, g in excluded))))
        fp = tuple(sorted((*result.fp, *(p for p, _ in excluded))))
        summary = MatchSummary(
            pairs=tuple(pairs),
            fp=fp,
            fn=fn,
            excluded=tuple(excluded),
            gating_rejections=result.gating_rejections,
            candidate_pairs=result.candidate_pairs,
        )
        return table, summary, fn

    def _build(
        self,
        aligned: _AlignedRollout | None,
        trim: TrimResult,
        elements: PrefixTable | Sequence[PrefixElement],
        gt: list[CoordObject],
        fn: Sequence[int],
        prompt_len: int,
        summary: MatchSummary,
        flags: RolloutFlags,
        counts: ParseCounts,
        decode: DecodeInfo,
    ) -> RolloutTarget:
        """:func:`build_rollout_target` reusing the rollout's token ids, bytes and character spans for
        the kept prefix."""
        head = None
        if trim.valid and aligned is not None:
            kept = trim.kept_tokens
            prefix_bytes = [*aligned.token_bytes[:kept], *self.codec.token_bytes(trim.replacement)]
            prefix_array = np.concatenate([aligned.ids[:kept], np.array(trim.replacement, dtype=np.int64)])
            head = _kept_head(aligned, kept)
        else:
            prefix_bytes, prefix_array = self.fallback_bytes, None
        return build_rollout_target(
            codec=self.codec,
            trim=trim,
            elements=elements,
            gt_objects=gt,
            fn_indices=fn,
            field_order=self.cfg.field_order,
            prompt_len=prompt_len,
            match=summary,
            flags=flags,
            counts=counts,
            decode=decode,
            prefix_bytes=prefix_bytes,
            prefix_array=prefix_array,
            prefix_head=head,
        )


__all__ = [
    "GEOMETRY_POLICY_OF_VARIANT",
    "PROMPT_MISMATCH",
    "ROLLOUT_ALIGNED",
    "TWO_CHANNEL",
    "PrepareConfig",
    "PreparedSample",
    "RolloutPreparer",
]
