"""Immutable decoding parameters (``rollout_matching.decoding.*``, spec 03 §3.1).

Backends receive a :class:`DecodeParams` per call. Per-call changes (eval forces greedy) go through
:meth:`DecodeParams.with_overrides` / :meth:`DecodeParams.greedy`, which return new objects and
never touch the configured one. Backend-specific limits (``max_new_tokens < vllm.max_model_len``,
``num_beams > 1`` only with hf, ``prompt_len + max_new_tokens <= max_position_embeddings``) are
checked by the backends, which know them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import attrs

from coordexp.core.errors import ConfigError

CONFIG_PATH = "rollout_matching.decoding"
#: ``token``: coord tokens are decoded like any other; ``expectation``: the expected bin at coord
#: steps (:mod:`coordexp.rollout.coord_pick`)
COORD_PICKS = ("token", "expectation")


def _path(attribute: attrs.Attribute) -> str:
    return f"{CONFIG_PATH}.{attribute.name}"


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _check_temperature(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not _is_real(value) or value < 0:
        raise ConfigError(_path(attribute), f"expected a finite number >= 0 (0 = greedy), got {value!r}")


def _check_top_p(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not _is_real(value) or not 0 < value <= 1:
        raise ConfigError(_path(attribute), f"expected a number in (0, 1], got {value!r}")


def _check_top_k(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not _is_int(value) or not (value == -1 or value >= 1):
        raise ConfigError(_path(attribute), f"expected -1 (off) or an int >= 1, got {value!r}")


def _check_repetition_penalty(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not _is_real(value) or value <= 0:
        raise ConfigError(_path(attribute), f"expected a finite number > 0, got {value!r}")


def _check_coord_pick(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in COORD_PICKS:
        raise ConfigError(_path(attribute), f"expected one of {', '.join(COORD_PICKS)}, got {value!r}")


def _check_positive_int(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError(_path(attribute), f"expected an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class DecodeParams:
    """Decoding knobs; every invalid value raises :class:`ConfigError` naming its key path.

    ``temperature`` 0 means greedy; ``top_k`` -1 means off; ``num_beams > 1`` (beam search, best
    beam kept) requires ``temperature == 0``. ``coord_pick``: ``token`` (spec 03 §3.1: coord tokens
    are decoded like any other) or ``expectation`` (the expected bin at coord steps; a coordexp
    extension, :mod:`coordexp.rollout.coord_pick`).
    """

    max_new_tokens: int = attrs.field(validator=_check_positive_int)
    temperature: float = attrs.field(default=0.0, validator=_check_temperature)
    top_p: float = attrs.field(default=1.0, validator=_check_top_p)
    top_k: int = attrs.field(default=-1, validator=_check_top_k)
    repetition_penalty: float = attrs.field(default=1.0, validator=_check_repetition_penalty)
    num_beams: int = attrs.field(default=1, validator=_check_positive_int)
    coord_pick: str = attrs.field(default="token", validator=_check_coord_pick)

    def __attrs_post_init__(self) -> None:
        if self.num_beams > 1 and self.temperature != 0:
            raise ConfigError(
                f"{CONFIG_PATH}.num_beams",
                f"num_beams > 1 requires temperature 0 (got temperature {self.temperature})",
            )

    @property
    def do_sample(self) -> bool:
        """True when decoding samples (temperature > 0)."""
        return self.temperature > 0

    @property
    def is_greedy(self) -> bool:
        """True for plain greedy decoding (temperature 0, one beam)."""
        return self.temperature == 0 and self.num_beams == 1

    def with_overrides(self, **overrides: Any) -> DecodeParams:
        """A new :class:`DecodeParams` with ``overrides`` applied and validated; self is unchanged."""
        unknown = sorted(set(overrides) - {f.name for f in attrs.fields(DecodeParams)})
        if unknown:
            raise ConfigError(f"{CONFIG_PATH}.{unknown[0]}", f"unknown decoding key (known: {self._keys()})")
        return attrs.evolve(self, **overrides)

    def greedy(self) -> DecodeParams:
        """Greedy variant (temperature 0, one beam) used by evaluation."""
        return self.with_overrides(temperature=0.0, num_beams=1)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all knobs (for rollout meta and logs)."""
        return attrs.asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> DecodeParams:
        """Build from a ``rollout_matching.decoding`` mapping; unknown or missing keys raise."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(CONFIG_PATH, f"expected a mapping, got {type(mapping).__name__}")
        unknown = sorted(str(key) for key in set(mapping) - {f.name for f in attrs.fields(cls)})
        if unknown:
            raise ConfigError(f"{CONFIG_PATH}.{unknown[0]}", f"unknown decoding key (known: {cls._keys()})")
        if "max_new_tokens" not in mapping:
            raise ConfigError(f"{CONFIG_PATH}.max_new_tokens", "required: an int >= 1")
        return cls(**mapping)

    @classmethod
    def _keys(cls) -> str:
        return ", ".join(f.name for f in attrs.fields(cls))
