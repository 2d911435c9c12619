"""Deterministic training of the bundled byte-level BPE (the ~1k-token core of the tiny tokenizer).

The corpus is synthetic detection text: CoordJSON answers about coloured shapes and COCO objects,
prompt-like instructions and chat role words. Added tokens (chat specials, ``<|coord_k|>``) are cut
out before training, exactly as the tokenizer splits them off before BPE at encode time, so no merge
is spent on them. Pre-tokenization, normalization and decoding copy the Qwen2/Qwen3 byte-level
pipeline so the tiny tokenizer segments text the way the real one does (digits one by one, a space
attached to the following word, newlines isolated).

``scripts/build_tiny_tokenizer.py`` writes :func:`train_tiny_bpe`'s result to
``assets/tiny_bpe.json``; a test checks that the bundled file is what this module produces.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from coordexp.core.codec import COORD_TOKENS, NUM_BINS
from coordexp.train.data.coco80 import COCO_80_NAMES
from coordexp.train.models.special_tokens import (
    CHAT_SPECIAL_TOKENS,
    GENERATION_PROMPT,
    IM_END,
    IM_START,
    IMAGE_MARKUP,
)

#: Qwen2/Qwen3 pre-tokenizer split pattern (contractions, letter runs with one leading non-letter,
#: single digits, punctuation runs, newlines, whitespace).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: BPE size chosen so that BPE + 7 chat specials + 1000 coord tokens = 2048 embedding rows.
TINY_BPE_VOCAB_SIZE = 2048 - len(CHAT_SPECIAL_TOKENS) - NUM_BINS
CORPUS_SEED = 20261129
CORPUS_SAMPLES = 4000

_COLOURS = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "black",
    "white",
    "grey",
    "pink",
    "brown",
    "cyan",
)
_SHAPES = (
    "circle",
    "square",
    "triangle",
    "rectangle",
    "ellipse",
    "star",
    "hexagon",
    "diamond",
    "cross",
    "ring",
)
_SIZES = ("small", "large", "tiny", "big", "medium", "")
_MATERIALS = (
    "striped",
    "dotted",
    "wooden",
    "metal",
    "plastic",
    "glass",
    "shiny",
    "dark",
    "bright",
    "pale",
    "",
)
_PLACES = (
    "in the upper left corner",
    "in the lower right corner",
    "near the center",
    "at the top edge",
    "at the bottom edge",
    "on the left side",
    "on the right side",
    "behind the table",
    "partially occluded",
    "in the background",
    "in the foreground",
    "next to the window",
    "on the floor",
    "under the chair",
)
_EXTRA_DESCS = (
    "black cat",
    "road sign",
    "mug",
    "café table",
    "naïve drawing",
    "Straße sign",
    "红色圆形",
    "señal azul",
)
_INSTRUCTIONS = (
    "You are an object detector.",
    'Reply with exactly one JSON object of the form {"objects": [...]} and nothing else.',
    'Each element of "objects" has exactly two keys: "desc" (a short description) and either "bbox_2d" '
    'or "poly".',
    "Write every coordinate only as a bare token, an integer from 0 to 999.",
    "0 is the left/top edge and 999 the right/bottom edge.",
    '"bbox_2d" is [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2.',
    '"poly" is a flat list [x1, y1, x2, y2, ...] of at least 3 vertices in boundary order, going clockwise.',
    "List every clearly visible object, ordered top to bottom and then left to right.",
    "List every clearly visible object, in any order.",
    'Write the JSON on one line with one space after every ":" and ",".',
    "Detect all objects in the image. Example element:",
    'Use one of these names for "desc":',
)
_ADDED_TOKEN_RE = re.compile("|".join(re.escape(t) for t in CHAT_SPECIAL_TOKENS) + r"|<\|coord_\d+\|>")


def _desc(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        words = (rng.choice(_SIZES), rng.choice(_MATERIALS), rng.choice(_COLOURS), rng.choice(_SHAPES))
        if rng.random() < 0.3:
            words += (rng.choice(_PLACES),)
        return " ".join(w for w in words if w)
    if roll < 0.9:
        return rng.choice(COCO_80_NAMES)
    return rng.choice(_EXTRA_DESCS)


def _coords(rng: random.Random, n: int) -> str:
    return "[" + ", ".join(COORD_TOKENS[rng.randrange(NUM_BINS)] for _ in range(n)) + "]"


def _record(rng: random.Random, desc_first: bool) -> str:
    geometry = (
        ('"bbox_2d": ' + _coords(rng, 4))
        if rng.random() < 0.8
        else ('"poly": ' + _coords(rng, 2 * rng.randint(3, 6)))
    )
    desc = '"desc": ' + json.dumps(_desc(rng), ensure_ascii=False)
    return "{" + (f"{desc}, {geometry}" if desc_first else f"{geometry}, {desc}") + "}"


def _sample(rng: random.Random) -> str:
    desc_first = rng.random() < 0.7
    answer = '{"objects": [' + ", ".join(_record(rng, desc_first) for _ in range(rng.randint(0, 6))) + "]}"
    system = " ".join(rng.sample(_INSTRUCTIONS, k=rng.randint(2, 5)))
    if rng.random() < 0.1:
        system += " " + _INSTRUCTIONS[-1] + " " + ", ".join(COCO_80_NAMES)
    user = "Detect all objects in the image. Example element: " + _record(rng, desc_first)
    return (
        f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{IMAGE_MARKUP}{user}{IM_END}\n"
        f"{GENERATION_PROMPT}{answer}{IM_END}"
    )


def tiny_bpe_corpus(seed: int = CORPUS_SEED, samples: int = CORPUS_SAMPLES) -> Iterator[str]:
    """Yield the training pieces: each synthetic chat sample with its added tokens cut out."""
    rng = random.Random(seed)
    for _ in range(samples):
        for piece in _ADDED_TOKEN_RE.split(_sample(rng)):
            if piece:
                yield piece


def qwen_style_bpe_shell() -> Tokenizer:
    """An empty byte-level BPE with Qwen's normalizer (NFC), pre-tokenizer and decoder."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tokenizer


def train_tiny_bpe(vocab_size: int = TINY_BPE_VOCAB_SIZE) -> Tokenizer:
    """Train the bundled BPE (no added tokens) on :func:`tiny_bpe_corpus`; deterministic."""
    tokenizer = qwen_style_bpe_shell()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(tiny_bpe_corpus(), trainer=trainer)
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(
            f"BPE training produced {tokenizer.get_vocab_size()} tokens instead of {vocab_size}; "
            "enlarge the corpus (CORPUS_SAMPLES) so enough merges reach min_frequency"
        )
    return tokenizer
