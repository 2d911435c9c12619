"""Encode one record for GT teacher forcing (Stage-1, Stage-2 Channel A): context `gt`.

Sequence = generation prompt ids + ids of the canonical CoordJSON + `<|im_end|>`. Every assistant
token is a candidate target row (spec 02 §2.3); span kinds are `body`, `closure` (the final `]}`)
and `eos`; coord rows carry their GT bin; every bbox object forms a bbox group.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch

from coordexp.core.context import SegmentInfo
from coordexp.core.coordjson.serialize import CoordObject, serialize_with_spans
from coordexp.core.rows import SampleRows
from coordexp.core.tokens import SpanKind
from coordexp.train.encode.assistant import bbox_groups, label_rows
from coordexp.train.encode.prompt import EncodedPrompt
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.models.special_tokens import IM_END


@attrs.frozen(eq=False)
class EncodedSample:
    """One teacher-forcing segment: `input_ids` long [L] (prompt + assistant), the vision inputs of
    its image, and its row metadata (`rows.positions` index `input_ids`)."""

    sample_id: int | str
    input_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    prompt_len: int
    rows: SampleRows

    @property
    def length(self) -> int:
        return int(self.input_ids.numel())


def assistant_length(info: TokenizerInfo, objects: Sequence[CoordObject], *, field_order: str) -> int:
    """Number of assistant ids `encode_gt` produces for `objects` (CoordJSON ids + `<|im_end|>`)."""
    return len(info.encode_text(serialize_with_spans(objects, field_order).text)) + 1


def encode_gt(
    info: TokenizerInfo,
    prompt: EncodedPrompt,
    objects: Sequence[CoordObject],
    *,
    field_order: str,
    sample_id: int | str,
) -> EncodedSample:
    """Encode `objects` (already in GT order) after `prompt`."""
    serialized = serialize_with_spans(objects, field_order)
    assistant_ids = info.encode_text(serialized.text) + [info.eos_id]
    text_len = len(serialized.text)
    labels = label_rows(
        info,
        assistant_ids,
        serialized,
        objects,
        text_suffix=IM_END,
        span_intervals={SpanKind.CLOSURE: [(serialized.tail_start, text_len)]},
        default_kind=SpanKind.BODY,
    )
    prompt_len = prompt.length
    n = len(assistant_ids)
    rows_g, target_g = bbox_groups(labels, objects)
    segment = SegmentInfo(sample_id=sample_id, length=prompt_len + n, prompt_len=prompt_len)
    rows = SampleRows(
        segment=segment,
        positions=np.arange(prompt_len, prompt_len + n, dtype=np.int64),
        target_ids=labels.token_ids,
        token_type=labels.token_type,
        span_kind=labels.span_kind,
        object_index=labels.object_index,
        slot=labels.slot,
        coord_target=labels.coord_target,
        group_rows=rows_g,
        group_target=target_g,
    )
    input_ids = torch.cat([prompt.input_ids, torch.as_tensor(assistant_ids, dtype=torch.long)])
    return EncodedSample(sample_id, input_ids, prompt.pixel_values, prompt.image_grid_thw, prompt_len, rows)
