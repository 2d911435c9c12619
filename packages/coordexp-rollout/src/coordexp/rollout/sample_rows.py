"""``RolloutTarget`` → ``coordexp.core.rows.SampleRows``: the rows of one ``rollout``-context segment.

Every ``Y_train`` position is a row (sample-local position ``prompt_len + p`` for assistant position
``p``), FP rows included — ``pack_rows`` drops ``prefix_fp`` rows, they are never candidates (02 §2.3).
Coord slots give ``object_index``/``slot``/``coord_target`` (the matched GT bin or OT target in the
prefix, the GT bin in the FN fragment); every other row has −1. Bbox groups: the matched bbox
predictions (subset ``MATCHED``; target GT bins or the OT AABB) then every FN bbox (subset ``FN``),
weight 1.0; their rows are assistant positions, which equal row indices here. The segment carries
``prefix_len``/``train_len``/``encoded_len``/``rollout_len``, the sample's §3.8 counters and the match.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from coordexp.core.context import SegmentInfo
from coordexp.core.errors import PipelineError
from coordexp.core.rows import SampleRows
from coordexp.core.tokens import Subset
from coordexp.rollout.record import RolloutTarget


def rollout_target_to_sample_rows(
    target: RolloutTarget,
    prompt_len: int,
    sample_id: int | str,
    *,
    counters: Mapping[str, float] | None = None,
) -> SampleRows:
    """The ``SampleRows`` of ``target`` after a prompt of ``prompt_len`` tokens (module doc).

    ``prompt_len`` must equal ``target.prompt_len`` (the prompt the target was built for) and be
    ≥ 1. ``counters`` (e.g. ``SampleCounters.as_dict()``) go to ``SegmentInfo.counters``.
    """
    if not isinstance(target, RolloutTarget):
        raise PipelineError(f"expected a RolloutTarget, got {type(target).__name__}")
    if prompt_len != target.prompt_len:
        raise PipelineError(
            f"sample {sample_id!r}: prompt_len {prompt_len} differs from the target's prompt_len "
            f"{target.prompt_len}"
        )
    if prompt_len < 1:
        raise PipelineError(f"sample {sample_id!r}: a rollout segment needs a prompt (prompt_len >= 1)")
    n = target.train_len
    object_index = np.full(n, -1, dtype=np.int64)
    slot = np.full(n, -1, dtype=np.int64)
    coord_target = np.full(n, -1, dtype=np.int64)
    for slots in (target.coord_slots_prefix, target.coord_slots_fn):
        object_index[slots.pos] = slots.object
        slot[slots.pos] = slots.slot
        coord_target[slots.pos] = slots.target_bin
    prefix_groups, fn_groups = target.bbox_groups_prefix, target.bbox_groups_fn
    segment = SegmentInfo(
        sample_id=sample_id,
        length=prompt_len + n,
        prompt_len=prompt_len,
        lengths={
            "prefix_len": target.prefix_len,
            "train_len": n,
            "encoded_len": target.encoded_len,
            "rollout_len": target.decode.rollout_len,
        },
        counters=dict(counters or {}),
        match=target.match.to_dict(),
    )
    return SampleRows(
        segment=segment,
        positions=np.arange(prompt_len, prompt_len + n, dtype=np.int64),
        target_ids=target.y_train,
        token_type=target.token_type,
        span_kind=target.span_kind,
        object_index=object_index,
        slot=slot,
        coord_target=coord_target,
        group_rows=np.concatenate([prefix_groups.pos, fn_groups.pos]),
        group_target=np.concatenate([prefix_groups.target, fn_groups.target]),
        group_weight=np.concatenate([prefix_groups.weight, fn_groups.weight]),
        group_subset=np.concatenate(
            [
                np.full(len(prefix_groups), int(Subset.MATCHED), dtype=np.int64),
                np.full(len(fn_groups), int(Subset.FN), dtype=np.int64),
            ]
        ),
    )


__all__ = ["rollout_target_to_sample_rows"]
