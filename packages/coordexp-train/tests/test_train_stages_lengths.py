"""`GTEncoder.length` (image size + assistant text only) equals the length of the full encoding."""

from __future__ import annotations

import pytest

from coordexp.train.data.jsonl import load_jsonl
from coordexp.train.data.prompts import resolve_prompt
from coordexp.train.data.synth import synthesize
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.models import build_tiny_tokenizer
from coordexp.train.models.processor import build_processor
from coordexp.train.stages.gt_packs import GTEncoder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Boxes and polygons, four image sizes, empty images, up to 6 objects."""
    return synthesize(tmp_path_factory.mktemp("shapes"), n_train=40, n_val=0, seed=3, max_objects=6)


@pytest.mark.parametrize(
    ("variant", "ordering", "field_order"),
    [("default", "sorted", "desc_first"), ("compact", "random", "geometry_first")],
)
def test_cheap_lengths_equal_full_encodings(shapes, tmp_path, variant, ordering, field_order):
    tokenizer = build_tiny_tokenizer()
    processor = build_processor(tokenizer, min_pixels=1024, max_pixels=65536)
    data = load_jsonl(
        shapes.train_jsonl, max_pixels=65536, trainer_variant="stage1", field_order=field_order, ordering=ordering
    )
    encoder = GTEncoder(
        data,
        info=TokenizerInfo.build(tokenizer),
        processor=processor,
        prompt=resolve_prompt(variant, ordering, field_order),
        field_order=field_order,
        seed=0,
    )
    for epoch in (0, 1):
        full = [encoder.encode(i, epoch).length for i in range(len(data))]
        assert [encoder.length(i, epoch) for i in range(len(data))] == full
    assert len(set(full)) > 10  # sizes and object counts really vary
    cached = encoder.lengths(cache_dir=tmp_path, max_pixels=65536)
    assert cached == [encoder.encode(i, 0).length for i in range(len(data))]
    assert encoder.lengths(cache_dir=tmp_path, max_pixels=65536) == cached  # read back from the cache
