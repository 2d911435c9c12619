"""Torchvision-free Qwen3-VL processor: outputs, no resizing, token counts, save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from coordexp.core.errors import ConfigError
from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.render import build_messages
from coordexp.train.models import (
    CoordexpQwen3VLProcessor,
    build_processor,
    build_tiny_tokenizer,
    load_processor,
)
from coordexp.train.models.tokenizer import BUNDLED_BPE_ASSET


@pytest.fixture(scope="module")
def processor():
    return build_processor(build_tiny_tokenizer(), min_pixels=32 * 32, max_pixels=256 * 256)


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _prompt(processor, n_images: int = 1) -> str:
    messages = build_messages(PromptPair("sys", "find things"), "x.png")
    messages[1]["content"] = [{"type": "image"}] * n_images + [{"type": "text", "text": "find things"}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 96), (128, 64), (256, 256)])
def test_outputs_and_image_token_count(processor, height, width):
    batch = processor(text=[_prompt(processor)], images=[_image(height, width)], return_tensors="pt")
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "image_grid_thw",
        "mm_token_type_ids",
    }
    n_pads = (height // 16) * (width // 16) // 4
    ids = batch["input_ids"][0]
    is_pad = ids == processor.image_token_id
    assert int(is_pad.sum()) == n_pads == processor.image_token_count(height, width)
    assert torch.equal(batch["mm_token_type_ids"][0], is_pad.long())
    assert batch["image_grid_thw"].tolist() == [[1, height // 16, width // 16]]
    assert tuple(batch["pixel_values"].shape) == ((height // 16) * (width // 16), 3 * 2 * 16 * 16)
    # the pad run is framed by the vision markers
    first, last = int(is_pad.nonzero()[0]), int(is_pad.nonzero()[-1])
    assert (
        ids[first - 1] == processor.vision_start_token_id and ids[last + 1] == processor.vision_end_token_id
    )


def test_images_that_fit_are_not_resampled(processor):
    image = _image(64, 96, seed=3)
    pixel_values = processor(text=[_prompt(processor)], images=[image], return_tensors="pt")["pixel_values"]
    normalized = (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5  # [H, W, C]
    grid_h, grid_w = 64 // 16, 96 // 16
    # patch rows are ordered by 2x2 merge blocks, then row/col in the block; each row is
    # (channel, temporal copy, 16, 16) flattened
    blocks = normalized.transpose(2, 0, 1).reshape(3, grid_h // 2, 2, 16, grid_w // 2, 2, 16)
    blocks = blocks.transpose(1, 4, 2, 5, 0, 3, 6)
    expected = np.broadcast_to(blocks[:, :, :, :, :, None], (*blocks.shape[:5], 2, 16, 16))
    np.testing.assert_array_equal(pixel_values.numpy(), expected.reshape(grid_h * grid_w, -1))


def test_resized_image_size(processor):
    assert processor.resized_image_size(64, 96) == (64, 96)
    assert processor.resized_image_size(256, 256) == (256, 256)
    assert processor.resized_image_size(70, 100) == (64, 96)  # rounded to multiples of 32
    height, width = processor.resized_image_size(512, 512)  # above max_pixels: downscaled
    assert height * width <= processor.max_pixels and height % 32 == 0 and width % 32 == 0
    assert (processor.min_pixels, processor.max_pixels) == (1024, 65536)


def test_batch_with_two_images_keeps_text_order(processor):
    text = _prompt(processor, n_images=2)
    batch = processor(text=[text], images=[_image(32, 64), _image(64, 32)], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 2, 4], [1, 4, 2]]
    assert int(batch["mm_token_type_ids"].sum()) == 4


def test_save_and_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text(encoding="utf-8"))
    assert config["processor_class"] == "Qwen3VLProcessor"
    assert config["image_processor"]["patch_size"] == 16 and config["image_processor"]["merge_size"] == 2
    text, images = [_prompt(processor)], [_image(64, 96)]
    reference = processor(text=text, images=images, return_tensors="pt")
    for loaded in (CoordexpQwen3VLProcessor.from_pretrained(tmp_path), load_processor(tmp_path)):
        assert isinstance(loaded, CoordexpQwen3VLProcessor)
        assert loaded.chat_template == processor.chat_template
        assert (loaded.min_pixels, loaded.max_pixels) == (processor.min_pixels, processor.max_pixels)
        again = loaded(text=text, images=images, return_tensors="pt")
        assert set(again) == set(reference)
        assert all(torch.equal(again[k], reference[k]) for k in reference)
    overridden = load_processor(tmp_path, min_pixels=2048, max_pixels=128 * 128)
    assert (overridden.min_pixels, overridden.max_pixels) == (2048, 128 * 128)


def test_from_pretrained_never_asks_the_auto_image_processor(processor, tmp_path, monkeypatch):
    """Where torchvision is installed, AutoImageProcessor picks the torchvision backend, whose pixel
    values differ from the PIL backend's in the last bits (measured on a GPU machine); loading must
    not depend on what is installed."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("AutoImageProcessor.from_pretrained was called")

    processor.save_pretrained(tmp_path)
    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", refuse)
    loaded = CoordexpQwen3VLProcessor.from_pretrained(tmp_path, max_pixels=128 * 128, local_files_only=True)
    assert type(loaded.image_processor) is type(processor.image_processor)
    assert loaded.max_pixels == 128 * 128
    with pytest.raises(ConfigError, match=r"unsupported options \['revision'\]"):
        CoordexpQwen3VLProcessor.from_pretrained(tmp_path, revision="main")


@pytest.mark.parametrize(
    ("low", "high", "match"),
    [
        (10, 4096, "template.min_pixels"),
        (4096, 2048, "exceeds max_pixels"),
        (1024, 2.5, "template.max_pixels"),
    ],
)
def test_bad_pixel_bounds(low, high, match):
    with pytest.raises(ConfigError, match=match):
        build_processor(build_tiny_tokenizer(), min_pixels=low, max_pixels=high)


def test_tokenizer_without_vision_tokens_is_rejected(processor):
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(BUNDLED_BPE_ASSET)))
    with pytest.raises(ConfigError, match="lacks the Qwen3-VL vision tokens"):
        CoordexpQwen3VLProcessor(processor.image_processor, bare)


def test_load_processor_needs_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_processor(tmp_path / "missing")
