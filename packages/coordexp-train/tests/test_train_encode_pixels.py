"""`PatchEncoder` gives exactly the image processor's pixel values, and hands it what it cannot reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from coordexp.train.encode.pixels import PatchEncoder
from coordexp.train.models import build_tiny_tokenizer
from coordexp.train.models.processor import build_processor


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _random_images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _assert_same(encoder, processor, images):
    ours = encoder(images)
    theirs = processor.image_processor(images=images, return_tensors="pt")
    assert ours["pixel_values"].dtype == theirs["pixel_values"].dtype == torch.float32
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    assert ours["image_grid_thw"].dtype == torch.int64
    assert torch.equal(ours["image_grid_thw"], theirs["image_grid_thw"])


@pytest.mark.parametrize("min_pixels", [32 * 32, 128 * 128])
def test_equals_the_image_processor_one_image_at_a_time_and_batched(tokenizer, min_pixels):
    processor = build_processor(tokenizer, min_pixels=min_pixels, max_pixels=256 * 256)
    encoder = PatchEncoder(processor)
    images = _random_images([(128, 128), (256, 256), (128, 192), (256, 128)])
    assert all(encoder.handles(image) for image in images)
    for image in images:
        _assert_same(encoder, processor, [image])
    _assert_same(encoder, processor, images)


def test_every_level_of_every_channel_maps_like_the_processor(tokenizer):
    processor = build_processor(tokenizer, min_pixels=32 * 32, max_pixels=256 * 256)
    encoder = PatchEncoder(processor)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels = np.stack([levels, levels[::-1], levels.T], axis=-1)  # each channel its own order
    _assert_same(encoder, processor, [Image.fromarray(np.tile(pixels, (2, 2, 1)))])


def test_images_it_cannot_reproduce_go_through_the_processor(tokenizer):
    processor = build_processor(tokenizer, min_pixels=32 * 32, max_pixels=128 * 128)
    encoder = PatchEncoder(processor)
    resized = _random_images([(50, 70), (256, 256)])  # off the 32-pixel grid; above max_pixels
    grey = Image.fromarray(np.zeros((64, 64), dtype=np.uint8), mode="L")
    for image in [*resized, grey]:
        assert not encoder.handles(image)
        _assert_same(encoder, processor, [image])
    mixed = [*_random_images([(64, 64)]), resized[0]]
    _assert_same(encoder, processor, mixed)


def test_a_processor_too_small_for_the_calibration_strip_sends_everything_to_itself(tokenizer):
    processor = build_processor(tokenizer, min_pixels=32 * 32, max_pixels=64 * 64)
    encoder = PatchEncoder(processor)
    images = _random_images([(64, 64), (32, 64)])
    assert encoder.table is None and not any(encoder.handles(image) for image in images)
    _assert_same(encoder, processor, images)
