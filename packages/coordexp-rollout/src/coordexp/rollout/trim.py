"""Suffix-only trimming of a parsed rollout to an append-ready prefix (spec 03 §3.3; invariant E2).

``cut = max(open_end, max(record_ends))`` over the complete elements (valid or dropped; dropped ones
stay in the prefix as FP spans). Tokens whose (unclipped) character span ends at or before ``cut``
are kept unchanged. The one token that straddles ``cut`` (a fused ``"},`` or ``"}]}``) is replaced
by ``encode(text[token_start:cut])``, which must decode back exactly: the straddler starts on a
character boundary, the replacement's bytes equal ``text[token_start:cut]`` in UTF-8 and are a byte
prefix of the straddler's own bytes (so no U+FFFD stood for invalid bytes). The prefix is
append-ready when its last non-whitespace character is ``[`` or ``}``.

An invalid rollout (D4) — no container at the start, no ``open_end``, not append-ready, or a failed
retokenization — gets the canonical prefix ``encode('{"objects": [')`` and no predictions.
Overlength (04 §4.6) is decided later, from the finished target, and reuses the same fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from coordexp.core.coordjson.parse import ParseResult
from coordexp.core.coordjson.serialize import OPEN_PREFIX
from coordexp.core.errors import CoordexpError
from coordexp.rollout.codec import TextCodec

NO_CONTAINER = "no_container"
NO_OPEN_END = "no_open_end"
NOT_APPEND_READY = "not_append_ready"
RETOKENIZE_FAIL = "retokenize_fail"
OVERLENGTH = "overlength"
INVALID_REASONS: tuple[str, ...] = (NO_CONTAINER, NO_OPEN_END, NOT_APPEND_READY, RETOKENIZE_FAIL, OVERLENGTH)
APPEND_READY_CHARS = ("[", "}")
JSON_WHITESPACE = " \t\n\r"


@attrs.frozen
class TrimResult:
    """An append-ready prefix.

    ``prefix_ids``: the prefix token ids; for a valid trim ``rollout_ids[:kept_tokens] +
    replacement``. ``prefix_text``: the text they decode to (``text[:cut]``, or ``{"objects": [``).
    ``open_end``: character offset after the container's ``[`` in ``prefix_text``. ``cut``: the
    character cut in the rollout text (None when invalid). ``invalid_reason``: one of
    :data:`INVALID_REASONS`, None when valid.
    """

    prefix_ids: tuple[int, ...]
    prefix_text: str
    open_end: int
    cut: int | None
    kept_tokens: int
    replacement: tuple[int, ...]
    invalid_reason: str | None

    @property
    def valid(self) -> bool:
        return self.invalid_reason is None

    @property
    def retokenized(self) -> bool:
        """True when a straddling token was replaced."""
        return bool(self.replacement)


def fallback_prefix_ids(codec: TextCodec) -> tuple[int, ...]:
    """``encode('{"objects": [')``, checked to decode back exactly (else :class:`CoordexpError`)."""
    ids = tuple(codec.encode(OPEN_PREFIX))
    decoded = b"".join(codec.token_bytes(ids))
    if decoded != OPEN_PREFIX.encode("ascii"):
        raise CoordexpError(
            f"the tokenizer encodes {OPEN_PREFIX!r} to ids {list(ids)} that decode to {decoded!r}; "
            "the invalid-rollout prefix must round-trip exactly"
        )
    return ids


def invalid_trim(fallback_ids: Sequence[int], reason: str) -> TrimResult:
    """The canonical invalid-rollout prefix (D4) with ``reason`` (one of :data:`INVALID_REASONS`)."""
    if reason not in INVALID_REASONS:
        raise CoordexpError(f"unknown invalid-rollout reason {reason!r}; expected one of {INVALID_REASONS}")
    return TrimResult(tuple(fallback_ids), OPEN_PREFIX, len(OPEN_PREFIX), None, 0, (), reason)


def is_append_ready(text: str) -> bool:
    """True when the last non-whitespace character of ``text`` is ``[`` or ``}``."""
    return text.rstrip(JSON_WHITESPACE)[-1:] in APPEND_READY_CHARS


def trim_rollout(
    ids: Sequence[int] | np.ndarray,
    token_bytes: Sequence[bytes],
    char_starts: np.ndarray,
    char_ends: np.ndarray,
    text: str,
    parse: ParseResult,
    codec: TextCodec,
    fallback_ids: Sequence[int],
) -> TrimResult:
    """Trim the rollout tokens before the hard stop to an append-ready prefix (module doc).

    ``ids``/``token_bytes``/``char_starts``/``char_ends``: the tokens before the hard stop, their
    bytes and their *unclipped* character spans in the decoded rollout text; ``text``: the text the
    parser saw (the rollout text cut at the hard stop); ``parse``: its rollout-mode parse.
    ``fallback_ids``: :func:`fallback_prefix_ids` of ``codec``.
    """
    n_tokens = len(ids)
    if not (len(token_bytes) == len(char_starts) == len(char_ends) == n_tokens):
        raise CoordexpError(
            f"trim_rollout got {n_tokens} ids, {len(token_bytes)} token bytes and "
            f"{len(char_starts)}/{len(char_ends)} spans"
        )
    if parse.container_start is None:
        return invalid_trim(fallback_ids, NO_CONTAINER)
    cut = parse.complete_end
    if cut is None:
        return invalid_trim(fallback_ids, NO_OPEN_END)
    prefix_text = text[:cut]
    if not is_append_ready(prefix_text):
        return invalid_trim(fallback_ids, NOT_APPEND_READY)

    ends = np.asarray(char_ends, dtype=np.int64)
    starts = np.asarray(char_starts, dtype=np.int64)
    # Spans are non-decreasing, so the kept tokens are a leading run.
    kept = int(ends.searchsorted(cut, side="right"))
    id_list = ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]
    replacement: tuple[int, ...] = ()
    if kept < n_tokens and int(starts[kept]) < cut:
        token_start = int(starts[kept])
        shares_char = kept > 0 and int(ends[kept - 1]) > token_start
        piece = text[token_start:cut]
        replacement = tuple(codec.encode(piece))
        replaced = b"".join(codec.token_bytes(replacement))
        if shares_char or replaced != piece.encode("utf-8") or not token_bytes[kept].startswith(replaced):
            return invalid_trim(fallback_ids, RETOKENIZE_FAIL)
    return TrimResult(
        prefix_ids=tuple(id_list[:kept]) + replacement,
        prefix_text=prefix_text,
        open_end=int(parse.open_end),
        cut=cut,
        kept_tokens=kept,
        replacement=replacement,
        invalid_reason=None,
    )


__all__ = [
    "APPEND_READY_CHARS",
    "INVALID_REASONS",
    "JSON_WHITESPACE",
    "NOT_APPEND_READY",
    "NO_CONTAINER",
    "NO_OPEN_END",
    "OVERLENGTH",
    "RETOKENIZE_FAIL",
    "TrimResult",
    "fallback_prefix_ids",
    "invalid_trim",
    "is_append_ready",
    "trim_rollout",
]
