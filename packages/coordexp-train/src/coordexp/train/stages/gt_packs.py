"""GT teacher-forcing packs: encode records, pack them padding-free, build `gt` contexts.

Shared by Stage-1 and Stage-2 Channel A. Sample lengths are computed once and cached under a
fingerprint of everything that changes them (spec 06 §6.7): data bytes, tokenizer, prompt,
`max_pixels`, field order and ordering mode.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from coordexp.core.context import ContextSet
from coordexp.core.errors import PipelineError
from coordexp.core.rows import SampleRows, pack_rows
from coordexp.train.data.jsonl import JsonlDataset
from coordexp.train.data.prompts import PromptPair, prompt_sha256
from coordexp.train.encode.gt import EncodedSample, assistant_length, encode_gt
from coordexp.train.encode.prompt import PromptEncoder
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.models.positions import PackSegment, packed_model_inputs
from coordexp.train.run.manifest import sha256_file
from coordexp.train.stages.base import MicroBatch, move_inputs


#: sample lengths computed in this process, by fingerprint: a second run on the same data (the
#: demo's probe, then its Stage-1) skips tokenizing every sample (~3.5 s for 12,000)
_LENGTHS: dict[str, tuple[int, ...]] = {}

#: samples whose token ids and row metadata one encoder keeps (~6 KB each at the demo's ~140 tokens:
#: ~300 MB when full); those of later samples are computed again at every use
TEXT_CACHE_SIZE = 50_000


@attrs.frozen(eq=False)
class _EncodedText:
    """What `encode_gt` derives from a record's text alone: every `EncodedSample` field but the
    pixels, which are decoded again at every use (1 ms where the rest costs ~3 ms)."""

    input_ids: torch.Tensor
    prompt_len: int
    rows: SampleRows


class GTEncoder:
    """Encodes dataset records into GT teacher-forcing samples (context `gt`).

    With the `sorted` GT order a record encodes to the same ids and rows in every epoch, so the
    first `TEXT_CACHE_SIZE` records encoded keep those (the demo's Stage-1 sees each of its 12,000
    records ~3 times): a later `encode` of them only reads the image. A `random` order changes them
    every epoch and nothing is kept.
    """

    def __init__(
        self,
        dataset: JsonlDataset,
        *,
        info: TokenizerInfo,
        processor: Any,
        prompt: PromptPair,
        field_order: str,
        seed: int,
    ) -> None:
        self.dataset = dataset
        self.info = info
        self.processor = processor
        self.prompt = prompt
        self.field_order = field_order
        self.seed = seed
        self._encode_prompt = PromptEncoder(processor, prompt)
        self._texts: dict[int, _EncodedText] | None = {} if dataset.ordering == "sorted" else None

    def encode(self, index: int, epoch: int) -> EncodedSample:
        record = self.dataset[index]
        prompt = self._encode_prompt(str(record.image))
        text = None if self._texts is None else self._texts.get(index)
        if text is not None and text.prompt_len == prompt.length:
            return EncodedSample(
                index, text.input_ids, prompt.pixel_values, prompt.image_grid_thw, text.prompt_len, text.rows
            )
        objects = self.dataset.gt_objects(index, seed=self.seed, epoch=epoch)
        sample = encode_gt(self.info, prompt, objects, field_order=self.field_order, sample_id=index)
        if self._texts is not None and (index in self._texts or len(self._texts) < TEXT_CACHE_SIZE):
            self._texts[index] = _EncodedText(sample.input_ids, sample.prompt_len, sample.rows)
        return sample

    @property
    def cached_texts(self) -> int:
        """How many records' ids and rows this encoder keeps."""
        return 0 if self._texts is None else len(self._texts)

    def length(self, index: int, epoch: int) -> int:
        """`encode(index, epoch).length` from the record's image size and the assistant text alone."""
        record = self.dataset[index]
        objects = self.dataset.gt_objects(index, seed=self.seed, epoch=epoch)
        return self._encode_prompt.length(record.height, record.width) + assistant_length(
            self.info, objects, field_order=self.field_order
        )

    def fingerprint(self, max_pixels: int) -> str:
        tok = self.info.tokenizer
        vocab_digest = hashlib.sha256(
            json.dumps(sorted(tok.get_vocab().items())).encode("utf-8")
        ).hexdigest()
        payload = {
            "data": sha256_file(self.dataset.path),
            "tokenizer": vocab_digest,
            "prompt": prompt_sha256(self.prompt),
            "max_pixels": max_pixels,
            "field_order": self.field_order,
            "ordering": self.dataset.ordering,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def lengths(self, *, cache_dir: Path | None, max_pixels: int) -> list[int]:
        """Token length of every sample (epoch-0 order), cached under the fingerprint: in this
        process and, with `cache_dir`, in a file there."""
        fingerprint = self.fingerprint(max_pixels)
        known = _LENGTHS.get(fingerprint)  # the fingerprint covers the data file's bytes
        if known is not None:
            return list(known)
        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir) / f"lengths-{fingerprint[:24]}.json"
            if cache.is_file():
                lengths = json.loads(cache.read_text())
                if len(lengths) == len(self.dataset):
                    known = _LENGTHS[fingerprint] = tuple(int(v) for v in lengths)
                    return list(known)
        lengths = [self.length(i, 0) for i in range(len(self.dataset))]
        _LENGTHS[fingerprint] = tuple(lengths)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # every rank writes the same cache
            tmp.write_text(json.dumps(lengths))
            tmp.replace(cache)
        return lengths


def build_pack(
    samples: Sequence[EncodedSample],
    *,
    rope_model: Any,
    info: TokenizerInfo,
    cap: int,
    context: str,
    channel: str,
    trainer_variant: str,
    coord_decode_mode: str,
    n_softctx_iter: int = 1,
    row_mult: Sequence[float] | None = None,
    device: torch.device | str = "cpu",
) -> MicroBatch:
    """Concatenate `samples` into one padding-free micro-batch with its metadata contexts."""
    total = sum(s.length for s in samples)
    if total > cap:
        raise PipelineError(
            f"pack of {len(samples)} samples has {total} tokens > template.max_length={cap} "
            "(random object ordering changed a tokenization; raise template.max_length)"
        )
    segments = [PackSegment(s.input_ids, s.image_grid_thw, s.pixel_values) for s in samples]
    inputs, packed = packed_model_inputs(rope_model, segments)
    offsets = packed.cu_seq_lens[:-1].tolist()
    ctx, predict = pack_rows(
        [s.rows for s in samples],
        offsets,
        context=context,
        channel=channel,
        trainer_variant=trainer_variant,
        coord_ids=info.coord_vocab.coord_ids,
        coord_decode_mode=coord_decode_mode,
        row_mult=row_mult,
        device=device,
    )
    meta = ContextSet.for_channel(channel, {context: ctx}, n_softctx_iter=n_softctx_iter)
    return MicroBatch(inputs, predict, meta, n_tokens=total, n_segments=len(samples))


def forward_single_context(model: torch.nn.Module, mb: MicroBatch, context: str, device: torch.device) -> ContextSet:
    """One forward of a single-context micro-batch (its contexts were built on `device`)."""
    inputs = move_inputs(mb.model_inputs, device)
    logits = model(predict_positions=mb.predict_positions.to(device), **inputs)
    return mb.meta.with_logits({context: logits})
