"""A tiny real tokenizer for rollout tests: byte-level BPE trained in-process + coord/eos tokens.

:func:`tiny_test_codec` trains a byte-level BPE with the ``tokenizers`` library on a few canonical
CoordJSON strings, so that its merges fuse structure the way real tokenizers do (``"}``, ``]},``,
``"}]}``, ``}]}`` …: the straddling tokens of spec 03 §3.3), then adds ``<|endoftext|>`` and
``<|im_end|>`` as special tokens and the 1000 coord tokens as normal added tokens, and wraps it as a
:class:`~coordexp.rollout.codec.TableCodec`. Deterministic, offline, about 0.1 s, cached.

``tokenizers`` is imported lazily: it ships with transformers (the ``hf`` extra) and is only needed
by tests and benchmarks.
"""

from __future__ import annotations

from functools import lru_cache

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.coordjson.aligned import EOS_LITERAL
from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.rollout.backend import RolloutOutput
from coordexp.rollout.codec import ENDOFTEXT_LITERAL, TableCodec

_DESCS = (
    "cat",
    "black cat",
    "dog",
    "road sign",
    "mug",
    "person",
    "red car",
    "tree",
    "chair",
    "café",
    "traffic light",
    "bus",
    "x",
    'say "hi"',
    "a\\b",
    "中文",
    "bird",
    "cup",
)


def _corpus() -> list[str]:
    texts: list[str] = []
    for index, desc in enumerate(_DESCS):
        box = CoordObject(desc, "bbox_2d", (index, 2 * index, 100 + index, 200 + index))
        poly = CoordObject(desc, "poly", (300, 200 + index, 360, 260, 240, 260))
        for field_order in ("desc_first", "geometry_first"):
            texts.append(serialize([box], field_order))
            texts.append(serialize([box, poly, box], field_order))
            texts.append(serialize([poly, box], field_order) + EOS_LITERAL)
    texts.append(serialize([], "desc_first"))
    return texts * 4


@lru_cache(maxsize=4)
def tiny_test_tokenizer(vocab_size: int = 420):
    """The trained ``tokenizers.Tokenizer`` (BPE + ``<|endoftext|>``, ``<|im_end|>``, coord tokens)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (ENDOFTEXT_LITERAL, EOS_LITERAL)]
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in COORD_TOKENS])
    return tokenizer


@lru_cache(maxsize=4)
def tiny_test_codec(vocab_size: int = 420) -> TableCodec:
    """:class:`TableCodec` over :func:`tiny_test_tokenizer`; eos ``<|im_end|>``, + ``<|endoftext|>`` stop."""
    return TableCodec.from_tokenizers(tiny_test_tokenizer(vocab_size))


def box_or_diamond(desc: str, x: int, y: int, w: int, h: int, *, poly: bool) -> CoordObject:
    """A test object over the bin box ``(x, y, x + w, y + h)``: the box itself, or (``poly``) the
    diamond through the box's edge midpoints, in canonical vertex order (top first, clockwise)."""
    if not poly:
        return CoordObject(desc, "bbox_2d", (x, y, x + w, y + h))
    xs = (x + w // 2, x + w, x + w // 2, x)
    ys = (y, y + h // 2, y + h, y + h // 2)
    return CoordObject(desc, "poly", tuple(v for pair in zip(xs, ys, strict=True) for v in pair))


def cut_rollout(
    codec: TableCodec,
    ids: list[int],
    cut: int | None = None,
    *,
    prompt_ids: tuple[int, ...] = (1,),
    max_new_tokens: int = 4096,
) -> RolloutOutput:
    """The rollout of `ids` cut after `cut` tokens (all of them when None): `finish_reason` is
    ``stop`` for the whole sequence and ``length`` for a strict prefix, as a backend would report."""
    n = len(ids) if cut is None else cut
    return RolloutOutput(
        prompt_ids=prompt_ids,
        response_ids=ids[:n],
        finish_reason="stop" if n == len(ids) else "length",
        max_new_tokens=max_new_tokens,
        eos_token_ids=codec.stop_ids,
    )


__all__ = ["box_or_diamond", "cut_rollout", "tiny_test_codec", "tiny_test_tokenizer"]
