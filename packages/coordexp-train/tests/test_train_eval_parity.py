"""faster-coco-eval vs pycocotools on a generated fixture (spec 06 §6.4; invariant I3).

The two libraries agree on every stat to about 1e-16, not bit for bit: pycocotools computes a
precision point as ``tp / (tp + fp + eps)``, which is ``1/(1 + 2⁻⁵²) = 1 − 2⁻⁵²`` for a lone first
true positive, where faster-coco-eval's C++ gives exactly 1.0. Where that point survives the
precision interpolation, the mean over 101 recall points differs in its last bits. The parity
test therefore compares the 12-stat vectors with an absolute tolerance of 1e-12 (nine orders of
magnitude below the printed precision), and a second test pins the cause.
"""

from __future__ import annotations

import numpy as np
import pytest

from coordexp.train.eval.categories import build_categories
from coordexp.train.eval.coco import coco_inputs, run_cocoeval
from coordexp.train.eval.fixtures import random_records, simple_record
from coordexp.train.eval.records import GTItem, PredItem

PARITY_ATOL = 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backends_give_the_same_twelve_stats(seed: int) -> None:
    records = random_records(60, seed=seed, poly_fraction=0.25)
    assert sum(len(r.pred) for r in records) > 100 and sum(len(r.gt) for r in records) > 100
    inputs = coco_inputs(records, build_categories(g.desc for r in records for g in r.gt))
    faster = run_cocoeval(inputs, "faster")
    reference = run_cocoeval(inputs, "pycocotools")
    assert faster.evaluated and reference.evaluated
    assert len(faster.stats) == len(reference.stats) == 12
    np.testing.assert_allclose(faster.stats, reference.stats, rtol=0.0, atol=PARITY_ATOL)
    # the fixture is not degenerate: the stats span a real range and include defined small/large APs
    assert 0.05 < faster.stats[0] < 0.95
    assert all(s >= 0 for s in faster.stats)


def test_parity_fixture_does_not_mutate_inputs() -> None:
    records = random_records(50, seed=5)
    inputs = coco_inputs(records, build_categories(g.desc for r in records for g in r.gt))
    before = repr(inputs)
    run_cocoeval(inputs, "faster")
    run_cocoeval(inputs, "pycocotools")
    assert repr(inputs) == before


def test_known_last_bit_difference_of_a_lone_true_positive() -> None:
    box = (10, 10, 210, 210)
    records = [simple_record(0, [GTItem("bbox_2d", box, "cat")], [PredItem("bbox_2d", box, "cat", 0.9, 0)])]
    inputs = coco_inputs(records, build_categories(["cat"]))
    faster = run_cocoeval(inputs, "faster").stats[0]
    reference = run_cocoeval(inputs, "pycocotools").stats[0]
    assert faster == 1.0
    assert reference == 1.0 / (1.0 + np.spacing(1.0))
    assert abs(faster - reference) < PARITY_ATOL
