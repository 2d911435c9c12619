"""Turn records into `gt_vs_pred` lines with any `RolloutBackend` (spec 06 §6.1–§6.3).

`Predictor` owns the pieces one image needs: the prompt encoder (shared with training, so prompts
are byte- and token-identical), the backend, and the token-aligned parser in mode `rollout`. It
is used by `coordexp infer` and by the in-training detection eval step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from coordexp.core.coordjson.aligned import parse_tokens
from coordexp.rollout.backend import RolloutOutput, RolloutRequest
from coordexp.rollout.decoding import DecodeParams
from coordexp.rollout.hf_backend import HFBackend
from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.records import Record
from coordexp.train.encode.prompt import EncodedPrompt, PromptEncoder
from coordexp.train.encode.vocab import TokenizerInfo
from coordexp.train.eval.records import ImageRecord, image_record
from coordexp.train.eval.scores import score_predictions
from coordexp.train.models.tokenizer import vocab_token_bytes


@attrs.frozen
class PredictSettings:
    """Greedy decoding limits, how coord tokens are picked (`token` or `expectation`,
    :mod:`coordexp.rollout.coord_pick`) and the score source (`coord_logprob` or `constant`)."""

    max_new_tokens: int
    decode_batch_size: int = 4
    coord_pick: str = "token"
    score_source: str = "coord_logprob"
    parse_mode: str = "rollout"
    geometry_policy: str = "any"
    field_order: str | None = None


class Predictor:
    def __init__(self, model: Any, processor: Any, info: TokenizerInfo, prompt: PromptPair, settings: PredictSettings) -> None:
        self.processor = processor
        self.info = info
        self.prompt = prompt
        self.settings = settings
        self._encode_prompt = PromptEncoder(processor, prompt)
        self.table = vocab_token_bytes(processor.tokenizer)
        self.backend = HFBackend(
            model,
            self._encode_request,
            decode_batch_size=settings.decode_batch_size,
            eos_token_ids=sorted(info.stop_ids),
            pad_token_id=processor.tokenizer.pad_token_id,
            token_logprobs=settings.score_source == "coord_logprob",
            coord_ids=info.coord_vocab.coord_ids,
        )
        self.params = DecodeParams(
            max_new_tokens=settings.max_new_tokens, coord_pick=settings.coord_pick
        ).greedy()
        # Prompts encoded by `request_for`, handed to the backend's encoder once (no re-encoding).
        self._pending: dict[str, EncodedPrompt] = {}

    def _encode_request(self, request: RolloutRequest):
        key = str(request.image)
        encoded = self._pending.pop(key, None) or self._encode_prompt(key)
        return encoded.input_ids, encoded.pixel_values, encoded.image_grid_thw

    def request_for(self, record: Record) -> RolloutRequest:
        encoded = self._encode_prompt(str(record.image))
        self._pending[str(record.image)] = encoded
        return RolloutRequest(
            prompt_ids=tuple(encoded.input_ids.tolist()),
            user_text=self.prompt.user,
            system_text=self.prompt.system,
            image=str(record.image),
            sample_id=str(record.id),
        )

    def predict(self, records: Sequence[Record], image_ids: Sequence[int]) -> list[ImageRecord]:
        """One `ImageRecord` per record (same order); greedy, deterministic."""
        requests = [self.request_for(r) for r in records]
        outputs = self.backend.generate(requests, self.params, seeds=[1] * len(requests))
        return [self._record(i, r, o) for i, r, o in zip(image_ids, records, outputs)]

    def _record(self, image_id: int, record: Record, output: RolloutOutput) -> ImageRecord:
        aligned = parse_tokens(
            list(output.response_ids),
            self.table,
            self.info.coord_vocab,
            self.info.stop_ids,
            mode=self.settings.parse_mode,
            geometry_policy=self.settings.geometry_policy,
            field_order=self.settings.field_order,
        )
        result = aligned.result
        valid = [rec for rec in result.records if rec.valid]
        positions = [aligned.positions_of(rec.index) for rec in valid]
        scores = score_predictions(
            output.token_logprobs, positions, source=self.settings.score_source
        )
        invalid = result.open_end is None
        errors = ["invalid_rollout"] if invalid else []
        return image_record(
            image_id,
            record,
            [rec.to_object() for rec in valid],
            scores,
            [rec.index for rec in valid],
            parse=result,
            raw_output=aligned.token_text.text[: aligned.stop.n_chars],
            ends_with_eos=aligned.stop.ends_with_eos,
            truncated=output.truncated,
            invalid_rollout=invalid,
            errors=errors,
        )

