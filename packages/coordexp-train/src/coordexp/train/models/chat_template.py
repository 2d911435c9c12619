"""The Qwen3-VL-style ChatML template and the startup probe of spec 01 §1.5.

Rendering contract (what :data:`CHAT_TEMPLATE` produces):

* every message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` with role in system/user/assistant;
* ``content`` is a string, or a list of parts ``{"type": "image"}`` (rendered as
  ``<|vision_start|><|image_pad|><|vision_end|>``; the processor later expands the single pad token
  to ``t·h·w/merge²`` copies) and ``{"type": "text", "text": ...}`` (verbatim);
* assistant content is verbatim: no reasoning block, no stripping;
* ``add_generation_prompt=True`` appends ``<|im_start|>assistant\\n``.

The teacher-forced sample is ``generation prompt + content + "<|im_end|>"``: the newline the template
writes after the final ``<|im_end|>`` is not part of a training sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from coordexp.core.errors import ConfigError
from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.render import build_messages
from coordexp.train.models.special_tokens import GENERATION_PROMPT, IM_END, IM_START, IMAGE_MARKUP, IMAGE_PAD

_PROBE_IMAGE = "probe.png"  # the template renders image parts as markup; the path is never read

CHAT_TEMPLATE = r"""{%- for message in messages -%}
    {%- if message['role'] not in ['system', 'user', 'assistant'] -%}
        {{- raise_exception('unsupported chat role ' ~ message['role'] ~ ' (system, user, assistant)') -}}
    {%- endif -%}
    {{- '<|im_start|>' + message['role'] + '\n' -}}
    {%- if message['content'] is string -%}
        {{- message['content'] -}}
    {%- else -%}
        {%- for part in message['content'] -%}
            {%- if part['type'] == 'image' -%}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
            {%- elif part['type'] == 'text' -%}
                {{- part['text'] -}}
            {%- else -%}
                {{- raise_exception('unsupported content part ' ~ part['type'] ~ ' (image, text)') -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""


@attrs.frozen
class ChatTemplateProbe:
    """Outcome of a passed :func:`probe_chat_template`.

    ``prompt_ids`` is the tokenized generation prompt; ``sample_ids`` the teacher-forced sample
    (prompt + content + ``<|im_end|>``); the label span is ``sample_ids[len(prompt_ids):]``.
    """

    prompt_text: str
    prompt_ids: tuple[int, ...]
    sample_ids: tuple[int, ...]

    @property
    def label_ids(self) -> tuple[int, ...]:
        """Token ids of the assistant span (content + ``<|im_end|>``)."""
        return self.sample_ids[len(self.prompt_ids) :]


def _fail(message: str) -> ConfigError:
    return ConfigError("template", f"chat template probe failed: {message}")


def _expect_equal(what: str, got: str | Sequence[int], expected: str | Sequence[int]) -> None:
    if got != expected:
        raise _fail(f"{what}\n  expected: {expected!r}\n  got:      {got!r}")


def probe_chat_template(
    tokenizer: Any,
    *,
    system: str,
    user: str,
    assistant: str,
    image_pad_count: int = 1,
) -> ChatTemplateProbe:
    """Check the tokenizer's chat template against spec 01 §1.5 and return the probed token ids.

    ``tokenizer`` is a transformers tokenizer (or anything with ``apply_chat_template``, ``encode``
    and ``decode``, e.g. a processor's ``.tokenizer``). ``image_pad_count`` is the number of
    ``<|image_pad|>`` tokens the processor would insert for the image (``t·h·w/merge²``).

    Checks, each raising :class:`ConfigError` (path ``template``) with the expected and actual text:
    the markup of system/user/image; the generation prompt ends in ``<|im_start|>assistant\\n``; the
    full render equals prompt + content + ``<|im_end|>\\n`` (content verbatim); the teacher-forced
    ids start with exactly the prompt ids; the label span decodes (``skip_special_tokens=False``) to
    ``content + "<|im_end|>"`` and ends with the ``<|im_end|>`` id.
    """
    if image_pad_count < 1:
        raise ValueError(f"image_pad_count must be >= 1, got {image_pad_count}")
    pair = PromptPair(system=system, user=user)
    prompt_text = tokenizer.apply_chat_template(
        build_messages(pair, _PROBE_IMAGE), tokenize=False, add_generation_prompt=True
    )
    expected_prompt = (
        f"{IM_START}system\n{system}{IM_END}\n"
        f"{IM_START}user\n{IMAGE_MARKUP}{user}{IM_END}\n"
        f"{GENERATION_PROMPT}"
    )
    _expect_equal("generation prompt markup", prompt_text, expected_prompt)

    full_text = tokenizer.apply_chat_template(
        build_messages(pair, _PROBE_IMAGE, assistant), tokenize=False, add_generation_prompt=False
    )
    _expect_equal(
        "full render (assistant content must be verbatim)", full_text, prompt_text + assistant + IM_END + "\n"
    )

    expanded_prompt = prompt_text.replace(IMAGE_PAD, IMAGE_PAD * image_pad_count)
    prompt_ids = list(tokenizer.encode(expanded_prompt, add_special_tokens=False))
    sample_ids = list(tokenizer.encode(expanded_prompt + assistant + IM_END, add_special_tokens=False))
    _expect_equal(
        "teacher-forced ids must start with the generation-prompt ids",
        sample_ids[: len(prompt_ids)],
        prompt_ids,
    )
    label_ids = sample_ids[len(prompt_ids) :]
    decoded = tokenizer.decode(label_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    _expect_equal("label span decode", decoded, assistant + IM_END)
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    if not label_ids or label_ids[-1] != im_end_id:
        raise _fail(f"the label span must end with the {IM_END} id {im_end_id}, got {label_ids[-1:]}")
    pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    if prompt_ids.count(pad_id) != image_pad_count:
        raise _fail(
            f"expected {image_pad_count} {IMAGE_PAD} ids in the prompt, found {prompt_ids.count(pad_id)}"
        )
    return ChatTemplateProbe(
        prompt_text=expanded_prompt, prompt_ids=tuple(prompt_ids), sample_ids=tuple(sample_ids)
    )
