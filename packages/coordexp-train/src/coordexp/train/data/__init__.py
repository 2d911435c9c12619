"""Data layer of coordexp-train: the JSONL contract (spec 01 §1.1), ordering (§1.6), polygon
canonicalization on load (§1.7), prompts (§1.5), chat rendering, converters and synthetic data.

Modules: `records` (Record), `jsonl` (load_jsonl, validate_jsonl), `rules` (per-record rules),
`coords`, `images`, `ordering`, `options`, `prompts`, `render`, `convert` (pixel JSONL), `coco`,
`synth`, `commands` (CLI-facing functions).
"""

from __future__ import annotations

from coordexp.train.data.coco import convert_coco
from coordexp.train.data.commands import cmd_convert, cmd_synth, cmd_validate
from coordexp.train.data.convert import ConversionSummary, convert_pixel_jsonl
from coordexp.train.data.jsonl import (
    DEGENERATE_BBOX_COUNT,
    POLY_CANONICALIZED_COUNT,
    REORDERED_RECORDS_COUNT,
    JsonlDataset,
    ValidationReport,
    load_jsonl,
    validate_jsonl,
)
from coordexp.train.data.ordering import epoch_seed, random_order, sort_objects
from coordexp.train.data.prompts import (
    PromptPair,
    available_prompt_variants,
    prompt_sha256,
    resolve_prompt,
)
from coordexp.train.data.records import Record
from coordexp.train.data.render import assistant_text, build_messages
from coordexp.train.data.rules import LengthCheck
from coordexp.train.data.synth import SynthResult, synthesize

__all__ = [
    "DEGENERATE_BBOX_COUNT",
    "POLY_CANONICALIZED_COUNT",
    "REORDERED_RECORDS_COUNT",
    "ConversionSummary",
    "JsonlDataset",
    "LengthCheck",
    "PromptPair",
    "Record",
    "SynthResult",
    "ValidationReport",
    "assistant_text",
    "available_prompt_variants",
    "build_messages",
    "cmd_convert",
    "cmd_synth",
    "cmd_validate",
    "convert_coco",
    "convert_pixel_jsonl",
    "epoch_seed",
    "load_jsonl",
    "prompt_sha256",
    "random_order",
    "resolve_prompt",
    "sort_objects",
    "synthesize",
    "validate_jsonl",
]
