"""`GTEncoder.length` (image size + assistant text only) equals the length of the full encoding;
`lengths()` are remembered in the process and in the cache file, under the data's fingerprint."""

from __future__ import annotations

import pytest

from coordexp.train.data.jsonl import load_jsonl
from coordexp.train.data.prompts import resolve_prompt
from coordexp.train.data.synth import synthesize
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.models import build_tiny_tokenizer
from coordexp.train.models.processor import build_processor
from coordexp.train.stages import gt_packs
from coordexp.train.stages.gt_packs import GTEncoder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Boxes and polygons, four image sizes, empty images, up to 6 objects."""
    return synthesize(tmp_path_factory.mktemp("shapes"), n_train=40, n_val=0, seed=3, max_objects=6)


@pytest.mark.parametrize(
    ("variant", "ordering", "field_order"),
    [("default", "sorted", "desc_first"), ("compact", "random", "geometry_first")],
)
def _encoder(jsonl, variant: str, ordering: str, field_order: str) -> GTEncoder:
    tokenizer = build_tiny_tokenizer()
    processor = build_processor(tokenizer, min_pixels=1024, max_pixels=65536)
    data = load_jsonl(
        jsonl, max_pixels=65536, trainer_variant="stage1", field_order=field_order, ordering=ordering
    )
    return GTEncoder(
        data,
        info=TokenizerInfo.build(tokenizer),
        processor=processor,
        prompt=resolve_prompt(variant, ordering, field_order),
        field_order=field_order,
        seed=0,
    )


@pytest.mark.parametrize(
    ("variant", "ordering", "field_order"),
    [("default", "sorted", "desc_first"), ("compact", "random", "geometry_first")],
)
def test_cheap_lengths_equal_full_encodings(shapes, tmp_path, variant, ordering, field_order):
    encoder = _encoder(shapes.train_jsonl, variant, ordering, field_order)
    n = len(encoder.dataset)
    for epoch in (0, 1):
        full = [encoder.encode(i, epoch).length for i in range(n)]
        assert [encoder.length(i, epoch) for i in range(n)] == full
    assert len(set(full)) > 10  # sizes and object counts really vary
    gt_packs._LENGTHS.clear()
    cached = encoder.lengths(cache_dir=tmp_path, max_pixels=65536)
    assert cached == [encoder.encode(i, 0).length for i in range(n)]

    def untokenized(index: int, epoch: int) -> int:
        raise AssertionError("the lengths were known")

    again = _encoder(shapes.train_jsonl, variant, ordering, field_order)
    again.length = untokenized
    assert again.lengths(cache_dir=None, max_pixels=65536) == cached  # this process remembers them
    gt_packs._LENGTHS.clear()
    assert again.lengths(cache_dir=tmp_path, max_pixels=65536) == cached  # read back from the file
    assert again.lengths(cache_dir=None, max_pixels=65536) == cached  # and remembered again
    with pytest.raises(AssertionError, match="were known"):  # another fingerprint
        again.lengths(cache_dir=tmp_path, max_pixels=65536 // 2)
