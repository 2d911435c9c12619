"""Polygon canonicalization on load (spec 01 §1.7, D28): adjacency-preserving, never angle-sorted.

A polygon is a flat sequence ``[x1, y1, x2, y2, …]`` of integer bins. Canonical form:
no closing repeat, no cyclically consecutive duplicate vertices, at least 3 vertices, signed
area ``A2 ≥ 0`` (clockwise on screen, y down) and the minimal ``(y, x)`` vertex first.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

Vertex = tuple[int, int]


def _vertices(values: Sequence[int]) -> list[Vertex]:
    if len(values) % 2:
        raise ValueError(f"poly_arity: a polygon needs an even number of values, got {len(values)}")
    flat = [operator.index(v) for v in values]
    return list(zip(flat[0::2], flat[1::2]))


def _signed_area2(vertices: Sequence[Vertex]) -> int:
    n = len(vertices)
    return sum(
        vertices[i][0] * vertices[(i + 1) % n][1] - vertices[(i + 1) % n][0] * vertices[i][1]
        for i in range(n)
    )


def polygon_signed_area2(values: Sequence[int]) -> int:
    """Twice the signed area ``Σ (x_i·y_{i+1} − x_{i+1}·y_i)`` over the cyclic vertex list.

    Positive means clockwise on screen (y pointing down). Raises ValueError on odd length.
    """
    return _signed_area2(_vertices(values))


def _rotate_to_min(vertices: list[Vertex]) -> list[Vertex]:
    # The minimal (y, x) vertex goes first. When it occurs more than once (a pinched polygon),
    # the rotation whose (y, x) sequence is lexicographically smallest wins, so the result does
    # not depend on where the input started.
    by_yx = [(y, x) for x, y in vertices]
    lowest = min(by_yx)
    starts = [i for i, key in enumerate(by_yx) if key == lowest]
    first = min(starts, key=lambda i: by_yx[i:] + by_yx[:i]) if len(starts) > 1 else starts[0]
    return vertices[first:] + vertices[:first]


def canonicalize_polygon(values: Sequence[int]) -> tuple[tuple[int, ...], bool]:
    """Apply spec 01 §1.7 and return ``(canonical flat values, changed)``.

    Steps: drop a closing vertex equal to the first (when n > 3); drop cyclically consecutive
    duplicates; require ≥ 3 vertices; reverse if ``A2 < 0``; rotate the minimal ``(y, x)``
    vertex to the front (if it repeats, the rotation with the smallest ``(y, x)`` sequence).
    ``changed`` is True iff the output differs from the input. Raises ``ValueError("poly_arity: …")`` for odd length or < 3 vertices after cleaning;
    loaders wrap it in a ``DataContractError``.
    """
    vertices = _vertices(values)
    if len(vertices) > 3 and vertices[-1] == vertices[0]:
        vertices.pop()
    cleaned: list[Vertex] = []
    for vertex in vertices:
        if not cleaned or cleaned[-1] != vertex:
            cleaned.append(vertex)
    while len(cleaned) > 1 and cleaned[-1] == cleaned[0]:
        cleaned.pop()
    if len(cleaned) < 3:
        raise ValueError(
            f"poly_arity: a polygon needs at least 3 distinct consecutive vertices after cleaning, "
            f"got {len(cleaned)} from {len(values) // 2} vertices"
        )
    if _signed_area2(cleaned) < 0:
        cleaned.reverse()
    rotated = _rotate_to_min(cleaned)
    canonical = tuple(c for vertex in rotated for c in vertex)
    return canonical, canonical != tuple(operator.index(v) for v in values)


def is_canonical(values: Sequence[int]) -> bool:
    """True iff ``values`` is already in §1.7 canonical form (False also for invalid polygons)."""
    try:
        _, changed = canonicalize_polygon(values)
    except (ValueError, TypeError):
        return False
    return not changed
