"""The rollout backend interface (spec 03 §3.1).

A backend turns :class:`RolloutRequest` objects into :class:`RolloutOutput` objects, one per
request and in request order. The hf backend generates from ``request.prompt_ids`` on the live
policy; the vLLM client sends ``system_text``/``user_text``/``image`` to a server and gets prompt and
completion token ids back, which are compared with ``request.prompt_ids`` (prompt parity, 01 §1.5).
``rollout_matching.decode_batch_size`` bounds each hf generate call or the in-flight requests per
server; :func:`iter_batches` is the one batching helper for both.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import attrs

from coordexp.core.errors import ConfigError, CoordexpError
from coordexp.rollout.decoding import DecodeParams

if TYPE_CHECKING:
    from PIL.Image import Image

    ImageLike = str | os.PathLike | Image

FINISH_REASONS = ("stop", "length", "abort")
T = TypeVar("T")


def _token_ids(name: str, allow_empty: bool):
    def convert(raw: Any) -> tuple[int, ...]:
        try:
            items = tuple(raw)
        except TypeError as exc:
            raise CoordexpError(f"{name} must be a sequence of token ids, got {type(raw).__name__}") from exc
        for pos, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 0:
                raise CoordexpError(f"{name}[{pos}] must be a non-negative int token id, got {item!r}")
        if not items and not allow_empty:
            raise CoordexpError(f"{name} must not be empty")
        return tuple(int(item) for item in items)

    return convert


def _check_image(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None or isinstance(value, (str, os.PathLike)):
        return
    if not (hasattr(value, "size") and hasattr(value, "mode")):
        raise CoordexpError(f"image must be None, a path or a PIL image, got {type(value).__name__}")


@attrs.frozen
class RolloutRequest:
    """One generation request.

    ``prompt_ids``: the local generation prompt (chat template applied, image pads expanded), which
    the hf backend generates from and which a server's returned prompt ids must equal.
    ``system_text``/``user_text``: the chat messages a server-side backend sends. ``image``: a path
    or an in-memory PIL image (None for text-only requests); not part of equality.
    ``sample_id``: stable sample key for error messages and dumps.
    """

    prompt_ids: tuple[int, ...] = attrs.field(converter=_token_ids("prompt_ids", allow_empty=False))
    user_text: str = attrs.field(validator=attrs.validators.instance_of(str))
    system_text: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    image: ImageLike | None = attrs.field(default=None, eq=False, validator=_check_image)
    sample_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )


def _check_finish_reason(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in FINISH_REASONS:
        raise CoordexpError(f"finish_reason must be one of {FINISH_REASONS}, got {value!r}")


def _check_max_new_tokens(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CoordexpError(f"max_new_tokens must be an int >= 1, got {value!r}")


def _eos_ids(raw: Any) -> frozenset[int]:
    return frozenset(_token_ids("eos_token_ids", allow_empty=False)(raw))


def _logprobs(raw: Any) -> tuple[float, ...] | None:
    if raw is None:
        return None
    try:
        return tuple(float(x) for x in raw)
    except (TypeError, ValueError) as exc:
        raise CoordexpError(f"token_logprobs must be None or a sequence of floats: {exc}") from exc


@attrs.frozen
class RolloutOutput:
    """One generation result, aligned with its request.

    ``prompt_ids``: the prompt the backend actually used. ``response_ids``: generated ids (eos
    included when generation stopped on it). ``finish_reason``: ``stop``/``length``/``abort``.
    ``max_new_tokens`` and ``eos_token_ids`` are the limits the output was produced under; they
    define :attr:`truncated`. ``token_logprobs``: one log-probability per response id, or None.
    """

    prompt_ids: tuple[int, ...] = attrs.field(converter=_token_ids("prompt_ids", allow_empty=False))
    response_ids: tuple[int, ...] = attrs.field(converter=_token_ids("response_ids", allow_empty=True))
    finish_reason: str = attrs.field(validator=_check_finish_reason)
    max_new_tokens: int = attrs.field(validator=_check_max_new_tokens)
    eos_token_ids: frozenset[int] = attrs.field(converter=_eos_ids)
    token_logprobs: tuple[float, ...] | None = attrs.field(default=None, converter=_logprobs)

    def __attrs_post_init__(self) -> None:
        if self.token_logprobs is not None and len(self.token_logprobs) != len(self.response_ids):
            raise CoordexpError(
                f"token_logprobs has {len(self.token_logprobs)} entries for "
                f"{len(self.response_ids)} response ids"
            )

    @property
    def truncated(self) -> bool:
        """True when the response reached ``max_new_tokens`` without any eos id (spec 03 §3.1)."""
        return len(self.response_ids) >= self.max_new_tokens and self.eos_token_ids.isdisjoint(
            self.response_ids
        )


@runtime_checkable
class RolloutBackend(Protocol):
    """What stage 2 and evaluation call to generate rollouts.

    ``generate`` returns exactly one :class:`RolloutOutput` per request, in request order;
    ``seeds[i]`` is request i's seed (:mod:`coordexp.rollout.seeds`). It runs without gradients and
    leaves the policy's train/eval mode as it found it.
    """

    name: str

    def generate(
        self, requests: Sequence[RolloutRequest], params: DecodeParams, *, seeds: Sequence[int]
    ) -> list[RolloutOutput]: ...


def check_generate_call(requests: Sequence[RolloutRequest], seeds: Sequence[int]) -> None:
    """Raise :class:`CoordexpError` unless there is one int seed in [1, 2³¹−1] per request."""
    if len(seeds) != len(requests):
        raise CoordexpError(f"generate got {len(seeds)} seeds for {len(requests)} requests")
    for pos, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 1 <= seed <= 0x7FFFFFFF:
            raise CoordexpError(f"seeds[{pos}] must be an int in [1, 2**31 - 1], got {seed!r}")


def check_generate_result(requests: Sequence[RolloutRequest], outputs: Sequence[RolloutOutput]) -> None:
    """Raise :class:`CoordexpError` unless ``outputs`` holds one :class:`RolloutOutput` per request."""
    if len(outputs) != len(requests):
        raise CoordexpError(f"backend returned {len(outputs)} outputs for {len(requests)} requests")
    for pos, output in enumerate(outputs):
        if not isinstance(output, RolloutOutput):
            raise CoordexpError(f"outputs[{pos}] must be a RolloutOutput, got {type(output).__name__}")


def iter_batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of ``size`` (the last may be shorter); none for no items.

    ``size`` is ``rollout_matching.decode_batch_size``; a non-positive or non-int size raises
    :class:`ConfigError`.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ConfigError("rollout_matching.decode_batch_size", f"expected an int > 0, got {size!r}")
    return (items[start : start + size] for start in range(0, len(items), size))
