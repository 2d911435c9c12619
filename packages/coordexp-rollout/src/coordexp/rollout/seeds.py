"""Rollout seeds and server chunking (spec 03 §3.1, D14; invariant E11).

Seeds live in [1, 2³¹−1]: ``norm(x) = x`` except ``norm(0) = 1``.

* ``seed_base(seed, step) = norm((seed + step·1000003) & 0x7FFFFFFF)``;
* request ``i`` (its global index: rank offset + local index, or the dataset index in eval) gets
  ``norm((seed_base + i) & 0x7FFFFFFF)``, so a request's seed never depends on how requests are
  batched or chunked across servers.

Chunking: a rank's N requests go to S servers as contiguous chunks of ``c = ceil(N/S)`` in
server-list order; server i gets ``[i·c, min(N, (i+1)·c))``; an empty chunk sends nothing.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeVar

from coordexp.core.errors import CoordexpError

SEED_MASK = 0x7FFFFFFF
STEP_STRIDE = 1000003

T = TypeVar("T")


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CoordexpError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise CoordexpError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _norm(x: int) -> int:
    return x if x != 0 else 1


def seed_base(seed: int, step: int) -> int:
    """Base seed of optimizer step ``step`` for ``training.seed = seed``; in [1, 2³¹−1]."""
    seed = _int("seed", seed)
    step = _int("step", step, 0)
    return _norm((seed + step * STEP_STRIDE) & SEED_MASK)


def request_seed(base: int, index: int) -> int:
    """Seed of the request with global index ``index`` (>= 0) under ``base``; in [1, 2³¹−1]."""
    base = _int("base", base)
    index = _int("index", index, 0)
    return _norm((base + index) & SEED_MASK)


def request_seeds(base: int, first_index: int, count: int) -> list[int]:
    """Seeds of ``count`` requests with consecutive global indices from ``first_index``."""
    count = _int("count", count, 0)
    return [request_seed(base, first_index + k) for k in range(count)]


def chunk_requests(n: int, n_servers: int) -> list[tuple[int, int]]:
    """``n_servers`` half-open ranges ``(start, end)``, server i's chunk (D14); empty when start == end."""
    n = _int("n", n, 0)
    n_servers = _int("n_servers", n_servers, 1)
    size = -(-n // n_servers)
    return [(min(n, i * size), min(n, (i + 1) * size)) for i in range(n_servers)]


def scatter(items: Sequence[T], n_servers: int) -> list[Sequence[T]]:
    """Split ``items`` into per-server chunks per :func:`chunk_requests` (empty ones included)."""
    return [items[start:end] for start, end in chunk_requests(len(items), n_servers)]


def gather(chunks: Sequence[Sequence[T]], ranges: Sequence[tuple[int, int]]) -> list[T]:
    """Reassemble per-server outputs (server order) into input order.

    ``ranges`` are the :func:`chunk_requests` ranges the chunks answer; a chunk whose length is not
    ``end − start`` raises :class:`CoordexpError` naming the server.
    """
    if len(chunks) != len(ranges):
        raise CoordexpError(f"got {len(chunks)} output chunks for {len(ranges)} servers")
    out: list[T] = []
    for server, (chunk, (start, end)) in enumerate(zip(chunks, ranges, strict=True)):
        if len(chunk) != end - start:
            raise CoordexpError(
                f"server {server} returned {len(chunk)} outputs for requests [{start}, {end}) "
                f"({end - start} expected)"
            )
        out.extend(chunk)
    return out
