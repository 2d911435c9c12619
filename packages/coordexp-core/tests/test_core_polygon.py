"""Polygon canonicalization (spec 01 §1.7; invariant 07 B6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from coordexp.core.polygon import canonicalize_polygon, is_canonical, polygon_signed_area2
from coordexp.testing.strategies import canonical_polys, raw_polygons

SPEC_POLY = (300, 200, 360, 260, 240, 260)


def _pairs(values):
    return [tuple(values[i : i + 2]) for i in range(0, len(values), 2)]


def _cleaned(values):
    """Steps 1–2 of §1.7 written independently: drop the closing repeat, then cyclic duplicates."""
    vertices = _pairs(values)
    if len(vertices) > 3 and vertices[-1] == vertices[0]:
        vertices = vertices[:-1]
    kept = [v for i, v in enumerate(vertices) if i == 0 or v != vertices[i - 1]]
    while len(kept) > 1 and kept[-1] == kept[0]:
        kept.pop()
    return kept


def _rotations(vertices):
    return {tuple(vertices[i:] + vertices[:i]) for i in range(len(vertices))}


def test_spec_polygon_is_canonical():
    assert polygon_signed_area2(SPEC_POLY) == 7200
    assert canonicalize_polygon(SPEC_POLY) == (SPEC_POLY, False)
    assert is_canonical(SPEC_POLY)


def test_counter_clockwise_input_is_reversed():
    ccw = (300, 200, 240, 260, 360, 260)
    assert polygon_signed_area2(ccw) == -7200
    assert canonicalize_polygon(ccw) == (SPEC_POLY, True)


def test_rotation_to_min_y_then_x_and_closing_vertex():
    rotated_closed = (360, 260, 240, 260, 300, 200, 360, 260)
    assert canonicalize_polygon(rotated_closed) == (SPEC_POLY, True)
    square = (10, 0, 10, 10, 0, 10, 0, 0)  # ties on y: the smaller x wins
    assert canonicalize_polygon(square)[0] == (0, 0, 10, 0, 10, 10, 0, 10)


def test_consecutive_and_cyclic_duplicates_dropped():
    values = (300, 200, 300, 200, 360, 260, 240, 260, 240, 260, 300, 200)
    assert canonicalize_polygon(values) == (SPEC_POLY, True)


def test_closing_repeat_kept_for_a_triangle_of_three_then_fails():
    # n == 3 with last == first: step 1 does not apply, step 2 removes the cyclic repeat.
    with pytest.raises(ValueError, match="^poly_arity:"):
        canonicalize_polygon((1, 1, 5, 5, 1, 1))


@pytest.mark.parametrize(
    "values",
    [(1, 2, 3, 4, 5), (1, 1, 2, 2), (7, 7, 7, 7, 7, 7, 7, 7), (1, 1, 2, 2, 2, 2, 1, 1)],
)
def test_poly_arity_errors(values):
    with pytest.raises(ValueError, match="^poly_arity:"):
        canonicalize_polygon(values)
    assert not is_canonical(values)


def test_non_integer_values_raise_type_error():
    with pytest.raises(TypeError):
        canonicalize_polygon((1.5, 2, 3, 4, 5, 6))


@settings(max_examples=200, deadline=None)
@given(raw_polygons())
def test_b6_canonicalization_properties(values):
    cleaned = _cleaned(values)
    if len(cleaned) < 3:
        with pytest.raises(ValueError, match="^poly_arity:"):
            canonicalize_polygon(values)
        return
    canonical, changed = canonicalize_polygon(values)
    assert changed == (canonical != tuple(values))
    vertices = _pairs(canonical)
    # a rotation of the cleaned input or of its reverse: adjacency preserved, never angle-sorted
    assert tuple(vertices) in _rotations(cleaned) | _rotations(cleaned[::-1])
    assert polygon_signed_area2(canonical) >= 0
    assert vertices[0] == min(vertices, key=lambda v: (v[1], v[0]))
    # idempotent
    assert canonicalize_polygon(canonical) == (canonical, False)
    assert is_canonical(canonical)


@settings(max_examples=100, deadline=None)
@given(canonical_polys())
def test_b6_reversal_and_rotation_are_undone(values):
    vertices = _pairs(values)
    area = polygon_signed_area2(values)
    for shift in range(len(vertices)):
        rotated = vertices[shift:] + vertices[:shift]
        flat = tuple(c for v in rotated for c in v)
        assert canonicalize_polygon(flat)[0] == values
        if area > 0:  # a zero-area polygon has no orientation to restore
            reversed_flat = tuple(c for v in rotated[::-1] for c in v)
            assert canonicalize_polygon(reversed_flat)[0] == values
