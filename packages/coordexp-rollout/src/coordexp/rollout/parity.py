"""Prompt parity (spec 03 §3.1, 01 §1.5; invariant E12).

The prompt a backend actually generated from MUST equal the local generation prompt, token for
token. ``rollout_matching.prompt_mismatch_policy`` decides what a mismatch does: ``error`` (default)
raises :class:`PromptMismatchError` naming the first differing position; ``drop`` skips the sample,
which the caller counts in ``rollout/prompt_mismatch_dropped_total``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coordexp.core.errors import ConfigError, CoordexpError

PROMPT_MISMATCH_POLICIES: tuple[str, ...] = ("error", "drop")
CONFIG_PATH = "rollout_matching.prompt_mismatch_policy"


class PromptMismatchError(CoordexpError):
    """The backend's prompt ids differ from the local generation prompt (policy ``error``)."""


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is ``error`` or ``drop``, else raise :class:`ConfigError`."""
    if policy not in PROMPT_MISMATCH_POLICIES:
        raise ConfigError(CONFIG_PATH, f"expected one of {PROMPT_MISMATCH_POLICIES}, got {policy!r}")
    return policy


def first_mismatch(local: Sequence[int], returned: Sequence[int]) -> int | None:
    """First position where the two id sequences differ (the shorter length if one is a prefix of
    the other), or None when they are equal."""
    a = np.asarray(local, dtype=np.int64)
    b = np.asarray(returned, dtype=np.int64)
    n = min(a.size, b.size)
    diff = np.flatnonzero(a[:n] != b[:n])
    if diff.size:
        return int(diff[0])
    return None if a.size == b.size else n


def check_prompt_parity(
    local: Sequence[int], returned: Sequence[int], policy: str = "error", *, sample_id: object = None
) -> bool:
    """True when the prompts match; False on a mismatch under ``drop``; raises under ``error``."""
    check_policy(policy)
    at = first_mismatch(local, returned)
    if at is None:
        return True
    if policy == "drop":
        return False
    local_id = local[at] if at < len(local) else "<end>"
    returned_id = returned[at] if at < len(returned) else "<end>"
    raise PromptMismatchError(
        f"prompt parity violated for sample {sample_id!r}: the backend's prompt differs from the local "
        f"generation prompt at position {at} (local id {local_id}, backend id {returned_id}; lengths "
        f"{len(local)} vs {len(returned)}). Training and rollouts must share the chat template, "
        f"tokenizer and image size; set {CONFIG_PATH}: drop to skip such samples instead"
    )


__all__ = [
    "PROMPT_MISMATCH_POLICIES",
    "PromptMismatchError",
    "check_policy",
    "check_prompt_parity",
    "first_mismatch",
]
