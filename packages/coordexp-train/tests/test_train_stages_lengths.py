"""`GTEncoder.length` (image size + assistant text only) equals the length of the full encoding;
`lengths()` are remembered in the process and in the cache file, under the data's fingerprint;
with the `sorted` GT order the ids and rows of encoded records are kept and reused unchanged."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

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


def _assert_same_sample(a, b) -> None:
    assert (a.sample_id, a.prompt_len, a.length) == (b.sample_id, b.prompt_len, b.length)
    for name in ("input_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.rows.segment == b.rows.segment
    for field in attrs.fields(type(a.rows)):
        if field.name != "segment":
            assert np.array_equal(getattr(a.rows, field.name), getattr(b.rows, field.name)), field.name


def test_sorted_order_reuses_ids_and_rows_without_changing_a_sample(shapes, monkeypatch):
    keeping = _encoder(shapes.train_jsonl, "default", "sorted", "desc_first")
    n = len(keeping.dataset)
    first = [keeping.encode(i, 0) for i in range(n)]
    assert keeping.cached_texts == n

    def not_again(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(gt_packs, "encode_gt", not_again)
    for epoch in (1, 2):  # the pixels are read again, the rest is the kept encoding
        for i in range(n):
            _assert_same_sample(keeping.encode(i, epoch), first[i])
    monkeypatch.undo()
    monkeypatch.setattr(gt_packs, "TEXT_CACHE_SIZE", 0)
    fresh = _encoder(shapes.train_jsonl, "default", "sorted", "desc_first")
    for i in range(n):
        _assert_same_sample(fresh.encode(i, 1), first[i])
    assert fresh.cached_texts == 0


def test_text_cache_is_bounded_and_off_for_random_order(shapes, monkeypatch):
    monkeypatch.setattr(gt_packs, "TEXT_CACHE_SIZE", 3)
    bounded = _encoder(shapes.train_jsonl, "default", "sorted", "desc_first")
    for i in range(len(bounded.dataset)):
        bounded.encode(i, 0)
    assert bounded.cached_texts == 3

    shuffled = _encoder(shapes.train_jsonl, "compact", "random", "geometry_first")
    n = len(shuffled.dataset)
    by_epoch = [[shuffled.encode(i, epoch).input_ids for i in range(n)] for epoch in (0, 1)]
    assert shuffled.cached_texts == 0
    assert any(not torch.equal(a, b) for a, b in zip(*by_epoch))  # the order really changes per epoch
