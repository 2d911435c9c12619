"""The generation prompt of one record: text, token ids and vision inputs.

The teacher-forced sequence of every stage is `prompt ids + assistant ids`, with the prompt encoded
exactly as the rollout backends encode it for generation, so prompt parity (spec 01 §1.5) holds by
construction: both call `encode_prompt` (or `PromptEncoder`, its cached form for many images).
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import torch
from PIL import Image

from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.render import build_messages
from coordexp.train.encode.pixels import PatchEncoder


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


class PromptEncoder:
    """`encode_prompt` for many images under one prompt pair, tokenizing the text once per image grid.

    The prompt ids are a function of the pair and the image grid only (the processor expands the
    single `<|image_pad|>` to `t·h·w/merge²` copies), so the first image of each grid goes through
    the full processor and its ids are kept; later images of that grid only get their pixel values,
    from :class:`~coordexp.train.encode.pixels.PatchEncoder` (the image processor's exact output in
    about a third of its time). That skips the chat-template render, the tokenizer call and the
    processor's kwargs merging, about half of `encode_prompt`'s CPU time. Results equal
    `encode_prompt` (tested). The cache holds one id tensor per distinct grid: small even for
    natural-image data sets.
    """

    def __init__(self, processor: Any, pair: PromptPair) -> None:
        self.processor = processor
        self.pair = pair
        # The template renders an image part as markup only, so the text does not depend on the path.
        self.text = render_prompt(processor, pair, "image")
        self._ids: dict[tuple[int, ...], torch.Tensor] = {}
        self._pixels = PatchEncoder(processor)
        # `<|image_pad|>` is one special token, so expanding it to n copies adds n - 1 ids.
        self._one_pad_len = len(processor.tokenizer([self.text])["input_ids"][0])

    def length(self, height: int, width: int) -> int:
        """Prompt length in tokens for an image of `height` x `width` pixels, without reading it."""
        return self._one_pad_len - 1 + int(self.processor.image_token_count(height, width))

    @property
    def cached_grids(self) -> int:
        """How many distinct image grids have been tokenized so far."""
        return len(self._ids)

    def __call__(self, image_path: str) -> EncodedPrompt:
        with Image.open(image_path) as img:
            image = img.convert("RGB")
        vision = self._pixels([image])
        grid = vision["image_grid_thw"]
        key = tuple(grid.flatten().tolist())
        ids = self._ids.get(key)
        if ids is None:
            out = self.processor(text=[self.text], images=[image], return_tensors="pt")
            ids = self._ids[key] = out["input_ids"][0].long()
        return EncodedPrompt(
            text=self.text, input_ids=ids, pixel_values=vision["pixel_values"], image_grid_thw=grid
        )


def prompt_ids_sha256(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()
