"""Named architecture presets for randomly initialized Qwen3-VL models (tests, demos, benchmarks).

Constraints of ``transformers.Qwen3VLConfig`` that every preset satisfies (checked on construction):
``sum(mrope_section) == text_head_dim / 2``; every ``deepstack_visual_indexes`` entry is below the
vision depth and there are no more of them than text layers; ``num_position_embeddings`` is a
perfect square; the vision tower's ``out_hidden_size`` is the text ``hidden_size``; head counts
divide evenly. Patch 16, temporal patch 2 and merge 2 match Qwen3-VL and the processor.
"""

from __future__ import annotations

import math

import attrs

from coordexp.core.errors import ConfigError


def _positive(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.preset.{attribute.name}", f"expected a positive int, got {value!r}")


def _positive_float(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < math.inf:
        raise ConfigError(f"model.preset.{attribute.name}", f"expected a positive finite number, got {value!r}")


@attrs.frozen
class ModelPreset:
    """Sizes of one Qwen3-VL architecture (text decoder + vision tower)."""

    name: str
    text_hidden_size: int = attrs.field(validator=_positive)
    text_layers: int = attrs.field(validator=_positive)
    text_heads: int = attrs.field(validator=_positive)
    text_kv_heads: int = attrs.field(validator=_positive)
    text_head_dim: int = attrs.field(validator=_positive)
    text_intermediate_size: int = attrs.field(validator=_positive)
    mrope_section: tuple[int, int, int] = attrs.field(converter=tuple)
    vision_hidden_size: int = attrs.field(validator=_positive)
    vision_depth: int = attrs.field(validator=_positive)
    vision_heads: int = attrs.field(validator=_positive)
    vision_intermediate_size: int = attrs.field(validator=_positive)
    num_position_embeddings: int = attrs.field(validator=_positive)
    deepstack_visual_indexes: tuple[int, ...] = attrs.field(converter=tuple)
    tie_word_embeddings: bool
    rope_theta: float = 5_000_000.0
    #: Std of the normal init of every linear/embedding weight (text and vision). transformers'
    #: 0.02 suits hidden sizes in the thousands; at width 128 it makes each random projection shrink
    #: its input several-fold, and a signal crossing the ~6 maps from a patch to a coord logit
    #: starts out vanishingly small. The presets use about 1/sqrt(text_hidden_size).
    initializer_range: float = attrs.field(default=0.02, validator=_positive_float)
    max_position_embeddings: int = attrs.field(default=32768, validator=_positive)

    def __attrs_post_init__(self) -> None:
        where = f"model.preset[{self.name}]"
        if len(self.mrope_section) != 3 or sum(self.mrope_section) * 2 != self.text_head_dim:
            raise ConfigError(
                where,
                f"mrope_section {self.mrope_section} must have 3 entries summing to text_head_dim/2 = "
                f"{self.text_head_dim // 2}",
            )
        if self.text_heads % self.text_kv_heads:
            raise ConfigError(
                where,
                f"text_heads {self.text_heads} must be a multiple of text_kv_heads {self.text_kv_heads}",
            )
        if self.vision_hidden_size % self.vision_heads:
            raise ConfigError(
                where,
                f"vision_hidden_size {self.vision_hidden_size} must be a multiple of "
                f"vision_heads {self.vision_heads}",
            )
        if math.isqrt(self.num_position_embeddings) ** 2 != self.num_position_embeddings:
            raise ConfigError(
                where, f"num_position_embeddings {self.num_position_embeddings} must be a perfect square"
            )
        bad = [i for i in self.deepstack_visual_indexes if not 0 <= i < self.vision_depth]
        if bad or len(set(self.deepstack_visual_indexes)) != len(self.deepstack_visual_indexes):
            raise ConfigError(
                where,
                f"deepstack_visual_indexes {self.deepstack_visual_indexes} must be distinct and below the "
                f"vision depth {self.vision_depth}",
            )
        if len(self.deepstack_visual_indexes) > self.text_layers:
            raise ConfigError(where, "there cannot be more deepstack_visual_indexes than text layers")


_TINY = ModelPreset(
    name="tiny",
    text_hidden_size=128,
    text_layers=2,
    text_heads=4,
    text_kv_heads=2,
    text_head_dim=32,
    text_intermediate_size=384,
    mrope_section=(6, 5, 5),
    vision_hidden_size=64,
    vision_depth=2,
    vision_heads=2,
    vision_intermediate_size=256,
    num_position_embeddings=256,
    deepstack_visual_indexes=(0,),
    tie_word_embeddings=True,
    # With head_dim 32 there are only 16 rotary pairs; at Qwen3-VL's theta of 5e6 the width
    # axis's fastest pair turns 0.15 rad per visual token. 1e4 gives it 0.32, closer to what the
    # full-size model's 64 pairs give.
    rope_theta=10_000.0,
    initializer_range=0.1,
)

PRESETS: dict[str, ModelPreset] = {
    "tiny": _TINY,
    # The demo's model: the tiny widths with a third decoder layer. On the demo's 2 CPU cores a step
    # costs 17 % more than with 2 layers, and the validation box error falls much faster per step
    # (README, "Demo results"); the tests keep the cheaper 2-layer `tiny`.
    "tiny3": attrs.evolve(_TINY, name="tiny3", text_layers=3),
    "small": ModelPreset(
        name="small",
        text_hidden_size=256,
        text_layers=4,
        text_heads=4,
        text_kv_heads=2,
        text_head_dim=64,
        text_intermediate_size=768,
        mrope_section=(12, 10, 10),
        vision_hidden_size=128,
        vision_depth=4,
        vision_heads=4,
        vision_intermediate_size=512,
        num_position_embeddings=576,
        deepstack_visual_indexes=(1, 2),
        tie_word_embeddings=False,
        initializer_range=0.0625,
    ),
}


def get_preset(preset: str | ModelPreset) -> ModelPreset:
    """Look up a preset by name (or pass a :class:`ModelPreset` through)."""
    if isinstance(preset, ModelPreset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise ConfigError(
            "model.preset", f"unknown preset {preset!r}; available: {sorted(PRESETS)}"
        ) from None
