"""Names and token strings of the Qwen3-VL chat and vision markup shared by every tokenizer we build.

The coord tokens themselves (``<|coord_0|>``..``<|coord_999|>``) are defined once in
``coordexp.core.codec.COORD_TOKENS``; this module only holds the chat/vision specials.
"""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

#: The chat/vision specials of the bundled tokenizer, in id order (they follow the BPE vocabulary).
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    IMAGE_PAD,
    VIDEO_PAD,
)

#: The markup one image occupies in a rendered prompt before the processor expands the pad token.
IMAGE_MARKUP = VISION_START + IMAGE_PAD + VISION_END

#: Generation prompt appended after the last user turn (spec 01 §1.5).
GENERATION_PROMPT = IM_START + "assistant\n"
