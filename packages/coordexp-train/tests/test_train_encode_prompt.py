"""`PromptEncoder` (ids cached per image grid) gives exactly what `encode_prompt` gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from coordexp.train.data.prompts import resolve_prompt
from coordexp.train.encode.prompt import PromptEncoder, encode_prompt
from coordexp.train.models import build_tiny_tokenizer
from coordexp.train.models.processor import build_processor


@pytest.fixture(scope="module")
def processor():
    return build_processor(build_tiny_tokenizer(), min_pixels=32 * 32, max_pixels=256 * 256)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    # Repeated sizes exercise the cache; a grey-scale file checks the RGB conversion.
    for i, (h, w) in enumerate([(64, 96), (128, 128), (64, 96), (32, 256), (128, 128), (96, 64)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels) if i != 5 else Image.fromarray(pixels[..., 0], mode="L")
        path = root / f"{i}.png"
        image.save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("variant", ["default", "compact", "minimal"])
def test_prompt_encoder_equals_encode_prompt(processor, images, variant):
    pair = resolve_prompt(variant, "sorted", "desc_first")
    encoder = PromptEncoder(processor, pair)
    for path in images:
        cached, reference = encoder(path), encode_prompt(processor, pair, path)
        assert cached.text == reference.text
        assert torch.equal(cached.input_ids, reference.input_ids)
        assert cached.input_ids.dtype == reference.input_ids.dtype == torch.long
        assert torch.equal(cached.pixel_values, reference.pixel_values)
        assert torch.equal(cached.image_grid_thw, reference.image_grid_thw)
        assert cached.image_grid_thw.dtype == torch.long
    assert encoder.cached_grids == 4  # one tokenization per distinct grid


def test_prompt_encoder_ids_follow_the_grid(processor, images):
    encoder = PromptEncoder(processor, resolve_prompt("default", "sorted", "desc_first"))
    small, large = encoder(images[0]), encoder(images[1])
    pads = [int((p.input_ids == processor.image_token_id).sum()) for p in (small, large)]
    assert pads == [int(p.image_grid_thw.prod()) // 4 for p in (small, large)]
    assert pads[0] < pads[1]
