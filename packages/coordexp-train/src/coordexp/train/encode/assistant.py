"""Row metadata of a canonical CoordJSON assistant text (GT sequences and FN fragments).

`label_rows` turns token ids + the serializer's character spans into per-token type, span kind,
object index, slot and coord target, vectorized (no per-token Python loop). The token text is
rebuilt from the token bytes and must equal the serialized text exactly; a mismatch means the
tokenizer normalized the text (e.g. NFC) and is reported instead of silently misaligning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from coordexp.core.coordjson.serialize import CoordObject, SerializedCoordJSON
from coordexp.core.errors import PipelineError
from coordexp.core.tokens import SpanKind, TokenType, span_kinds_for_tokens, token_types_for_tokens
from coordexp.train.encode.vocab import TokenizerInfo


@attrs.frozen(eq=False)
class LabeledTokens:
    """Per-token labels of one encoded text; every array is int64 [T] (bins/indices −1 = none)."""

    token_ids: np.ndarray
    token_type: np.ndarray
    span_kind: np.ndarray
    object_index: np.ndarray
    slot: np.ndarray
    coord_target: np.ndarray
    coord_positions: tuple[np.ndarray, ...]
    """Per object (in serialization order): token indices of its coord slots."""


def label_rows(
    info: TokenizerInfo,
    token_ids: Sequence[int],
    serialized: SerializedCoordJSON,
    objects: Sequence[CoordObject],
    *,
    text_suffix: str = "",
    span_intervals: Mapping[SpanKind, Sequence[tuple[int, int]]],
    default_kind: SpanKind,
    object_offset: int = 0,
) -> LabeledTokens:
    """Label `token_ids`, which encode `serialized.text + text_suffix` (suffix e.g. `<|im_end|>`).

    `span_intervals` gives the character intervals of each span kind (fused tokens resolve by the
    precedence of spec 02 §2.2); `object_offset` numbers the objects (FN objects continue after the
    prefix's).
    """
    ids = np.asarray(list(token_ids), dtype=np.int64)
    text = info.token_text(ids)
    expected = serialized.text + text_suffix
    if text.text != expected:
        first = next((i for i, (a, b) in enumerate(zip(text.text, expected)) if a != b), min(len(text.text), len(expected)))
        raise PipelineError(
            f"token text differs from the serialized CoordJSON at char {first}: "
            f"{text.text[first:first + 20]!r} vs {expected[first:first + 20]!r} (the tokenizer normalizes "
            "text; store descs NFC-normalized)"
        )
    desc = np.asarray(serialized.desc_spans, dtype=np.int64).reshape(-1, 2)
    token_type = token_types_for_tokens(ids, text.starts, text.ends, desc, info.coord_mask, info.eos_id)
    intervals = {kind: np.asarray(list(v), dtype=np.int64).reshape(-1, 2) for kind, v in span_intervals.items()}
    span_kind = span_kinds_for_tokens(text.starts, text.ends, intervals, default_kind)
    # Eos is its own span kind wherever the eos id sits (D16): the literal has an empty char span.
    span_kind = np.where(token_type == int(TokenType.EOS), int(SpanKind.EOS), span_kind)

    coord_idx = np.flatnonzero(token_type == int(TokenType.COORD))
    arity = np.asarray([len(o.values) for o in objects], dtype=np.int64)
    if coord_idx.size != int(arity.sum()):
        raise PipelineError(
            f"found {coord_idx.size} coord tokens but the objects hold {int(arity.sum())} coordinates"
        )
    bins = info.coord_vocab.bins_of(_as_tensor(ids[coord_idx])).numpy()
    values = np.fromiter((v for o in objects for v in o.values), dtype=np.int64, count=int(arity.sum()))
    if not np.array_equal(bins, values):
        raise PipelineError("coord token bins differ from the serialized object values (misaligned encoding)")
    n = ids.shape[0]
    object_index = np.full(n, -1, dtype=np.int64)
    slot = np.full(n, -1, dtype=np.int64)
    coord_target = np.full(n, -1, dtype=np.int64)
    object_index[coord_idx] = np.repeat(np.arange(len(objects), dtype=np.int64) + object_offset, arity)
    starts = np.concatenate([[0], np.cumsum(arity)[:-1]]) if len(objects) else np.zeros(0, dtype=np.int64)
    slot[coord_idx] = np.arange(coord_idx.size) - np.repeat(starts, arity)
    coord_target[coord_idx] = values
    splits = np.split(coord_idx, np.cumsum(arity)[:-1]) if len(objects) else []
    return LabeledTokens(ids, token_type, span_kind, object_index, slot, coord_target, tuple(splits))


def bbox_groups(
    labels: LabeledTokens, objects: Sequence[CoordObject], *, row_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`(rows [G,4], target [G,4])` of the bbox objects: row = `row_offset + token index`."""
    rows, target = [], []
    for obj, positions in zip(objects, labels.coord_positions):
        if obj.geom_key == "bbox_2d":
            rows.append(positions + row_offset)
            target.append(np.asarray(obj.values, dtype=np.int64))
    if not rows:
        return np.zeros((0, 4), dtype=np.int64), np.zeros((0, 4), dtype=np.int64)
    return np.stack(rows), np.stack(target)


def _as_tensor(values: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(values))
