"""Qwen3-VL processor that works without torchvision (image-only; no video processor).

``transformers.Qwen3VLProcessor`` requires a video processor, which needs torchvision (not part of
the CPU install). :class:`CoordexpQwen3VLProcessor` keeps the stock behaviour for images (one
``<|image_pad|>`` in the text becomes ``t·h·w/merge²`` copies; ``mm_token_type_ids`` is returned
with 0 = text, 1 = image) but its ``__init__`` takes only ``(image_processor, tokenizer,
chat_template)``. Images go through ``Qwen2VLImageProcessorPil`` (PIL backend; patch 16, temporal
patch 2, merge 2, mean = std = 0.5 like Qwen3-VL).

Resizing: the image processor rounds each side to a multiple of 32 (patch·merge) and rescales into
``[min_pixels, max_pixels]``; an image whose sides are multiples of 32 and whose area lies in that
range is passed through untouched (no resampling). :meth:`resized_image_size` tells the data layer
what an image would become, so it can reject images that would be resized (spec 01 §1.1).

On disk (``save_pretrained``) the processor writes ``processor_class = "Qwen3VLProcessor"`` into
``processor_config.json``: tools that pick the class from that file (vLLM) then use the stock class,
which applies the same resize rules and normalization (with torchvision, in its own float arithmetic).
Load with :func:`load_processor` (or this class's ``from_pretrained``, which is the same call), never
``AutoProcessor`` (which would need torchvision for the stock class, and picks the torchvision image
backend wherever it is installed).
"""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.processing_utils import ProcessorMixin

from coordexp.core.errors import ConfigError
from coordexp.train.models.chat_template import CHAT_TEMPLATE
from coordexp.train.models.special_tokens import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START
from coordexp.train.models.tokenizer import token_ids_of

PATCH_SIZE = 16
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
#: Side granularity of an image the vision tower accepts without resizing (patch · merge).
IMAGE_FACTOR = PATCH_SIZE * MERGE_SIZE
DEFAULT_MIN_PIXELS = IMAGE_FACTOR * IMAGE_FACTOR
DEFAULT_MAX_PIXELS = 1024 * 1024
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
STOCK_PROCESSOR_CLASS = "Qwen3VLProcessor"


class CoordexpQwen3VLProcessor(Qwen3VLProcessor):
    """Image + text processor for Qwen3-VL checkpoints (see the module docstring).

    ``__call__(text=[...], images=[...], return_tensors="pt")`` returns ``input_ids``,
    ``attention_mask``, ``mm_token_type_ids`` (``[B, L]``), ``pixel_values``
    (``[Σ t·h·w, 3·2·16·16]`` float32) and ``image_grid_thw`` (``[num_images, 3]`` int64, in text order).
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None):
        if tokenizer is None or image_processor is None:
            raise ConfigError(
                "model.processor", "CoordexpQwen3VLProcessor needs both an image processor and a tokenizer"
            )
        names = (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END)
        ids = token_ids_of(tokenizer, names)
        missing = [t for t, i in zip(names, ids, strict=True) if i is None]
        if missing:
            raise ConfigError("model.processor", f"the tokenizer lacks the Qwen3-VL vision tokens {missing}")
        self.image_token, self.video_token = IMAGE_PAD, VIDEO_PAD
        self.vision_start_token, self.vision_end_token = VISION_START, VISION_END
        self.image_token_id, self.video_token_id, self.vision_start_token_id, self.vision_end_token_id = ids
        # Qwen3VLProcessor.__init__ would pass a video processor positionally; go to the mixin directly.
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        **kwargs: Any,
    ) -> CoordexpQwen3VLProcessor:
        """:func:`load_processor` under the usual name (a local directory, offline).

        The mixin's loader would pick the image processor through ``AutoImageProcessor``, which
        takes the torchvision backend wherever torchvision is installed; its pixel values differ
        from the PIL backend's in the last float bits, so a checkpoint would be preprocessed
        differently at inference than in training. Only ``local_files_only`` (always true) is
        accepted besides the pixel bounds; any other hub option is refused by name.
        """
        kwargs.pop("local_files_only", None)
        if kwargs:
            raise ConfigError(
                "model.processor",
                f"CoordexpQwen3VLProcessor.from_pretrained loads a local directory only; unsupported "
                f"options {sorted(kwargs)} (accepted: min_pixels, max_pixels, local_files_only)",
            )
        return load_processor(pretrained_model_name_or_path, min_pixels=min_pixels, max_pixels=max_pixels)

    @property
    def min_pixels(self) -> int:
        """Lower bound of ``height·width`` after resizing."""
        return int(self.image_processor.size["shortest_edge"])

    @property
    def max_pixels(self) -> int:
        """Upper bound of ``height·width`` after resizing."""
        return int(self.image_processor.size["longest_edge"])

    def resized_image_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` the image processor turns an image of this size into."""
        factor = self.image_processor.patch_size * self.image_processor.merge_size
        return smart_resize(
            int(height), int(width), factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )

    def image_token_count(self, height: int, width: int) -> int:
        """Number of ``<|image_pad|>`` tokens for an image of this size (``t·h·w/merge²``, t = 1)."""
        resized_h, resized_w = self.resized_image_size(height, width)
        patch, merge = self.image_processor.patch_size, self.image_processor.merge_size
        return (resized_h // patch) * (resized_w // patch) // (merge * merge)

    def to_dict(self) -> dict[str, Any]:
        """Serialized config; names the stock class so that vLLM and AutoProcessor users get it."""
        output = super().to_dict()
        output["processor_class"] = STOCK_PROCESSOR_CLASS
        return output


def _pixels(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(path, f"expected a positive integer pixel count, got {value!r}")
    try:
        pixels = operator.index(value)
    except TypeError:
        raise ConfigError(path, f"expected a positive integer pixel count, got {value!r}") from None
    if pixels < DEFAULT_MIN_PIXELS:
        raise ConfigError(
            path, f"must be >= {DEFAULT_MIN_PIXELS} (one {IMAGE_FACTOR}x{IMAGE_FACTOR} tile), got {pixels}"
        )
    return pixels


def build_image_processor(
    *, min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Qwen2VLImageProcessorPil:
    """The Qwen3-VL image processor (PIL backend) with the given pixel bounds (``template.*_pixels``)."""
    low, high = _pixels(min_pixels, "template.min_pixels"), _pixels(max_pixels, "template.max_pixels")
    if low > high:
        raise ConfigError("template.min_pixels", f"min_pixels {low} exceeds max_pixels {high}")
    return Qwen2VLImageProcessorPil(
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
        min_pixels=low,
        max_pixels=high,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )


def build_processor(
    tokenizer: Any, *, min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> CoordexpQwen3VLProcessor:
    """A processor around ``tokenizer`` with :data:`CHAT_TEMPLATE` and the given pixel bounds."""
    image_processor = build_image_processor(min_pixels=min_pixels, max_pixels=max_pixels)
    return CoordexpQwen3VLProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def _stored_processor_template(directory: Path) -> str | None:
    """The template of a processor-level ``chat_template.json`` (the stock Qwen3-VL layout), if any."""
    path = directory / "chat_template.json"
    if not path.is_file():
        return None
    template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    if not isinstance(template, str):
        raise ConfigError("model.model", f"{str(path)!r} has no 'chat_template' string")
    return template


def load_processor(
    path: str | Path, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> CoordexpQwen3VLProcessor:
    """Load the processor of any local Qwen3-VL checkpoint directory, offline, without torchvision.

    Reads the image processor settings (``processor_config.json`` or ``preprocessor_config.json``),
    the tokenizer and its chat template from ``path``; ``min_pixels``/``max_pixels`` override the
    stored bounds. The chat template comes from the checkpoint (the tokenizer's, else a processor
    ``chat_template.json``); a checkpoint without any gets :data:`CHAT_TEMPLATE`. Run
    :func:`~coordexp.train.models.chat_template.probe_chat_template` before training on it.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError("model.model", f"checkpoint directory {str(directory)!r} does not exist")
    overrides: dict[str, int] = {}
    if min_pixels is not None:
        overrides["min_pixels"] = _pixels(min_pixels, "template.min_pixels")
    if max_pixels is not None:
        overrides["max_pixels"] = _pixels(max_pixels, "template.max_pixels")
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(
        str(directory), local_files_only=True, **overrides
    )
    low, high = image_processor.size["shortest_edge"], image_processor.size["longest_edge"]
    if low > high:
        raise ConfigError("template.min_pixels", f"min_pixels {low} exceeds max_pixels {high}")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    chat_template = tokenizer.chat_template or _stored_processor_template(directory) or CHAT_TEMPLATE
    tokenizer.chat_template = chat_template
    return CoordexpQwen3VLProcessor(image_processor, tokenizer, chat_template=chat_template)
