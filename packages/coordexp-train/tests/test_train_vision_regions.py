"""Region labels for vision pretraining: hand-built grids, properties over random scenes (also
with sub-cells), the real processor's merged-token order (the labels' row-major layout must match
it) and the head's matching row order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from coordexp.core.coordjson.serialize import CoordObject
from coordexp.core.errors import ConfigError
from coordexp.train.models import build_processor, build_tiny_tokenizer
from coordexp.train.vision.objective import RegionHead
from coordexp.train.vision.regions import RegionVocab, normalized_boxes, region_labels

VOCAB = RegionVocab(("blue circle", "red square", "red triangle"))
CIRCLE, SQUARE, TRIANGLE = 1, 2, 3


def box(desc: str, x1: int, y1: int, x2: int, y2: int) -> CoordObject:
    return CoordObject(desc, "bbox_2d", (x1, y1, x2, y2))


def grid(labels, h: int, w: int) -> list[list[int]]:
    return labels.classes.reshape(h, w).tolist()


def test_box_covers_the_cells_whose_centres_it_holds():
    # 4x4 grid: cell centres at 0.125, 0.375, 0.625, 0.875 → bins ~125, 375, 624, 874.
    labels = region_labels([box("red square", 300, 0, 999, 400)], VOCAB, 4, 4)
    assert grid(labels, 4, 4) == [
        [0, SQUARE, SQUARE, SQUARE],
        [0, SQUARE, SQUARE, SQUARE],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    # The box centre (0.65, 0.2) is cell (0, 2).
    assert np.flatnonzero(labels.centres).tolist() == [2]


def test_smaller_box_wins_overlaps_and_ties_go_to_the_earlier_object():
    big = box("red square", 0, 0, 999, 999)
    small = box("blue circle", 0, 0, 499, 499)
    labels = region_labels([big, small], VOCAB, 2, 2)
    assert grid(labels, 2, 2) == [[CIRCLE, SQUARE], [SQUARE, SQUARE]]
    twin = box("red triangle", 0, 0, 499, 499)
    assert grid(region_labels([small, twin], VOCAB, 2, 2), 2, 2)[0][0] == CIRCLE
    assert grid(region_labels([twin, small], VOCAB, 2, 2), 2, 2)[0][0] == TRIANGLE


def test_an_object_smaller_than_a_cell_still_owns_its_centre_cell():
    # Inside cell (1, 1) of a 4x4 grid but away from its centre (0.375, 0.375).
    tiny = box("red triangle", 260, 260, 300, 300)
    labels = region_labels([box("red square", 0, 0, 999, 999), tiny], VOCAB, 4, 4)
    assert grid(labels, 4, 4)[1][1] == TRIANGLE
    assert int(labels.centres.sum()) == 2
    assert (labels.classes == SQUARE).sum() == 15


def test_polygon_counts_as_its_bounding_box():
    poly = CoordObject("red triangle", "poly", (0, 0, 999, 0, 500, 400))
    assert normalized_boxes([poly]).tolist() == [[0.0, 0.0, 1.0, 400 / 999]]
    assert grid(region_labels([poly], VOCAB, 2, 2), 2, 2) == [[TRIANGLE, TRIANGLE], [0, 0]]


def test_empty_image_is_all_background():
    labels = region_labels([], VOCAB, 3, 5)
    assert labels.classes.tolist() == [0] * 15 and not labels.centres.any()


def test_vocabulary_errors_name_the_problem():
    with pytest.raises(ConfigError, match="not in the region vocabulary"):
        VOCAB.ids([box("green hexagon", 0, 0, 9, 9)])
    with pytest.raises(ConfigError, match="no objects"):
        RegionVocab(())
    with pytest.raises(ConfigError, match="unique and sorted"):
        RegionVocab(("red square", "blue circle"))
    assert VOCAB.n_classes == 4


bins = st.integers(0, 999)


@st.composite
def scenes(draw):
    objects = []
    for _ in range(draw(st.integers(0, 6))):
        x1, x2 = sorted((draw(bins), draw(bins)))
        y1, y2 = sorted((draw(bins), draw(bins)))
        objects.append(box(draw(st.sampled_from(VOCAB.descs)), x1, y1, x2, y2))
    return objects, draw(st.integers(1, 8)), draw(st.integers(1, 8))


@settings(max_examples=200, deadline=None)
@given(scenes())
def test_every_label_is_explained_by_a_box(scene):
    objects, h, w = scene
    labels = region_labels(objects, VOCAB, h, w)
    assert labels.classes.shape == labels.centres.shape == (h * w,)
    assert labels.classes.min() >= 0 and labels.classes.max() < VOCAB.n_classes
    assert labels.centres.sum() == len({_centre_cell(o, h, w) for o in objects})
    boxes = normalized_boxes(objects)
    for cell in range(h * w):
        u, v = ((cell % w) + 0.5) / w, ((cell // w) + 0.5) / h
        holders = [k for k, b in enumerate(boxes) if b[0] <= u <= b[2] and b[1] <= v <= b[3]]
        if labels.centres[cell]:
            # Centre cells carry the smallest (then earliest) object centred there.
            centred = [k for k, o in enumerate(objects) if _centre_cell(o, h, w) == cell]
            owner = min(centred, key=lambda k: (_area(boxes[k]), k))
        elif holders:
            owner = min(holders, key=lambda k: (_area(boxes[k]), k))
        else:
            assert labels.classes[cell] == 0
            continue
        assert labels.classes[cell] == VOCAB.ids([objects[owner]])[0]


def _area(b) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def _centre_cell(obj: CoordObject, h: int, w: int) -> int:
    b = normalized_boxes([obj])[0]
    return min(int((b[1] + b[3]) / 2 * h), h - 1) * w + min(int((b[0] + b[2]) / 2 * w), w - 1)


def test_labels_follow_the_real_processors_merged_token_order():
    """A bright square on one merged cell must land on that cell's token (row-major grid)."""
    image_processor = build_processor(build_tiny_tokenizer()).image_processor
    merge, patch = image_processor.merge_size, image_processor.patch_size
    cell = merge * patch
    gh, gw = 3, 4
    pixels = np.zeros((gh * cell, gw * cell, 3), dtype=np.uint8)
    pixels[1 * cell : 2 * cell, 2 * cell : 3 * cell] = 255  # merged cell (1, 2)
    out = image_processor(images=[Image.fromarray(pixels)], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, gh * merge, gw * merge]]
    per_token = out["pixel_values"].reshape(gh * gw, merge * merge, -1).mean(dim=(1, 2))
    bright = int(per_token.argmax())
    labels = region_labels([box("red square", 500, 340, 740, 650)], VOCAB, gh, gw)
    assert bright == 1 * gw + 2 == int(np.flatnonzero(labels.classes == SQUARE)[0])


def test_subcells_split_each_token_and_keep_token_major_order():
    # Two merged cells side by side, 2x2 sub-cells each: the fine grid is 2x4 with sub-cell
    # centres at u = 0.125, 0.375, 0.625, 0.875. The box holds only fine column 2, i.e. the left
    # column of token 1's sub-cells.
    labels = region_labels([box("red square", 550, 0, 700, 999)], VOCAB, 1, 2, subcells=2)
    assert labels.classes.reshape(2, 4).tolist() == [[0, 0, 0, 0], [SQUARE, 0, SQUARE, 0]]
    # The box centre (0.625, 0.5) is fine cell (1, 2): token 1, its sub-cell (1, 0).
    assert np.flatnonzero(labels.centres).tolist() == [4 + 2]
    with pytest.raises(ValueError, match="subcells"):
        region_labels([], VOCAB, 1, 1, subcells=0)


@settings(max_examples=100, deadline=None)
@given(scenes(), st.integers(1, 4))
def test_subcells_are_the_fine_grid_labels_grouped_by_token(scene, s):
    objects, h, w = scene
    coarse = region_labels(objects, VOCAB, h, w, subcells=s)
    fine = region_labels(objects, VOCAB, h * s, w * s)
    assert coarse.classes.shape == (h * w * s * s,)
    for field in ("classes", "centres"):
        per_token = getattr(coarse, field).reshape(h, w, s, s)
        assert (per_token.transpose(0, 2, 1, 3).reshape(-1) == getattr(fine, field)).all()


def test_region_head_groups_each_tokens_subcells_in_consecutive_rows():
    head = RegionHead(hidden=8, n_classes=VOCAB.n_classes, subcells=3)
    features = torch.randn(2, 8)
    logits = head(features)
    assert logits.shape == (2 * 9, VOCAB.n_classes)
    # Rows 0..8 are token 0's sub-cells: they change when token 0 does, and only then.
    moved = features.clone()
    moved[0] += 1.0
    changed = (head(moved) != logits).any(dim=1)
    assert changed[:9].all() and not changed[9:].any()
