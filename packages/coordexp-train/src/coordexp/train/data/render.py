"""Chat rendering of a record (spec 01 §1.3, §1.5): the assistant text and the Qwen chat messages.

The assistant content is the canonical CoordJSON only; the chat template appends `<|im_end|>`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.train.data.options import check_field_order
from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.records import Record


def assistant_text(record: Record | Sequence[CoordObject], field_order: str) -> str:
    """Canonical CoordJSON of a record's objects (or of objects in an explicit GT order)."""
    check_field_order(field_order)
    objects = record.objects if isinstance(record, Record) else tuple(record)
    return serialize(objects, field_order)


def build_messages(
    pair: PromptPair, image: str | os.PathLike[str] | Any, assistant: str | None = None
) -> list[dict[str, Any]]:
    """Qwen-VL chat messages: system text; user = image then text; optional assistant text.

    `image` is a path (passed on as `str`) or an already loaded image object (passed through).
    Every `content` is a list of typed parts:
    `[{"role": "system", "content": [{"type": "text", "text": ...}]},
      {"role": "user", "content": [{"type": "image", "image": ...}, {"type": "text", "text": ...}]},
      {"role": "assistant", "content": [{"type": "text", "text": ...}]}]`.
    """
    image_value = os.fspath(image) if isinstance(image, (str, os.PathLike)) else image
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": pair.system}]},
        {
            "role": "user",
            "content": [{"type": "image", "image": image_value}, {"type": "text", "text": pair.user}],
        },
    ]
    if assistant is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
    return messages
