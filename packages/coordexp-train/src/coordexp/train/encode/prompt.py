"""The generation prompt of one record: text, token ids and vision inputs.

The teacher-forced sequence of every stage is `prompt ids + assistant ids`, with the prompt encoded
exactly as the rollout backends encode it for generation, so prompt parity (spec 01 §1.5) holds by
construction: both call `encode_prompt`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import torch
from PIL import Image

from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.render import build_messages


@attrs.frozen(eq=False)
class EncodedPrompt:
    """`input_ids` long [P]; `pixel_values` float [Σ t·h·w, D]; `image_grid_thw` long [1, 3]; `text`
    the rendered prompt (one `<|image_pad|>` before expansion)."""

    text: str
    input_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.input_ids.numel())


def render_prompt(processor: Any, pair: PromptPair, image_ref: str) -> str:
    """The chat-template rendering of system + user + image with the generation prompt appended."""
    messages = build_messages(pair, image_ref)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(processor: Any, pair: PromptPair, image_path: str) -> EncodedPrompt:
    """Render and tokenize the prompt of one image (the image is loaded as RGB, never resized)."""
    text = render_prompt(processor, pair, str(image_path))
    with Image.open(image_path) as img:
        image = img.convert("RGB")
    out = processor(text=[text], images=[image], return_tensors="pt")
    return EncodedPrompt(
        text=text,
        input_ids=out["input_ids"][0].long(),
        pixel_values=out["pixel_values"],
        image_grid_thw=out["image_grid_thw"].long(),
    )


def prompt_ids_sha256(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()
