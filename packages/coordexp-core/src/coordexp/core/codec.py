"""Coordinate codec: norm1000 bins, pixel conversions, coord token strings and ids (spec 01 §1.2).

There are ``NUM_BINS = 1000`` bins ``k ∈ 0..999``; bin ``k`` is written as the token ``<|coord_k|>``.
Rounding is always half-up, ``floor(v + 0.5)`` (D22); the constant 1000 is never a divisor (D10).

Scalar functions take and return Python numbers; the ``*_array`` functions are their vectorized
NumPy twins (same formulas, element-wise) for hot paths. :class:`CoordVocab` maps tokenizer ids to
bins and back, built once at startup and validated fail-fast.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np
import torch

from coordexp.core.errors import CoordVocabError

NUM_BINS = 1000
MAX_BIN = NUM_BINS - 1
COORD_TOKEN_PREFIX = "<|coord_"
COORD_TOKEN_SUFFIX = "|>"
COORD_TOKENS: tuple[str, ...] = tuple(f"{COORD_TOKEN_PREFIX}{k}{COORD_TOKEN_SUFFIX}" for k in range(NUM_BINS))
_BIN_OF_TOKEN: dict[str, int] = {token: k for k, token in enumerate(COORD_TOKENS)}


# ---------------------------------------------------------------------------------------------
# scalar conversions
# ---------------------------------------------------------------------------------------------


def round_half_up(v: float) -> int:
    """``floor(v + 0.5)``: the only rounding used anywhere in coordexp (D22; never banker's)."""
    value = float(v)
    if not math.isfinite(value):
        raise ValueError(f"round_half_up: expected a finite number, got {v!r}")
    return math.floor(value + 0.5)


def check_bin(k: Any, *, what: str = "bin") -> int:
    """Return ``k`` as an int if it is an integer in 0..999, else raise ValueError naming ``what``."""
    if isinstance(k, bool):
        raise ValueError(f"{what}: expected an integer bin in 0..{MAX_BIN}, got the bool {k!r}")
    try:
        value = operator.index(k)
    except TypeError:
        raise ValueError(f"{what}: expected an integer bin in 0..{MAX_BIN}, got {k!r}") from None
    if not 0 <= value <= MAX_BIN:
        raise ValueError(f"{what}: bin {value} is outside 0..{MAX_BIN}")
    return value


def _check_size(size: Any) -> int:
    if isinstance(size, bool):
        raise ValueError(f"image size must be an integer >= 1, got {size!r}")
    try:
        value = operator.index(size)
    except TypeError:
        raise ValueError(f"image size must be an integer >= 1, got {size!r}") from None
    if value < 1:
        raise ValueError(f"image size must be an integer >= 1, got {value}")
    return value


def _clamp_bin(k: int) -> int:
    return min(max(k, 0), MAX_BIN)


def encode(c: float) -> int:
    """Normalized coordinate ``c ∈ [0, 1]`` → bin ``clamp(round_half_up(999·c), 0, 999)``.

    Finite values slightly outside [0, 1] (float noise) clamp to the edge bins; NaN/inf raise.
    """
    value = float(c)
    if not math.isfinite(value):
        raise ValueError(f"encode: expected a finite normalized coordinate, got {c!r}")
    return _clamp_bin(math.floor(999.0 * value + 0.5))


def decode(k: int) -> float:
    """Bin → normalized coordinate ``k / 999`` (bin 999 is exactly 1.0)."""
    return check_bin(k, what="decode") / 999.0


def pixel_to_bin(x: float, size: int) -> int:
    """Pixel coordinate ``x ∈ [0, size]`` → bin ``clamp(round_half_up(999·x / max(1, size−1)), 0, 999)``.

    ``size`` is the image width (for x) or height (for y). ``x = size`` clamps to 999. A value
    outside [0, size] (or non-finite) is a converter data error and raises ValueError.
    """
    extent = _check_size(size)
    value = float(x)
    if not math.isfinite(value) or value < 0.0 or value > extent:
        raise ValueError(f"pixel coordinate {x!r} is outside [0, {extent}] for an image side of {extent} px")
    return _clamp_bin(math.floor(999.0 * value / max(1, extent - 1) + 0.5))


def bin_to_pixel(k: int, size: int) -> float:
    """Bin → float pixel coordinate ``k · max(1, size−1) / 999``."""
    return check_bin(k, what="bin_to_pixel") * max(1, _check_size(size) - 1) / 999.0


def bin_to_pixel_int(k: int, size: int) -> int:
    """Bin → integer pixel ``clamp(round_half_up(bin_to_pixel(k, size)), 0, size−1)``."""
    extent = _check_size(size)
    pixel = math.floor(check_bin(k, what="bin_to_pixel_int") * max(1, extent - 1) / 999.0 + 0.5)
    return min(max(pixel, 0), extent - 1)


# ---------------------------------------------------------------------------------------------
# vectorized twins (NumPy; element-wise, same formulas)
# ---------------------------------------------------------------------------------------------


def _finite_float_array(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: expected finite values, got NaN or inf")
    return array


def _bin_array(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected an integer array of bins, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or array.max() > MAX_BIN):
        raise ValueError(f"{what}: bins must lie in 0..{MAX_BIN}, got range [{array.min()}, {array.max()}]")
    return array


def encode_array(c: Any) -> np.ndarray:
    """Vectorized :func:`encode`: float array → int64 bins of the same shape."""
    array = _finite_float_array(c, "encode_array")
    return np.clip(np.floor(999.0 * array + 0.5), 0, MAX_BIN).astype(np.int64)


def decode_array(k: Any) -> np.ndarray:
    """Vectorized :func:`decode`: int bins → float64 ``k / 999``."""
    return _bin_array(k, "decode_array") / 999.0


def pixels_to_bins(x: Any, size: int) -> np.ndarray:
    """Vectorized :func:`pixel_to_bin` for one image side; raises if any value is outside [0, size]."""
    extent = _check_size(size)
    array = _finite_float_array(x, "pixels_to_bins")
    if array.size and (array.min() < 0.0 or array.max() > extent):
        raise ValueError(
            f"pixels_to_bins: pixel coordinates must lie in [0, {extent}], "
            f"got range [{array.min()}, {array.max()}]"
        )
    return np.clip(np.floor(999.0 * array / max(1, extent - 1) + 0.5), 0, MAX_BIN).astype(np.int64)


def bins_to_pixels(k: Any, size: int) -> np.ndarray:
    """Vectorized :func:`bin_to_pixel`: int bins → float64 pixels."""
    extent = _check_size(size)
    return _bin_array(k, "bins_to_pixels") * float(max(1, extent - 1)) / 999.0


def bins_to_pixels_int(k: Any, size: int) -> np.ndarray:
    """Vectorized :func:`bin_to_pixel_int`: int bins → int64 pixels in [0, size−1]."""
    extent = _check_size(size)
    pixels = np.floor(bins_to_pixels(k, extent) + 0.5)
    return np.clip(pixels, 0, extent - 1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# token strings
# ---------------------------------------------------------------------------------------------


def coord_token(k: int) -> str:
    """Bin → its token string ``<|coord_k|>`` (decimal, no leading zeros)."""
    return COORD_TOKENS[check_bin(k, what="coord_token")]


def parse_coord_token(s: str) -> int:
    """Token string → bin. Strict: exactly ``<|coord_k|>`` with ``k`` in 0..999 written canonically.

    Raises ValueError for anything else (leading zeros, ``k > 999``, whitespace, other text).
    """
    k = _BIN_OF_TOKEN.get(s) if isinstance(s, str) else None
    if k is None:
        raise ValueError(
            f"not a coord token: {s!r}; expected '<|coord_k|>' with k an integer 0..{MAX_BIN} "
            "written without leading zeros"
        )
    return k


# ---------------------------------------------------------------------------------------------
# token ids
# ---------------------------------------------------------------------------------------------

_MAX_LISTED = 8


def _listing(items: list[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:_MAX_LISTED])
    return shown + (f", … ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


def _as_long_cpu(ids: Any) -> torch.Tensor:
    tensor = torch.as_tensor(ids)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise CoordVocabError(f"coord_ids must be an integer tensor, got dtype {tensor.dtype}")
    return tensor.detach().to(device="cpu", dtype=torch.long).contiguous().clone()


@attrs.frozen(eq=False)
class CoordVocab:
    """Token id ↔ bin map of the 1000 coord tokens (spec 01 §1.2).

    ``coord_ids`` is a CPU ``LongTensor[1000]`` in bin order (``coord_ids[k]`` is the id of
    ``<|coord_k|>``); ids are distinct and lie in ``[0, num_embeddings)``; contiguity is not
    required. Construction validates this and raises :class:`CoordVocabError` otherwise.
    """

    coord_ids: torch.Tensor = attrs.field(converter=_as_long_cpu)
    num_embeddings: int = attrs.field()
    _bin_table: np.ndarray = attrs.field(init=False, repr=False)
    _ids: tuple[int, ...] = attrs.field(init=False, repr=False)
    _device_tables: dict[torch.device, torch.Tensor] = attrs.field(init=False, repr=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.num_embeddings, bool) or not isinstance(self.num_embeddings, int):
            raise CoordVocabError(f"num_embeddings must be an int, got {self.num_embeddings!r}")
        if tuple(self.coord_ids.shape) != (NUM_BINS,):
            raise CoordVocabError(
                f"coord_ids must have shape [{NUM_BINS}] (one id per bin), got {tuple(self.coord_ids.shape)}"
            )
        ids = self.coord_ids.tolist()
        bad = [f"{COORD_TOKENS[k]}={i}" for k, i in enumerate(ids) if not 0 <= i < self.num_embeddings]
        if bad:
            raise CoordVocabError(
                f"coord token ids out of range [0, {self.num_embeddings}) of the embedding table: "
                f"{_listing(bad)}; resize the embeddings after adding the coord tokens"
            )
        _raise_on_duplicates(ids)
        table = np.full(max(ids) + 1, -1, dtype=np.int64)
        table[np.asarray(ids, dtype=np.int64)] = np.arange(NUM_BINS, dtype=np.int64)
        object.__setattr__(self, "_bin_table", table)
        object.__setattr__(self, "_ids", tuple(ids))

    @classmethod
    def from_lookup(
        cls,
        lookup: Callable[[str], int | None] | Mapping[str, int],
        num_embeddings: int,
    ) -> CoordVocab:
        """Build from a token-string → id lookup (a tokenizer's vocab mapping or a callable).

        Every ``<|coord_k|>`` must resolve to a single id; the error lists the missing,
        out-of-range and duplicated tokens together (a tokenizer that maps unknown tokens to an
        ``unk`` id shows up as duplicates).
        """
        get = lookup.get if isinstance(lookup, Mapping) else lookup
        missing: list[str] = []
        out_of_range: list[str] = []
        resolved: list[int] = []
        for token in COORD_TOKENS:
            raw = get(token)
            if raw is None or isinstance(raw, bool):
                missing.append(token)
                continue
            try:
                token_id = operator.index(raw)
            except TypeError:
                missing.append(f"{token} (lookup returned {raw!r})")
                continue
            if not 0 <= token_id < num_embeddings:
                out_of_range.append(f"{token}={token_id}")
            resolved.append(token_id)
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: {_listing(missing)}")
        if out_of_range:
            problems.append(
                f"{len(out_of_range)} out of range [0, {num_embeddings}): {_listing(out_of_range)}"
            )
        if problems:
            raise CoordVocabError(
                "coord vocabulary is incomplete: "
                + "; ".join(problems)
                + ". Add all 1000 '<|coord_k|>' tokens as single (non-special) tokens"
                " and resize the embeddings."
            )
        _raise_on_duplicates(resolved)
        return cls(torch.tensor(resolved, dtype=torch.long), num_embeddings)

    @property
    def min_id(self) -> int:
        """Smallest coord token id."""
        return min(self._ids)

    @property
    def max_id(self) -> int:
        """Largest coord token id."""
        return len(self._bin_table) - 1

    @property
    def ids(self) -> tuple[int, ...]:
        """The 1000 coord ids as Python ints, in bin order."""
        return self._ids

    def id_of(self, k: int) -> int:
        """Token id of bin ``k``."""
        return self._ids[check_bin(k, what="CoordVocab.id_of")]

    def bins_of_array(self, ids: Any) -> np.ndarray:
        """NumPy twin of :meth:`bins_of`: int array of token ids → int64 bins (−1 for non-coord ids)."""
        array = np.asarray(ids, dtype=np.int64)
        in_range = (array >= 0) & (array <= self.max_id)
        return np.where(in_range, self._bin_table[np.clip(array, 0, self.max_id)], -1)

    def bins_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (any shape, any integer dtype, any device) → long bins, −1 where not a coord id.

        Vectorized through a lookup table cached per device; negative ids (e.g. −100 label padding)
        and ids above ``max_id`` map to −1.
        """
        ids = torch.as_tensor(ids)
        table = self._table_on(ids.device)
        in_range = (ids >= 0) & (ids <= self.max_id)
        return table[ids.long().clamp(0, self.max_id)].masked_fill(~in_range, -1)

    def is_coord(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool tensor of ``ids``' shape: True where the id is one of the 1000 coord ids."""
        return self.bins_of(ids) >= 0

    def _table_on(self, device: torch.device) -> torch.Tensor:
        table = self._device_tables.get(device)
        if table is None:
            table = torch.from_numpy(self._bin_table).to(device)
            self._device_tables[device] = table
        return table


def _raise_on_duplicates(ids: list[int]) -> None:
    first_token_of: dict[int, int] = {}
    duplicated: list[str] = []
    for k, token_id in enumerate(ids):
        first = first_token_of.setdefault(token_id, k)
        if first != k:
            duplicated.append(f"{COORD_TOKENS[k]} and {COORD_TOKENS[first]} share id {token_id}")
    if duplicated:
        raise CoordVocabError(
            f"coord tokens must have distinct ids, {len(duplicated)} duplicated: {_listing(duplicated)} "
            "(an unknown token mapped to the unk id looks like this: add the coord tokens to the tokenizer)"
        )
