"""Spec 01 §1.5 probe: markup, verbatim assistant content, prompt/teacher-forced token identity."""

from __future__ import annotations

import numpy as np
import pytest
from jinja2.exceptions import TemplateError
from PIL import Image

from coordexp.core.errors import ConfigError
from coordexp.train.data.prompts import resolve_prompt
from coordexp.train.data.render import build_messages
from coordexp.train.models import (
    CHAT_TEMPLATE,
    build_processor,
    build_tiny_tokenizer,
    load_qwen3_tokenizer,
    probe_chat_template,
)

ANSWERS = [
    '{"objects": [{"desc": "black cat", "bbox_2d": '
    "[<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>]}]}",
    '{"objects": [{"bbox_2d": [<|coord_0|>, <|coord_9|>, <|coord_999|>, <|coord_999|>], '
    '"desc": "señal \\"A\\"\\n红"}]}',
    '{"objects": []}',
    '{"objects": [',
]


@pytest.fixture(scope="module")
def tokenizers():
    return {"tiny": build_tiny_tokenizer(), "qwen3": load_qwen3_tokenizer()}


@pytest.mark.parametrize("which", ["tiny", "qwen3"])
@pytest.mark.parametrize("answer", ANSWERS)
def test_probe_passes(tokenizers, which, answer):
    tok = tokenizers[which]
    prompt = resolve_prompt("default", "sorted", "desc_first")
    probe = probe_chat_template(
        tok, system=prompt.system, user=prompt.user, assistant=answer, image_pad_count=6
    )
    assert tok.decode(list(probe.label_ids), skip_special_tokens=False) == answer + "<|im_end|>"
    assert probe.sample_ids[: len(probe.prompt_ids)] == probe.prompt_ids
    assert probe.prompt_text.endswith("<|im_start|>assistant\n")
    assert probe.prompt_text.count("<|image_pad|>") == 6


def test_processor_prompt_matches_probe(tokenizers):
    tok = tokenizers["tiny"]
    processor = build_processor(tok)
    prompt = resolve_prompt("coco_80", "random", "geometry_first")
    height, width = 64, 96
    n_pads = processor.image_token_count(height, width)
    probe = probe_chat_template(
        tok, system=prompt.system, user=prompt.user, assistant=ANSWERS[0], image_pad_count=n_pads
    )
    text = processor.apply_chat_template(
        build_messages(prompt, "x.png"), tokenize=False, add_generation_prompt=True
    )
    image = Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))
    batch = processor(text=[text], images=[image], return_tensors="pt")
    assert tuple(batch["input_ids"][0].tolist()) == probe.prompt_ids


def test_probe_rejects_a_template_that_rewrites_the_answer(tokenizers):
    tok = build_tiny_tokenizer()
    # Like Qwen3's text template: an (empty) reasoning block before the assistant content.
    # (The data path sends typed parts, so the rewrite goes into the text-part branch.)
    tok.chat_template = CHAT_TEMPLATE.replace(
        "{{- part['text'] -}}",
        "{{- ('<think>\\n\\n</think>\\n\\n' if message['role'] == 'assistant' else '') "
        "+ part['text'] -}}",
    )
    assert tok.chat_template != CHAT_TEMPLATE
    prompt = resolve_prompt("default", "sorted", "desc_first")
    with pytest.raises(ConfigError, match="content must be verbatim"):
        probe_chat_template(tok, system=prompt.system, user=prompt.user, assistant=ANSWERS[0])


def test_probe_rejects_a_wrong_generation_prompt(tokenizers):
    tok = build_tiny_tokenizer()
    tok.chat_template = tok.chat_template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant'")
    with pytest.raises(ConfigError, match="generation prompt markup"):
        probe_chat_template(tok, system="s", user="u", assistant=ANSWERS[2])


def test_template_rejects_unknown_roles_and_parts(tokenizers):
    tok = tokenizers["tiny"]
    with pytest.raises(TemplateError, match="unsupported chat role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)
    with pytest.raises(TemplateError, match="unsupported content part video"):
        tok.apply_chat_template([{"role": "user", "content": [{"type": "video"}]}], tokenize=False)
