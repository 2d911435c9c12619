"""Tables built unchecked by the target builder are validated by ``RolloutTarget`` (spec 03 §3.7; E10)."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.core.errors import PipelineError
from coordexp.rollout.prepare import ROLLOUT_ALIGNED, PrepareConfig, RolloutPreparer
from coordexp.rollout.record import BBoxGroupTable, CoordSlots, PolyGroup
from coordexp.rollout.testing import cut_rollout, tiny_test_codec

CODEC = tiny_test_codec()
CAT = CoordObject("cat", "bbox_2d", (10, 20, 300, 400))
DOG = CoordObject("dog", "poly", (500, 500, 700, 520, 600, 700))
MUG = CoordObject("mug", "bbox_2d", (700, 700, 900, 900))


@pytest.fixture(scope="module")
def target():
    ids = CODEC.encode(serialize([CAT, DOG], "desc_first")) + [CODEC.eos_id]
    output = cut_rollout(CODEC, ids, prompt_ids=(1, 2), max_new_tokens=512)
    prepared = RolloutPreparer(CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first")).prepare(
        output, [CAT, DOG, MUG]
    )
    t = prepared.target
    assert len(t.bbox_groups_prefix) == 1 and len(t.poly_groups_prefix) == 1 and len(t.bbox_groups_fn) == 1
    return t


def test_the_builder_output_is_read_only(target) -> None:
    for array in (target.coord_slots_prefix.pos, target.coord_slots_fn.target_bin, target.bbox_groups_fn.pos):
        assert not array.flags.writeable


def test_bad_slot_values_are_rejected(target) -> None:
    slots = target.coord_slots_prefix
    bins = slots.target_bin.copy()
    bins[0] = 1000
    with pytest.raises(PipelineError, match="target bins must lie in 0..999"):
        attrs.evolve(
            target,
            coord_slots_prefix=CoordSlots.built(
                slots.pos.copy(), bins, slots.object.copy(), slots.slot.copy()
            ),
        )
    with pytest.raises(PipelineError, match="int64"):
        attrs.evolve(
            target,
            coord_slots_prefix=CoordSlots.built(
                slots.pos.copy(), slots.target_bin[:-1].copy(), slots.object.copy(), slots.slot.copy()
            ),
        )


def test_bad_group_values_are_rejected(target) -> None:
    groups = target.bbox_groups_fn
    with pytest.raises(PipelineError, match="gt_index must be >= 0"):
        attrs.evolve(
            target,
            bbox_groups_fn=BBoxGroupTable.built(
                groups.pos.copy(), groups.target.copy(), np.full(len(groups), -1), groups.pred_index.copy()
            ),
        )
    with pytest.raises(PipelineError, match=r"int64 \[G, 4\]"):
        attrs.evolve(
            target,
            bbox_groups_fn=BBoxGroupTable.built(
                groups.pos[:, :3].copy(),
                groups.target.copy(),
                groups.gt_index.copy(),
                groups.pred_index.copy(),
            ),
        )


def test_bad_poly_groups_are_rejected(target) -> None:
    (group,) = target.poly_groups_prefix
    with pytest.raises(PipelineError, match="even length >= 6"):
        attrs.evolve(target, poly_groups_prefix=(PolyGroup.built(group.pos[:5], group.target[:5], 1, 1),))
    moved = tuple(p - 1 for p in group.pos)
    with pytest.raises(PipelineError, match=r"poly_groups_prefix\[0\]"):
        attrs.evolve(target, poly_groups_prefix=(PolyGroup.built(moved, group.target, 1, 1),))
