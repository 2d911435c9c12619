"""Rollout seeds and server chunking (spec 03 §3.1, D14) and invariant E11."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.errors import CoordexpError
from coordexp.rollout.seeds import chunk_requests, gather, request_seed, request_seeds, scatter, seed_base

MAX_SEED = 2**31 - 1


def test_seed_base_examples() -> None:
    assert seed_base(42, 0) == 42
    assert seed_base(42, 3) == 42 + 3 * 1000003
    assert seed_base(0, 0) == 1  # norm(0) = 1
    assert seed_base(2**31, 0) == 1  # masked to 0, then normalized
    assert seed_base(-1000003, 1) == 1
    assert seed_base(MAX_SEED, 1) == (MAX_SEED + 1000003) & MAX_SEED
    assert seed_base(-1, 0) == MAX_SEED


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(-(2**40), 2**40), step=st.integers(0, 10**9))
def test_seed_base_is_pure_and_in_range(seed: int, step: int) -> None:
    base = seed_base(seed, step)
    assert base == seed_base(seed, step)
    assert 1 <= base <= MAX_SEED
    raw = (seed + step * 1000003) & 0x7FFFFFFF
    assert base == (raw if raw else 1)


def test_request_seed_examples() -> None:
    assert request_seed(100, 0) == 100
    assert request_seed(100, 7) == 107
    assert request_seed(MAX_SEED, 1) == 1  # wraps to 0, then normalized
    assert request_seed(MAX_SEED, 2) == 1
    assert request_seed(MAX_SEED, 3) == 2


@settings(max_examples=100, deadline=None)
@given(
    base=st.integers(1, MAX_SEED),
    n=st.integers(0, 40),
    n_servers=st.integers(1, 8),
    offset=st.integers(0, 10**6),
)
def test_request_seeds_do_not_depend_on_chunking(base: int, n: int, n_servers: int, offset: int) -> None:
    whole = request_seeds(base, offset, n)
    chunked = []
    for start, end in chunk_requests(n, n_servers):
        chunked += request_seeds(base, offset + start, end - start)
    assert chunked == whole
    assert all(1 <= s <= MAX_SEED for s in whole)


@pytest.mark.parametrize(
    ("n", "n_servers", "expected"),
    [
        (10, 3, [(0, 4), (4, 8), (8, 10)]),
        (9, 3, [(0, 3), (3, 6), (6, 9)]),
        (2, 4, [(0, 1), (1, 2), (2, 2), (2, 2)]),
        (5, 1, [(0, 5)]),
        (0, 3, [(0, 0), (0, 0), (0, 0)]),
        (7, 2, [(0, 4), (4, 7)]),
    ],
)
def test_chunking_examples(n: int, n_servers: int, expected) -> None:
    assert chunk_requests(n, n_servers) == expected


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 500), n_servers=st.integers(1, 16))
def test_chunking_follows_d14(n: int, n_servers: int) -> None:
    chunks = chunk_requests(n, n_servers)
    size = math.ceil(n / n_servers)
    assert len(chunks) == n_servers
    for i, (start, end) in enumerate(chunks):
        assert (start, end) == (min(n, i * size), min(n, (i + 1) * size))
    assert [i for start, end in chunks for i in range(start, end)] == list(range(n))


def test_zero_requests_send_nothing() -> None:
    assert all(len(chunk) == 0 for chunk in scatter([], 4))


def test_scatter_gather_round_trip() -> None:
    items = list(range(11))
    ranges = chunk_requests(len(items), 3)
    chunks = scatter(items, 3)
    assert [len(c) for c in chunks] == [4, 4, 3]
    outputs = [[f"out{i}" for i in chunk] for chunk in chunks]
    assert gather(outputs, ranges) == [f"out{i}" for i in items]


def test_gather_rejects_short_server_answers() -> None:
    ranges = chunk_requests(5, 2)
    with pytest.raises(CoordexpError, match=r"server 1 returned 1 outputs for requests \[3, 5\)"):
        gather([[0, 1, 2], [3]], ranges)
    with pytest.raises(CoordexpError, match="2 servers"):
        gather([[0, 1, 2]], ranges)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: seed_base(1.5, 0), "seed must be an int"),
        (lambda: seed_base(True, 0), "seed must be an int"),
        (lambda: seed_base(1, -1), "step must be >= 0"),
        (lambda: request_seed(1, -1), "index must be >= 0"),
        (lambda: request_seeds(1, 0, -2), "count must be >= 0"),
        (lambda: chunk_requests(5, 0), "n_servers must be >= 1"),
        (lambda: chunk_requests(-1, 2), "n must be >= 0"),
    ],
)
def test_bad_arguments_raise(call, message: str) -> None:
    with pytest.raises(CoordexpError, match=message):
        call()
