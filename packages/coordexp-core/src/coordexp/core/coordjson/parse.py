"""The CoordJSON parser (spec 01 §1.4): a hand-written single-pass scanner that never repairs.

The value grammar is JSON plus the scalar literal ``<|coord_N|>``, with JSON whitespace
(space, tab, LF, CR) between tokens. The scanner keeps string/escape state and an explicit depth
stack (no recursion, so any nesting depth is safe) and never raises on any input text: a syntax
error or the end of the text stops the scan; the element in progress and everything after it
form the *incomplete tail*; complete elements before it are kept, each valid or dropped into
exactly one bucket of :data:`DROP_BUCKETS` (first match wins, D6).

Modes differ only in where the container may start: ``strict`` and ``rollout`` at the first
non-whitespace character; ``salvage`` at the first ``{`` from which a container opening
``{ "objects" : [`` scans (``leading_junk`` when non-whitespace precedes it). ``strict_ok``
reports whether the text is one complete container with nothing but whitespace around it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import attrs

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.coordjson.serialize import CoordObject, FieldOrder, check_field_order

Mode = Literal["strict", "rollout", "salvage"]
GeometryPolicy = Literal["any", "bbox_only"]
MODES: tuple[str, ...] = get_args(Mode)
GEOMETRY_POLICIES: tuple[str, ...] = get_args(GeometryPolicy)

DROP_BUCKETS: tuple[str, ...] = (
    "not_object",
    "unexpected_keys",
    "missing_desc",
    "missing_geom",
    "wrong_arity",
    "bad_coord",
    "bbox_invalid",
    "poly_unsupported",
    "coord_misaligned",
    "other",
)
_BUCKET_INDEX = {bucket: position for position, bucket in enumerate(DROP_BUCKETS)}
_GEOM_KEYS = frozenset(("bbox_2d", "poly"))
_CONTAINER_KEY = "objects"

Span = tuple[int, int]


class DropCounts(Mapping[str, int]):
    """Immutable bucket → count mapping holding every bucket of :data:`DROP_BUCKETS` (zeros included)."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        values = [0] * len(DROP_BUCKETS)
        for bucket, count in (counts or {}).items():
            if bucket not in _BUCKET_INDEX:
                raise ValueError(f"unknown drop bucket {bucket!r}; expected one of {DROP_BUCKETS}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"drop count of {bucket!r} must be an int >= 0, got {count!r}")
            values[_BUCKET_INDEX[bucket]] = count
        self._counts = tuple(values)

    def __getitem__(self, bucket: str) -> int:
        return self._counts[_BUCKET_INDEX[bucket]]

    def __iter__(self) -> Iterator[str]:
        return iter(DROP_BUCKETS)

    def __len__(self) -> int:
        return len(DROP_BUCKETS)

    def __hash__(self) -> int:
        return hash(self._counts)

    def __repr__(self) -> str:
        return f"DropCounts({dict(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (DropCounts, (dict(self),))

    @property
    def total(self) -> int:
        """Number of dropped complete elements."""
        return sum(self._counts)


@attrs.frozen
class ParsedRecord:
    """One complete element of the ``objects`` array, valid or dropped.

    ``span`` covers the element (``{``..``}`` for objects), ``geom_span`` the geometry array
    ``[``..``]`` and ``desc_span`` the desc characters inside the quotes, all as
    ``(start, end_exclusive)`` character offsets into the parsed text. ``desc`` is the decoded
    JSON string; ``values`` are the bins when the geometry is an array of valid coord literals
    (else ``()``); fields that could not be read are None. ``drop_reason`` is the bucket of a
    dropped element and None for a valid one.
    """

    index: int
    span: Span
    geom_key: str | None
    geom_span: Span | None
    desc_span: Span | None
    desc: str | None
    values: tuple[int, ...]
    field_order: FieldOrder | None
    valid: bool
    drop_reason: str | None

    def to_object(self) -> CoordObject:
        """The record as a :class:`CoordObject` (valid records only)."""
        if not self.valid:
            raise ValueError(f"record {self.index} was dropped ({self.drop_reason}); it has no CoordObject")
        return CoordObject(self.desc, self.geom_key, self.values)

    def dropped(self, reason: str) -> ParsedRecord:
        """A copy of this record marked invalid with ``reason`` (a bucket of :data:`DROP_BUCKETS`)."""
        if reason not in _BUCKET_INDEX:
            raise ValueError(f"unknown drop bucket {reason!r}; expected one of {DROP_BUCKETS}")
        return attrs.evolve(self, valid=False, drop_reason=reason)


@attrs.frozen
class ParseResult:
    """Everything the scanner found in one text (spec 01 §1.4).

    * ``records``: complete elements in order; ``record_ends[i]`` is the offset after element i.
    * ``container_start``: offset of the container's ``{`` (None when no container start was
      found); ``open_end``: offset after the container's ``[`` (None when the opening is absent
      or incomplete).
    * ``closed``: the container's final ``}`` was scanned. ``truncated``: the text ended inside
      the container without a syntax error. ``incomplete_tail``: an element was in progress when
      the scan stopped, or non-whitespace that is no element stopped it (``error_pos``).
    * ``strict_ok``: a container starting at the first non-whitespace character, closed, followed
      only by whitespace. ``trailing_junk``: non-whitespace after the closed container (ignored).
      ``leading_junk``: salvage mode found the container after non-whitespace text.
    * ``drop_counts`` (all buckets), ``field_order_mismatch`` (valid records whose key order
      differs from ``expected_field_order``), ``degenerate_pred_bbox`` (valid boxes with
      ``x1 == x2`` or ``y1 == y2``) are derived from ``records``.
    """

    records: tuple[ParsedRecord, ...]
    open_end: int | None
    record_ends: tuple[int, ...]
    closed: bool
    truncated: bool
    incomplete_tail: bool
    strict_ok: bool
    container_start: int | None
    drop_counts: DropCounts
    field_order_mismatch: int
    degenerate_pred_bbox: int
    trailing_junk: bool
    leading_junk: bool
    mode: Mode
    geometry_policy: GeometryPolicy
    expected_field_order: FieldOrder | None
    error_pos: int | None

    @property
    def valid_records(self) -> tuple[ParsedRecord, ...]:
        """The valid records, in order."""
        return tuple(record for record in self.records if record.valid)

    @property
    def complete_end(self) -> int | None:
        """``max(open_end, record_ends)``: the append-ready cut of 03 §3.3 (None without ``open_end``)."""
        if self.open_end is None:
            return None
        return self.record_ends[-1] if self.record_ends else self.open_end

    def objects(self) -> list[CoordObject]:
        """The valid records as :class:`CoordObject` values, in order."""
        return [record.to_object() for record in self.records if record.valid]

    def with_records(self, records: Sequence[ParsedRecord]) -> ParseResult:
        """A copy with ``records`` replaced (same spans, validity may change) and counts re-derived."""
        records = tuple(records)
        if [(r.index, r.span) for r in records] != [(r.index, r.span) for r in self.records]:
            raise ValueError(
                "with_records may change record validity only, not the records' identity or spans"
            )
        drop_counts, mismatch, degenerate = _tally(records, self.expected_field_order)
        return attrs.evolve(
            self,
            records=records,
            drop_counts=drop_counts,
            field_order_mismatch=mismatch,
            degenerate_pred_bbox=degenerate,
        )


# ---------------------------------------------------------------------------------------------
# lexical scanning. Each scanner takes (text, n, i) with i at the first character of the item
# and returns the offset after it; it raises _Truncated when the text ends first and
# _Syntax(pos) at the first character that can never be part of valid input. Both are caught
# by parse(); nothing escapes to the caller.
# ---------------------------------------------------------------------------------------------


class _Truncated(Exception):
    pass


class _Syntax(Exception):
    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.pos = pos


_WS = " \t\n\r"
_HEX = frozenset("0123456789abcdefABCDEF")
_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_COORD_OPEN = "<|coord_"
_COORD_CLOSE = "|>"
_BIN_OF_LITERAL = {token: k for k, token in enumerate(COORD_TOKENS)}
_ITEM_SEPARATOR = ", "
_RECORD_JOIN = _ITEM_SEPARATOR + "{"


def _skip_ws(text: str, n: int, i: int) -> int:
    while i < n and text[i] in _WS:
        i += 1
    return i


def _next_at(text: str, n: int, i: int) -> int:
    """Offset of the first non-whitespace character at or after ``i``; _Truncated if there is none."""
    while i < n:
        if text[i] not in _WS:
            return i
        i += 1
    raise _Truncated


def _check_no_control(text: str, start: int, end: int) -> None:
    segment = text[start:end]
    if segment and min(segment) < " ":
        for offset, char in enumerate(segment):
            if char < " ":
                raise _Syntax(start + offset)


def _read_hex4(text: str, n: int, p: int) -> int:
    digits = text[p : p + 4]
    for offset, char in enumerate(digits):
        if char not in _HEX:
            raise _Syntax(p + offset)
    if len(digits) < 4:
        raise _Truncated
    return int(digits, 16)


def _scan_string(text: str, n: int, i: int) -> tuple[int, str, bool]:
    """String at ``text[i] == '"'`` → (offset after the closing quote, decoded value, has lone surrogate).

    Raw control characters are syntax errors; ``\\u`` escapes (four hex digits) decode, surrogate pairs combine.
    Linear in the string length: the closing-quote search is only redone after an escaped quote.
    """
    j = i + 1
    quote = text.find('"', j)
    if quote >= 0:  # fast path: no escapes and no control characters
        value = text[j:quote]
        if "\\" not in value and (not value or min(value) >= " "):
            return quote + 1, value, False
    parts: list[str] = []
    lone_surrogate = False
    while True:
        if 0 <= quote < j:  # the quote found earlier was escaped; -1 stays -1 (no quote to the end)
            quote = text.find('"', j)
        limit = n if quote < 0 else quote
        backslash = text.find("\\", j, limit)
        stop = limit if backslash < 0 else backslash
        if stop > j:
            _check_no_control(text, j, stop)
            parts.append(text[j:stop])
        if backslash < 0:
            if quote < 0:
                raise _Truncated
            return quote + 1, "".join(parts), lone_surrogate
        if backslash + 1 >= n:
            raise _Truncated
        escape = text[backslash + 1]
        short = _SHORT_ESCAPES.get(escape)
        if short is not None:
            parts.append(short)
            j = backslash + 2
            continue
        if escape != "u":
            raise _Syntax(backslash + 1)
        code = _read_hex4(text, n, backslash + 2)
        j = backslash + 6
        if 0xD800 <= code <= 0xDBFF and text.startswith("\\u", j):
            low_digits = text[j + 2 : j + 6]
            if len(low_digits) == 4 and all(c in _HEX for c in low_digits):
                low = int(low_digits, 16)
                if 0xDC00 <= low <= 0xDFFF:
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    j += 6
        if 0xD800 <= code <= 0xDFFF:
            lone_surrogate = True
        parts.append(chr(code))


def _scan_digits(text: str, n: int, j: int) -> int:
    while j < n and "0" <= text[j] <= "9":
        j += 1
    return j


def _scan_number(text: str, n: int, i: int) -> int:
    """JSON number. A number running into the end of the text is truncated (more digits may follow)."""
    j = i + 1 if text[i] == "-" else i
    if j >= n:
        raise _Truncated
    if text[j] == "0":
        j += 1
    elif "1" <= text[j] <= "9":
        j = _scan_digits(text, n, j + 1)
    else:
        raise _Syntax(j)
    if j < n and text[j] == ".":
        if j + 1 >= n:
            raise _Truncated
        if not "0" <= text[j + 1] <= "9":
            raise _Syntax(j + 1)
        j = _scan_digits(text, n, j + 1)
    if j < n and text[j] in "eE":
        j += 1
        if j < n and text[j] in "+-":
            j += 1
        if j >= n:
            raise _Truncated
        if not "0" <= text[j] <= "9":
            raise _Syntax(j)
        j = _scan_digits(text, n, j)
    if j >= n:
        raise _Truncated
    return j


def _scan_word(text: str, n: int, i: int, word: str) -> int:
    if text.startswith(word, i):
        return i + len(word)
    available = text[i : i + len(word)]
    for offset, (got, want) in enumerate(zip(available, word)):
        if got != want:
            raise _Syntax(i + offset)
    if len(available) < len(word):
        raise _Truncated
    return i + len(word)


def _scan_coord(text: str, n: int, i: int) -> tuple[int, int]:
    """``<|coord_N|>`` → (offset after it, bin or −1 when N > 999 or has leading zeros)."""
    close = text.find(_COORD_CLOSE, i + 9, i + 13)
    if close >= 0:  # fast path: a canonical literal is one dict lookup
        k = _BIN_OF_LITERAL.get(text[i : close + 2])
        if k is not None:
            return close + 2, k
    j = _scan_word(text, n, i, _COORD_OPEN)
    digits_start = j
    j = _scan_digits(text, n, j)
    if j >= n:
        raise _Truncated
    if j == digits_start:
        raise _Syntax(j)
    end = _scan_word(text, n, j, _COORD_CLOSE)
    digits = text[digits_start:j]
    canonical = len(digits) <= 3 and (len(digits) == 1 or digits[0] != "0")
    return end, int(digits) if canonical else -1


def _scan_scalar(text: str, n: int, i: int) -> int:
    char = text[i]
    if char == '"':
        return _scan_string(text, n, i)[0]
    if char == "-" or "0" <= char <= "9":
        return _scan_number(text, n, i)
    if char == "<":
        return _scan_coord(text, n, i)[0]
    if char == "t":
        return _scan_word(text, n, i, "true")
    if char == "f":
        return _scan_word(text, n, i, "false")
    if char == "n":
        return _scan_word(text, n, i, "null")
    raise _Syntax(i)


# states of the generic value skipper
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _AFTER_VALUE = range(5)


def _skip_value(text: str, n: int, i: int) -> int:
    """Any value (nested arrays/objects included) → offset after it. Iterative: depth is unbounded."""
    stack: list[str] = []
    state = _VALUE
    while True:
        i = _next_at(text, n, i)
        char = text[i]
        if (state == _VALUE_OR_CLOSE and char == "]") or (state == _KEY_OR_CLOSE and char == "}"):
            stack.pop()  # an empty array or object
            i += 1
        elif state in (_VALUE, _VALUE_OR_CLOSE):
            if char == "[":
                stack.append("[")
                state = _VALUE_OR_CLOSE
                i += 1
                continue
            if char == "{":
                stack.append("{")
                state = _KEY_OR_CLOSE
                i += 1
                continue
            i = _scan_scalar(text, n, i)
        elif state in (_KEY, _KEY_OR_CLOSE):
            if char != '"':
                raise _Syntax(i)
            i = _next_at(text, n, _scan_string(text, n, i)[0])
            if text[i] != ":":
                raise _Syntax(i)
            state = _VALUE
            i += 1
            continue
        else:  # _AFTER_VALUE inside a container
            if char == ",":
                state = _VALUE if stack[-1] == "[" else _KEY
                i += 1
                continue
            if char != ("]" if stack[-1] == "[" else "}"):
                raise _Syntax(i)
            stack.pop()
            i += 1
        # a value just ended
        if not stack:
            return i
        state = _AFTER_VALUE


def _scan_canonical_coord_array(text: str, i: int) -> tuple[int, list[int]] | None:
    """The canonical array ``[<|coord_a|>, <|coord_b|>, ...]`` at ``text[i] == '['`` → (offset after
    ``]``, bins), or None for anything else (the general scanner reads it then, with the same result
    on canonical text). No literal holds ``]``, so the first ``]`` closes the array iff every
    ``", "``-separated piece before it is a canonical literal."""
    close = text.find("]", i + 1)
    if close <= i + 1:
        return None
    bins = list(map(_BIN_OF_LITERAL.get, text[i + 1 : close].split(_ITEM_SEPARATOR)))
    if None in bins:
        return None
    return close + 1, bins


def _scan_coord_array(text: str, n: int, i: int) -> tuple[int, list[int]]:
    """Array at ``text[i] == '['`` → (offset after ``]``, per item its bin, −1 if not a valid coord literal)."""
    canonical = _scan_canonical_coord_array(text, i)
    if canonical is not None:
        return canonical
    items: list[int] = []
    j = _next_at(text, n, i + 1)
    if text[j] == "]":
        return j + 1, items
    while True:
        if text[j] == "<":
            close = text.find(_COORD_CLOSE, j + 9, j + 13)
            k = _BIN_OF_LITERAL.get(text[j : close + 2]) if close >= 0 else None
            if k is None:
                j, k = _scan_coord(text, n, j)
            else:
                j = close + 2
        else:
            j, k = _skip_value(text, n, j), -1
        items.append(k)
        if j >= n or text[j] in _WS:
            j = _next_at(text, n, j)
        char = text[j]
        if char == "]":
            return j + 1, items
        if char != ",":
            raise _Syntax(j)
        j = _next_at(text, n, j + 1)


# A member is (key, kind, span, payload, lone_surrogate) with kind "str" (span inside the quotes,
# payload the decoded string), "arr" (span [..], payload the item bins) or "other".
_Member = tuple[str, str, Span, Any, bool]


def _scan_object(text: str, n: int, i: int) -> tuple[int, list[_Member]]:
    """Object at ``text[i] == '{'`` → (offset after ``}``, members in order)."""
    members: list[_Member] = []
    j = _next_at(text, n, i + 1)
    if text[j] == "}":
        return j + 1, members
    while True:
        if text[j] != '"':
            raise _Syntax(j)
        j, key, _ = _scan_string(text, n, j)
        if j >= n or text[j] in _WS:
            j = _next_at(text, n, j)
        if text[j] != ":":
            raise _Syntax(j)
        start = j = _next_at(text, n, j + 1)
        char = text[j]
        if char == '"':
            j, value, lone = _scan_string(text, n, j)
            members.append((key, "str", (start + 1, j - 1), value, lone))
        elif char == "[":
            j, items = _scan_coord_array(text, n, j)
            members.append((key, "arr", (start, j), items, False))
        else:
            j = _skip_value(text, n, j)
            members.append((key, "other", (start, j), None, False))
        j = _next_at(text, n, j)
        char = text[j]
        if char == "}":
            return j + 1, members
        if char != ",":
            raise _Syntax(j)
        j = _next_at(text, n, j + 1)


# Pieces of a canonical record (01 §1.3): '{"desc": "S", "<geom>": [coords]}' or
# '{"<geom>": [coords], "desc": "S"}'.
_DESC_FIRST_OPEN = '{"desc": "'
_DESC_AFTER_GEOMETRY = ', "desc": "'
# (member opener, key, offset of the "[" from the opener's start), for each geometry key
_GEOM_OPENS: tuple[tuple[str, str, int], ...] = tuple(
    (f'"{key}": [', key, len(f'"{key}": [') - 1) for key in ("bbox_2d", "poly")
)


def _canonical_record_parts(
    text: str, i: int
) -> tuple[int, str, str, int, int, int, int, tuple[int, ...], str] | None:
    """A canonical record at ``text[i] == '{'`` → (offset after its ``}``, desc, geometry key, desc
    start, desc end, offset of ``[``, offset of ``]``, bins, field order), or None for anything else.

    Canonical: ``{"desc": "S", "<geom>": [coords]}`` or ``{"<geom>": [coords], "desc": "S"}`` with
    exactly the whitespace shown, ``S`` free of escapes and control characters (so it is its own
    value) and canonical coord literals (no literal holds ``]``, so the first ``]`` closes the array
    iff every ``", "``-separated piece before it is one). On such text the general scanner reads the
    same members. One straight-line function: it runs once per record of every rollout.
    """
    startswith = text.startswith
    desc_first = startswith(_DESC_FIRST_OPEN, i)
    if desc_first:
        p = i + len(_DESC_FIRST_OPEN)
        q = text.find('"', p)
        if q < 0:
            return None
        desc = text[p:q]
        if "\\" in desc or (desc and min(desc) < " ") or not startswith(_ITEM_SEPARATOR, q + 1):
            return None
        g = q + 1 + len(_ITEM_SEPARATOR)
    else:
        g = i + 1
    for opener, key, bracket in _GEOM_OPENS:
        if startswith(opener, g):
            break
    else:
        return None
    a = g + bracket
    close = text.find("]", a + 1)
    if close <= a + 1:
        return None
    bins = tuple(map(_BIN_OF_LITERAL.get, text[a + 1 : close].split(_ITEM_SEPARATOR)))
    if None in bins:
        return None
    if desc_first:
        if not startswith("}", close + 1):
            return None
        return close + 2, desc, key, p, q, a, close, bins, "desc_first"
    if not startswith(_DESC_AFTER_GEOMETRY, close + 1):
        return None
    p = close + 1 + len(_DESC_AFTER_GEOMETRY)
    q = text.find('"', p)
    if q < 0:
        return None
    desc = text[p:q]
    if "\\" in desc or (desc and min(desc) < " ") or not startswith("}", q + 1):
        return None
    return q + 2, desc, key, p, q, a, close, bins, "geometry_first"


def _open_container(text: str, n: int, i: int) -> int:
    """``{ "objects" : [`` at ``text[i] == '{'`` → offset after the ``[``."""
    j = _next_at(text, n, i + 1)
    if text[j] != '"':
        raise _Syntax(j)
    key_start = j
    j, key, _ = _scan_string(text, n, j)
    if key != _CONTAINER_KEY:
        raise _Syntax(key_start)
    j = _next_at(text, n, j)
    if text[j] != ":":
        raise _Syntax(j)
    j = _next_at(text, n, j + 1)
    if text[j] != "[":
        raise _Syntax(j)
    return j + 1


# ---------------------------------------------------------------------------------------------
# record validation (drop buckets, first match wins)
# ---------------------------------------------------------------------------------------------


def _classify(index: int, span: Span, members: list[_Member], geometry_policy: str) -> ParsedRecord:
    unexpected = len(members) > 2
    seen: set[str] = set()
    desc_member = geom_member = None
    desc_position = geom_position = -1
    for position, member in enumerate(members):
        key = member[0]
        if key in seen:
            unexpected = True
        seen.add(key)
        if key == "desc":
            if desc_member is None:
                desc_member, desc_position = member, position
        elif key in _GEOM_KEYS:
            if geom_member is None:
                geom_member, geom_position = member, position
            else:
                unexpected = True
        else:
            unexpected = True

    desc = desc_span = None
    desc_ok = False
    if desc_member is not None and desc_member[1] == "str":
        desc, desc_span = desc_member[3], desc_member[2]
        desc_ok = not desc_member[4] and bool(desc.strip())

    geom_key = geom_span = None
    items: list[int] = []
    geom_is_array = False
    if geom_member is not None:
        geom_key = geom_member[0]
        if geom_member[1] == "arr":
            geom_is_array, geom_span, items = True, geom_member[2], geom_member[3]
    field_order = None
    if desc_member is not None and geom_member is not None:
        field_order = "desc_first" if desc_position < geom_position else "geometry_first"
    return _record(
        index,
        span,
        geometry_policy,
        unexpected=unexpected,
        desc=desc,
        desc_span=desc_span,
        desc_ok=desc_ok,
        geom_key=geom_key,
        geom_span=geom_span,
        geom_is_array=geom_is_array,
        items=items,
        field_order=field_order,
    )


def _record(
    index: int,
    span: Span,
    geometry_policy: str,
    *,
    unexpected: bool,
    desc: str | None,
    desc_span: Span | None,
    desc_ok: bool,
    geom_key: str | None,
    geom_span: Span | None,
    geom_is_array: bool,
    items: list[int],
    field_order: FieldOrder | None,
) -> ParsedRecord:
    """The record and its drop bucket (first match wins, D6) from what its members hold."""
    coords_ok = geom_is_array and (not items or min(items) >= 0)
    values = tuple(items) if coords_ok else ()
    if unexpected:
        reason = "unexpected_keys"
    elif not desc_ok:
        reason = "missing_desc"
    elif geom_key is None:
        reason = "missing_geom"
    elif not geom_is_array or (
        len(items) != 4 if geom_key == "bbox_2d" else (len(items) < 6 or len(items) % 2 == 1)
    ):
        reason = "wrong_arity"
    elif not coords_ok:
        reason = "bad_coord"
    elif geom_key == "bbox_2d" and (values[2] < values[0] or values[3] < values[1]):
        reason = "bbox_invalid"
    elif geom_key == "poly" and geometry_policy == "bbox_only":
        reason = "poly_unsupported"
    else:
        reason = None
    # Positional: one record per element makes this the parser's hottest constructor call.
    return ParsedRecord(
        index, span, geom_key, geom_span, desc_span, desc, values, field_order, reason is None, reason
    )


def _not_object(index: int, span: Span) -> ParsedRecord:
    return ParsedRecord(
        index=index,
        span=span,
        geom_key=None,
        geom_span=None,
        desc_span=None,
        desc=None,
        values=(),
        field_order=None,
        valid=False,
        drop_reason="not_object",
    )


def _tally(records: Sequence[ParsedRecord], expected_field_order: str | None) -> tuple[DropCounts, int, int]:
    counts: dict[str, int] = {}
    mismatch = degenerate = 0
    for record in records:
        if not record.valid:
            counts[record.drop_reason] = counts.get(record.drop_reason, 0) + 1
            continue
        if expected_field_order is not None and record.field_order != expected_field_order:
            mismatch += 1
        if record.geom_key == "bbox_2d":
            x1, y1, x2, y2 = record.values
            degenerate += x1 == x2 or y1 == y2
    return DropCounts(counts), mismatch, degenerate


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def _locate_container(
    text: str, n: int, first: int, mode: str
) -> tuple[int | None, int | None, bool, int | None]:
    """→ (container_start, open_end, truncated_in_opening, error_pos)."""
    if mode != "salvage":
        if first >= n:
            return None, None, False, None
        if text[first] != "{":
            return None, None, False, first
        try:
            return first, _open_container(text, n, first), False, None
        except _Truncated:
            return first, None, True, None
        except _Syntax as error:
            return None, None, False, error.pos
    candidate = text.find("{", first)
    while candidate >= 0:
        try:
            return candidate, _open_container(text, n, candidate), False, None
        except _Truncated:
            return candidate, None, True, None
        except _Syntax:
            candidate = text.find("{", candidate + 1)
    return None, None, False, None


@attrs.define
class _Body:
    """What the scan of the container's array (and its closing) found."""

    records: list[ParsedRecord] = attrs.Factory(list)
    record_ends: list[int] = attrs.Factory(list)
    closed: bool = False
    truncated: bool = False
    trailing_junk: bool = False
    incomplete_tail: bool = False
    error_pos: int | None = None


def _scan_canonical_run(text: str, i: int, geometry_policy: str, body: _Body) -> int:
    """Canonical records (:func:`_canonical_record_parts`) from ``text[i] == '{'`` on, one after the
    other while each is followed by ``", {"``; appends them to ``body`` and returns the offset after
    the last one read (``i`` when the first is not canonical). The scan of :func:`_scan_body` goes on
    from there in its "after an element" state, exactly where it would be after reading them one by
    one. Rollouts are almost entirely canonical: this reads such a record with a handful of ``str``
    operations, and a valid one (the usual case) skips :func:`_record`'s bucket search."""
    records, ends = body.records, body.record_ends
    polys_ok = geometry_policy != "bbox_only"
    end = i
    while True:
        parts = _canonical_record_parts(text, i)
        if parts is None:
            return end
        end, desc, key, p, q, a, close, bins, field_order = parts
        n = len(bins)
        if desc.strip() and (
            (n == 4 and bins[2] >= bins[0] and bins[3] >= bins[1])
            if key == "bbox_2d"
            else (n >= 6 and not n % 2 and polys_ok)
        ):
            # Positional: one record per element makes this the parser's hottest constructor call.
            record = ParsedRecord(
                len(records), (i, end), key, (a, close + 1), (p, q), desc, bins, field_order, True, None
            )
        else:
            record = _record(
                len(records),
                (i, end),
                geometry_policy,
                unexpected=False,
                desc=desc,
                desc_span=(p, q),
                desc_ok=bool(desc.strip()),
                geom_key=key,
                geom_span=(a, close + 1),
                geom_is_array=True,
                items=list(bins),
                field_order=field_order,
            )
        records.append(record)
        ends.append(end)
        if not text.startswith(_RECORD_JOIN, end):
            return end
        i = end + len(_ITEM_SEPARATOR)


def _scan_body(text: str, n: int, open_end: int, geometry_policy: str) -> _Body:
    """Elements of the ``objects`` array from ``open_end`` on, then the closing ``]}``."""
    body = _Body()
    i = open_end
    state = "first"  # "first": an element or ']'; "after": ',' or ']'; "next": an element
    while True:
        i = _skip_ws(text, n, i)
        if i >= n:
            body.truncated = True
            return body
        char = text[i]
        if state == "after" or (state == "first" and char == "]"):
            if char == "]":
                break
            if char != ",":
                body.error_pos, body.incomplete_tail = i, True
                return body
            state = "next"
            i += 1
            continue
        if char == "{":
            run_end = _scan_canonical_run(text, i, geometry_policy, body)
            if run_end > i:
                i, state = run_end, "after"
                continue
        index = len(body.records)
        try:
            if char == "{":
                end, members = _scan_object(text, n, i)
                record = _classify(index, (i, end), members, geometry_policy)
            else:
                end = _skip_value(text, n, i)
                record = _not_object(index, (i, end))
        except _Truncated:
            body.truncated = body.incomplete_tail = True
            return body
        except _Syntax as error:
            body.error_pos, body.incomplete_tail = error.pos, True
            return body
        body.records.append(record)
        body.record_ends.append(end)
        i = end
        state = "after"
    i = _skip_ws(text, n, i + 1)  # after the array's ']'
    if i >= n:
        body.truncated = True
    elif text[i] == "}":
        body.closed = True
        body.trailing_junk = _skip_ws(text, n, i + 1) < n
    else:
        body.error_pos, body.incomplete_tail = i, True
    return body


def parse(
    text: str,
    mode: Mode = "rollout",
    geometry_policy: GeometryPolicy = "any",
    field_order: FieldOrder | None = None,
) -> ParseResult:
    """Scan ``text`` once and report its records, spans, flags and drop buckets (spec 01 §1.4).

    ``geometry_policy="bbox_only"`` drops polys as ``poly_unsupported`` (stage2_two_channel);
    ``field_order`` is the configured key order, used only to count ``field_order_mismatch``
    (either order is valid, D5). Never raises for any ``str`` input; invalid arguments raise
    ValueError/TypeError.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse expects text as str, got {type(text).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if geometry_policy not in GEOMETRY_POLICIES:
        raise ValueError(f"geometry_policy must be one of {GEOMETRY_POLICIES}, got {geometry_policy!r}")
    if field_order is not None:
        check_field_order(field_order)

    n = len(text)
    first = _skip_ws(text, n, 0)
    container_start, open_end, truncated, error_pos = _locate_container(text, n, first, mode)
    body = _Body()
    if open_end is not None:
        body = _scan_body(text, n, open_end, geometry_policy)
        truncated, error_pos = body.truncated, body.error_pos
    drop_counts, mismatch, degenerate = _tally(body.records, field_order)
    leading_junk = container_start is not None and container_start > first
    return ParseResult(
        records=tuple(body.records),
        open_end=open_end,
        record_ends=tuple(body.record_ends),
        closed=body.closed,
        truncated=truncated,
        incomplete_tail=body.incomplete_tail,
        strict_ok=body.closed and container_start == first and not body.trailing_junk,
        container_start=container_start,
        drop_counts=drop_counts,
        field_order_mismatch=mismatch,
        degenerate_pred_bbox=degenerate,
        trailing_junk=body.trailing_junk,
        leading_junk=leading_junk,
        mode=mode,
        geometry_policy=geometry_policy,
        expected_field_order=field_order,
        error_pos=error_pos,
    )
