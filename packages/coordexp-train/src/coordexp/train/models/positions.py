"""Padding-free packing for Qwen3-VL: 4-row position ids, ``cu_seq_lens`` and attention (spec 06 §6.7).

How transformers 5.24 consumes these (read from ``models/qwen3_vl/modeling_qwen3_vl.py`` and
``masking_utils.py``):

* **Rope index.** ``Qwen3VLModel.get_rope_index(input_ids[B, L], mm_token_type_ids[B, L],
  image_grid_thw=None, video_grid_thw=None, attention_mask=None) -> (position_ids[3, B, L],
  rope_deltas[B, 1])``. ``mm_token_type_ids`` is 0 text / 1 image / 2 video (the processor returns
  it); the grids are consumed in order across the batch. On ``Qwen3VLForConditionalGeneration`` it
  lives at ``model.model.get_rope_index``. We call it once per segment with that segment's grids.
* **4-row position ids.** ``Qwen3VLTextModel.forward`` accepts ``position_ids[4, B, T]``: row 0 is
  the *text* position (used for the causal mask and passed to every attention layer as
  ``position_ids``), rows 1..3 are the mRoPE t/h/w positions (rotary embedding). When
  ``position_ids`` is given, the model does not recompute positions and ``mm_token_type_ids`` is
  not needed.
* **Custom 4-D mask.** ``create_causal_mask`` returns a 4-D ``attention_mask`` unchanged. For
  ``sdpa`` pass a bool mask (True = may attend); for ``eager`` an *additive* float mask (0 or the
  dtype's min) — eager adds the mask to the scores, so a bool mask there is silently wrong.
  :func:`packed_attention_mask` picks the right form.
* **Implicit packing.** With ``attention_mask=None`` *and no cache*, transformers derives segments
  from row 0 (a position that is not previous+1 starts a new sequence): ``sdpa``/``eager`` then
  build the same block-diagonal causal mask, and ``flash_attention_2/3`` run varlen attention with
  ``cu_seqlens`` taken from the position ids. The text model creates a ``DynamicCache`` whenever
  ``use_cache`` is true (the config default, also in train mode), which silently disables that
  detection and lets segments attend to each other: always pass ``use_cache=False`` with a pack.
* **No varlen kwargs.** Do not pass ``cu_seq_lens_q``/``cu_seq_lens_k`` as model kwargs:
  ``Qwen3VLModel.forward`` forwards ``**kwargs`` to the vision tower as well.
* **Vision inputs.** ``pixel_values`` rows and ``image_grid_thw`` rows are concatenated in segment
  order; the vision tower attends per image (its own ``cu_seqlens`` from the grids), so images never
  see each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from coordexp.core.errors import ConfigError, PipelineError

MASKED_ATTENTION = ("sdpa", "sdpa_varlen", "eager")
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def _unwrap(model: Any) -> Any:
    """Strip DDP/accelerate wrappers (``.module``)."""
    while hasattr(model, "module") and not hasattr(model, "get_rope_index"):
        model = model.module
    return model


def rope_index_function(model: Any) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The model's ``get_rope_index`` (on the model itself or its ``.model``; wrappers unwrapped)."""
    base = _unwrap(model)
    for candidate in (base, getattr(base, "model", None)):
        function = getattr(candidate, "get_rope_index", None)
        if callable(function):
            return function
    raise ConfigError(
        "model.model", f"{type(base).__name__} has no get_rope_index; expected a Qwen3-VL model"
    )


def _model_config(model: Any) -> Any:
    return _unwrap(model).config


@attrs.frozen(eq=False)
class PackSegment:
    """One unpadded sample of a pack.

    ``input_ids``: ``[l]`` integer; ``image_grid_thw``: ``[n_images, 3]`` or None; ``pixel_values``:
    that segment's patch rows ``[Σ t·h·w, D]`` or None; ``mm_token_type_ids``: ``[l]`` (derived from
    the image/video token ids when None).
    """

    input_ids: torch.Tensor
    image_grid_thw: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    mm_token_type_ids: torch.Tensor | None = None

    def __attrs_post_init__(self) -> None:
        if self.input_ids.ndim != 1 or self.input_ids.numel() == 0:
            raise PipelineError(
                f"a pack segment needs 1-D non-empty input_ids, got shape {tuple(self.input_ids.shape)}"
            )
        if self.image_grid_thw is not None and (
            self.image_grid_thw.ndim != 2 or self.image_grid_thw.shape[1] != 3
        ):
            raise PipelineError(f"image_grid_thw must be [n, 3], got {tuple(self.image_grid_thw.shape)}")
        if (self.pixel_values is None) != (self.image_grid_thw is None):
            raise PipelineError("pixel_values and image_grid_thw must be given together")
        if self.mm_token_type_ids is not None and self.mm_token_type_ids.shape != self.input_ids.shape:
            raise PipelineError(
                f"mm_token_type_ids shape {tuple(self.mm_token_type_ids.shape)} != input_ids shape "
                f"{tuple(self.input_ids.shape)}"
            )


@attrs.frozen(eq=False)
class PackedPositions:
    """``position_ids [4, 1, T]`` long (row 0 text positions, rows 1..3 mRoPE), ``cu_seq_lens [S+1]``
    int32 (``[0, l1, l1+l2, …, T]``) and ``max_len = max l_i``."""

    position_ids: torch.Tensor
    cu_seq_lens: torch.Tensor
    max_len: int

    @property
    def text_position_ids(self) -> torch.Tensor:
        """``[1, T]``: ``0..l_i-1`` restarting in each segment."""
        return self.position_ids[0]

    @property
    def num_segments(self) -> int:
        return int(self.cu_seq_lens.numel()) - 1


def cu_seq_lens_from_lengths(lengths: Sequence[int] | torch.Tensor, device: Any = None) -> torch.Tensor:
    """``[0, l1, l1+l2, …, T]`` as int32; every length must be ≥ 1."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64, device=device)
    if lengths.ndim != 1 or lengths.numel() == 0 or bool((lengths < 1).any()):
        raise PipelineError(f"segment lengths must be a non-empty list of ints >= 1, got {lengths.tolist()}")
    return torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)


def segment_ids_from_cu(cu_seq_lens: torch.Tensor) -> torch.Tensor:
    """``[T]`` long: the segment index of every packed position."""
    lengths = cu_seq_lens.diff().long()
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seq_lens.device), lengths)


def text_position_ids_from_cu(cu_seq_lens: torch.Tensor) -> torch.Tensor:
    """``[T]`` long: ``0..l_i-1`` in each segment."""
    total = int(cu_seq_lens[-1])
    starts = cu_seq_lens[:-1].long()
    return torch.arange(total, device=cu_seq_lens.device) - starts[segment_ids_from_cu(cu_seq_lens)]


def mm_token_types(input_ids: torch.Tensor, image_token_id: int, video_token_id: int) -> torch.Tensor:
    """0 for text, 1 for ``<|image_pad|>``, 2 for ``<|video_pad|>`` (what the processor returns)."""
    return (input_ids == image_token_id).long() + 2 * (input_ids == video_token_id).long()


def segment_mrope_positions(model: Any, segment: PackSegment) -> torch.Tensor:
    """``[3, l]`` mRoPE positions of one segment alone (the model's rope-index function)."""
    config = _model_config(model)
    input_ids = segment.input_ids.long()
    types = segment.mm_token_type_ids
    if types is None:
        types = mm_token_types(input_ids, config.image_token_id, config.video_token_id)
    merge = config.vision_config.spatial_merge_size
    pads = int((input_ids == config.image_token_id).sum())
    grids = segment.image_grid_thw
    expected = 0 if grids is None else int((grids.long().prod(-1) // (merge * merge)).sum())
    if pads != expected:
        raise PipelineError(
            f"a segment has {pads} image-pad tokens but its image_grid_thw implies {expected} "
            f"(Σ t·h·w/{merge}²); pixel inputs and text are out of sync"
        )
    positions, _ = rope_index_function(model)(
        input_ids.unsqueeze(0), mm_token_type_ids=types.unsqueeze(0).long(), image_grid_thw=grids
    )
    return positions[:, 0, :]


def pack_position_ids(model: Any, segments: Sequence[PackSegment]) -> PackedPositions:
    """4-row position ids of a pack: per-segment mRoPE ``[3, l_i]`` concatenated to ``[3, 1, T]`` with
    ``text_position_ids`` (``0..l_i-1`` per segment) prepended → ``[4, 1, T]``."""
    if not segments:
        raise PipelineError("a pack needs at least one segment")
    device = segments[0].input_ids.device
    cu_seq_lens = cu_seq_lens_from_lengths([s.input_ids.numel() for s in segments], device=device)
    mrope = torch.cat([segment_mrope_positions(model, s) for s in segments], dim=1)
    text = text_position_ids_from_cu(cu_seq_lens).to(mrope.dtype)
    position_ids = torch.cat([text.unsqueeze(0), mrope], dim=0).unsqueeze(1)
    max_len = int(cu_seq_lens.diff().max())
    return PackedPositions(position_ids=position_ids, cu_seq_lens=cu_seq_lens, max_len=max_len)


def block_diagonal_causal_mask(
    cu_seq_lens: torch.Tensor, *, dtype: torch.dtype = torch.bool, device: Any = None
) -> torch.Tensor:
    """``[1, 1, T, T]`` causal mask that only lets a position attend inside its own segment.

    ``dtype=torch.bool``: True where attention is allowed (sdpa). A float dtype gives the additive
    form: 0 where allowed, ``torch.finfo(dtype).min`` elsewhere (eager).
    """
    segment = segment_ids_from_cu(cu_seq_lens.to(device) if device is not None else cu_seq_lens)
    position = torch.arange(segment.numel(), device=segment.device)
    allowed = (segment.unsqueeze(1) == segment.unsqueeze(0)) & (
        position.unsqueeze(0) <= position.unsqueeze(1)
    )
    allowed = allowed[None, None]
    if dtype == torch.bool:
        return allowed
    if not dtype.is_floating_point:
        raise ValueError(f"mask dtype must be torch.bool or a float dtype, got {dtype}")
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def packed_attention_mask(
    cu_seq_lens: torch.Tensor, attn_implementation: str, dtype: torch.dtype
) -> torch.Tensor | None:
    """The ``attention_mask`` to pass with a pack: bool block-diagonal for ``sdpa`` and
    ``sdpa_varlen`` (which runs it per segment, :mod:`.varlen_attention`), additive float (``dtype``)
    for ``eager``, None for ``flash_attention_2/3`` (varlen from row 0 of ``position_ids``). Other
    implementations are rejected (spec 06 §6.7)."""
    if attn_implementation in ("sdpa", "sdpa_varlen"):
        return block_diagonal_causal_mask(cu_seq_lens, dtype=torch.bool)
    if attn_implementation == "eager":
        return block_diagonal_causal_mask(cu_seq_lens, dtype=dtype)
    if attn_implementation in VARLEN_ATTENTION:
        return None
    raise ConfigError(
        "model.attn_implementation",
        f"packing supports {MASKED_ATTENTION + VARLEN_ATTENTION}, got {attn_implementation!r}",
    )


def check_packed_positions(
    position_ids: torch.Tensor, cu_seq_lens: torch.Tensor, *, num_segments: int | None = None
) -> None:
    """Isolation checks of spec 06 §6.7; raises :class:`PipelineError` naming the first violation.

    ``position_ids`` must be ``[4, 1, T]`` with ``T = cu_seq_lens[-1]``; ``cu_seq_lens`` starts at 0
    and strictly increases; row 0 is 0 exactly at the segment starts and counts up by one inside a
    segment; ``num_segments`` (the pack meta) equals ``len(cu_seq_lens) - 1``.
    """
    if position_ids.ndim != 3 or position_ids.shape[0] != 4 or position_ids.shape[1] != 1:
        raise PipelineError(f"packed position_ids must be [4, 1, T], got {tuple(position_ids.shape)}")
    cu = cu_seq_lens.long().to(position_ids.device)
    if cu.ndim != 1 or cu.numel() < 2 or int(cu[0]) != 0 or bool((cu.diff() <= 0).any()):
        raise PipelineError(f"cu_seq_lens must start at 0 and strictly increase, got {cu.tolist()}")
    if int(cu[-1]) != position_ids.shape[2]:
        raise PipelineError(
            f"cu_seq_lens ends at {int(cu[-1])} but the pack has {position_ids.shape[2]} positions"
        )
    if num_segments is not None and num_segments != cu.numel() - 1:
        raise PipelineError(f"pack meta says {num_segments} segments, cu_seq_lens has {cu.numel() - 1}")
    text = position_ids[0, 0]
    expected = text_position_ids_from_cu(cu)
    if not torch.equal(text, expected.to(text.dtype)):
        first = int((text != expected.to(text.dtype)).nonzero()[0])
        raise PipelineError(
            f"text_position_ids must be 0..l_i-1 per segment (0 exactly at cu_seq_lens starts); "
            f"position {first} holds {int(text[first])}, expected {int(expected[first])}"
        )


def packed_model_inputs(
    model: Any, segments: Sequence[PackSegment], *, attn_implementation: str | None = None
) -> tuple[dict[str, Any], PackedPositions]:
    """Model kwargs of one pack (``input_ids [1, T]``, ``position_ids [4, 1, T]``, ``attention_mask``,
    ``pixel_values``, ``image_grid_thw``, ``use_cache=False``) and its :class:`PackedPositions`.

    ``attn_implementation`` defaults to the model's; the mask dtype follows the model's parameters.
    """
    base = _unwrap(model)
    implementation = attn_implementation or base.config._attn_implementation
    packed = pack_position_ids(base, segments)
    check_packed_positions(packed.position_ids, packed.cu_seq_lens, num_segments=len(segments))
    with_images = [s for s in segments if s.image_grid_thw is not None]
    kwargs: dict[str, Any] = {
        "input_ids": torch.cat([s.input_ids.long() for s in segments]).unsqueeze(0),
        "position_ids": packed.position_ids,
        "attention_mask": packed_attention_mask(packed.cu_seq_lens, implementation, base.dtype),
        "pixel_values": torch.cat([s.pixel_values for s in with_images]) if with_images else None,
        "image_grid_thw": torch.cat([s.image_grid_thw for s in with_images]) if with_images else None,
        "use_cache": False,
    }
    return kwargs, packed
