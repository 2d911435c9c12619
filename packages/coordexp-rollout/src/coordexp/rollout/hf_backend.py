"""The ``hf`` rollout backend: ``transformers`` ``generate`` on the live policy (spec 03 §3.1, D8).

:class:`HFBackend` generates on the unwrapped policy under ``torch.no_grad()`` in eval mode and
restores the previous train/eval mode afterwards. Requests are split into micro-batches of
``decode_batch_size`` (``rollout_matching.decode_batch_size``), left-padded, and generated with the
KV cache (the only place it is used); no packing. Coord tokens are ordinary ids here: outputs are
ids, never decoded text.

* **Prompts.** ``encode_prompt(request) -> (input_ids [P], pixel_values | None, image_grid_thw |
  None)`` renders and tokenizes the request's prompt (and image) exactly like training does; the
  backend generates from these ids. Prompt parity (01 §1.5): they must equal
  ``request.prompt_ids`` — ``prompt_mismatch_policy`` ``error`` raises
  :class:`~coordexp.rollout.parity.PromptMismatchError` at the first differing position; ``drop``
  skips generation and returns an ``abort`` output whose ``prompt_ids`` are the encoder's, so
  :class:`~coordexp.rollout.prepare.RolloutPreparer` drops and counts the sample.
* **Decoding.** A fresh ``GenerationConfig`` holds every knob of :class:`DecodeParams` (so the
  checkpoint's own sampling defaults never leak in): greedy (temperature 0), sampling
  (temperature/top_p/top_k/repetition_penalty) or beam search (``num_beams > 1``, best beam).
  ``coord_pick: expectation`` adds :class:`~coordexp.rollout.coord_pick.ExpectedCoordProcessor`
  (needs ``coord_ids``, the coord token ids in bin order).
* **Seeds.** Sampling saves the Python/NumPy/torch (CPU and CUDA) RNG states, seeds all of them with
  the micro-batch's first request seed, generates and restores them. Greedy and beam search are
  deterministic and touch no RNG.
* **Limits.** ``prompt_len + max_new_tokens > max_position_embeddings`` raises :class:`ConfigError`.
* **Log-probabilities** (``token_logprobs=True``, for eval scores): per generated token, its
  log-probability under the unfiltered τ = 1 distribution (log-softmax of the raw logits, before
  repetition penalty, temperature or top-k/top-p). Recorded step by step from the output
  embedding's forward (one ``[B, V]`` buffer, not the whole ``[T, B, V]`` history); greedy and
  sampling only.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from coordexp.core.errors import ConfigError, CoordexpError
from coordexp.rollout.backend import (
    RolloutOutput,
    RolloutRequest,
    check_generate_call,
    check_generate_result,
    iter_batches,
)
from coordexp.rollout.coord_pick import ExpectedCoordProcessor
from coordexp.rollout.decoding import DecodeParams
from coordexp.rollout.parity import check_policy, check_prompt_parity

PromptEncoding = tuple[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"]
PromptEncoder = Callable[[RolloutRequest], PromptEncoding]


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch (CPU + CUDA) with ``seed`` inside the block; restore all after."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


class _RawLogprobRecorder(LogitsProcessor):
    """Records ``log_softmax(raw logits)[chosen token]`` per step without keeping ``[T, B, V]``.

    A forward hook on the output embedding stores the latest step's raw log-softmax ``[B, V]``; the
    processor, called at step t+1 with the ids that include the token chosen at step t, gathers it.
    :meth:`finish` gathers the last step from the final sequences. Scores pass through unchanged.
    """

    def __init__(self) -> None:
        self._latest: torch.Tensor | None = None
        self._pending: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._latest = torch.log_softmax(output[:, -1, :].float(), dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._steps.append(self._pending.gather(1, input_ids[:, -1:]).squeeze(1))
        if self._latest is None:
            raise CoordexpError("token_logprobs: the output embedding produced no logits before sampling")
        self._pending, self._latest = self._latest, None
        return scores

    def finish(self, sequences: torch.Tensor, n_steps: int) -> torch.Tensor:
        """``[B, n_steps]`` float32 log-probabilities of the generated tokens (CPU)."""
        if self._pending is not None:
            self._steps.append(self._pending.gather(1, sequences[:, -1:]).squeeze(1))
            self._pending = None
        if len(self._steps) != n_steps:
            raise CoordexpError(
                f"token_logprobs: recorded {len(self._steps)} steps for {n_steps} generated tokens"
            )
        if not self._steps:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(self._steps, dim=1).cpu()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def _config_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


class HFBackend:
    """``RolloutBackend`` over ``model.generate`` (module doc).

    ``model``: the policy (a ``DistributedDataParallel`` wrapper is unwrapped); ``encode_prompt``: the
    prompt encoder (module doc); ``decode_batch_size``: requests per generate call (> 0);
    ``eos_token_ids``/``pad_token_id``: default to the model's generation config;
    ``max_position_embeddings``: default to the text config's; ``token_logprobs``: record per-token
    log-probabilities.
    """

    name = "hf"
    kind = "rollout_backend"
    api_version = 1

    def __init__(
        self,
        model: torch.nn.Module,
        encode_prompt: PromptEncoder,
        *,
        decode_batch_size: int,
        eos_token_ids: Sequence[int] | None = None,
        pad_token_id: int | None = None,
        prompt_mismatch_policy: str = "error",
        max_position_embeddings: int | None = None,
        token_logprobs: bool = False,
        coord_ids: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        self.model = _unwrap(model)
        self.encode_prompt = encode_prompt
        list(iter_batches([], decode_batch_size))  # validates decode_batch_size
        self.decode_batch_size = int(decode_batch_size)
        self.prompt_mismatch_policy = check_policy(prompt_mismatch_policy)
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = (
            list(eos_token_ids)
            if eos_token_ids is not None
            else _config_ids(getattr(gen_cfg, "eos_token_id", None))
        )
        if not eos:
            raise ConfigError(
                "rollout_matching", "the hf backend needs eos token ids (none given, none in the model)"
            )
        self.eos_token_ids = frozenset(int(e) for e in eos)
        pad = pad_token_id if pad_token_id is not None else getattr(gen_cfg, "pad_token_id", None)
        if pad is None:
            raise ConfigError(
                "rollout_matching", "the hf backend needs a pad token id (none given, none in the model)"
            )
        self.pad_token_id = int(pad)
        if max_position_embeddings is None:
            text_config = self.model.config.get_text_config()
            max_position_embeddings = getattr(text_config, "max_position_embeddings", None)
        self.max_position_embeddings = (
            None if max_position_embeddings is None else int(max_position_embeddings)
        )
        self.token_logprobs = bool(token_logprobs)
        self.expected_coord = None if coord_ids is None else ExpectedCoordProcessor(coord_ids)
        self.image_token_id = getattr(self.model.config, "image_token_id", None)
        self.video_token_id = getattr(self.model.config, "video_token_id", None)

    # -- protocol -------------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[RolloutRequest], params: DecodeParams, *, seeds: Sequence[int]
    ) -> list[RolloutOutput]:
        """One :class:`RolloutOutput` per request, in order (module doc)."""
        check_generate_call(requests, seeds)
        if not isinstance(params, DecodeParams):
            raise ConfigError(
                "rollout_matching.decoding", f"expected DecodeParams, got {type(params).__name__}"
            )
        if self.token_logprobs and params.num_beams > 1:
            raise ConfigError(
                "rollout_matching.decoding.num_beams",
                "token log-probabilities need greedy or sampling (num_beams 1)",
            )
        if params.coord_pick == "expectation" and self.expected_coord is None:
            raise ConfigError(
                "rollout_matching.decoding.coord_pick",
                "expectation decoding needs the coord token ids: build HFBackend(..., coord_ids=...)",
            )
        outputs: list[RolloutOutput | None] = [None] * len(requests)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for indices in iter_batches(range(len(requests)), self.decode_batch_size):
                    batch = [requests[i] for i in indices]
                    for i, output in zip(
                        indices, self._generate_batch(batch, params, int(seeds[indices[0]])), strict=True
                    ):
                        outputs[i] = output
        finally:
            self.model.train(was_training)
        check_generate_result(requests, outputs)
        return outputs  # type: ignore[return-value]

    # -- one micro-batch ------------------------------------------------------------------------
    def _encode(self, request: RolloutRequest) -> PromptEncoding:
        input_ids, pixel_values, grid = self.encode_prompt(request)
        ids = torch.as_tensor(input_ids).reshape(-1).long()
        if ids.numel() == 0:
            raise CoordexpError(f"the prompt encoder returned no ids for sample {request.sample_id!r}")
        return ids, pixel_values, grid

    def _output(
        self,
        prompt: torch.Tensor,
        response: list[int],
        params: DecodeParams,
        finish: str,
        logprobs: list[float] | None,
    ) -> RolloutOutput:
        return RolloutOutput(
            prompt_ids=prompt.tolist(),
            response_ids=response,
            finish_reason=finish,
            max_new_tokens=params.max_new_tokens,
            eos_token_ids=self.eos_token_ids,
            token_logprobs=logprobs,
        )

    def _generate_batch(
        self, batch: Sequence[RolloutRequest], params: DecodeParams, seed: int
    ) -> list[RolloutOutput]:
        encoded = [self._encode(request) for request in batch]
        results: list[RolloutOutput | None] = [None] * len(batch)
        live: list[int] = []
        for k, (request, (ids, _, _)) in enumerate(zip(batch, encoded, strict=True)):
            if check_prompt_parity(
                request.prompt_ids, ids.tolist(), self.prompt_mismatch_policy, sample_id=request.sample_id
            ):
                live.append(k)
            else:
                results[k] = self._output(ids, [], params, "abort", [] if self.token_logprobs else None)
        if live:
            generated = self._run_generate([encoded[k] for k in live], params, seed)
            for k, output in zip(live, generated, strict=True):
                results[k] = output
        return results  # type: ignore[return-value]

    def _check_length(self, prompt_len: int, params: DecodeParams) -> None:
        limit = self.max_position_embeddings
        if limit is not None and prompt_len + params.max_new_tokens > limit:
            raise ConfigError(
                "rollout_matching.decoding.max_new_tokens",
                f"prompt_len {prompt_len} + max_new_tokens {params.max_new_tokens} exceeds the model's "
                f"max_position_embeddings {limit}",
            )

    def _generation_config(self, params: DecodeParams) -> GenerationConfig:
        knobs: dict[str, Any] = {}
        if params.do_sample:
            # Every sampling knob is set explicitly (top_k 0 = off), so the checkpoint's own
            # sampling defaults cannot fill unset ones. Greedy/beam search never read them.
            knobs = {
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": 0 if params.top_k == -1 else params.top_k,
                "min_p": None,
                "typical_p": 1.0,
            }
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=params.do_sample,
            num_beams=params.num_beams,
            num_return_sequences=1,
            repetition_penalty=params.repetition_penalty,
            no_repeat_ngram_size=0,
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            use_cache=True,
            return_dict_in_generate=True,
            **knobs,
        )

    def _mm_token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.image_token_id is None:
            raise ConfigError("model", "image inputs need model.config.image_token_id")
        types = (input_ids == int(self.image_token_id)).long()
        if self.video_token_id is not None:
            types += 2 * (input_ids == int(self.video_token_id)).long()
        return types

    def _batch_inputs(self, encoded: Sequence[PromptEncoding]) -> tuple[dict[str, torch.Tensor], int]:
        """Left-padded ``input_ids``/``attention_mask`` (+ vision inputs) on the model's device, and
        the padded prompt width."""
        prompts = [ids for ids, _, _ in encoded]
        width = max(ids.numel() for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - ids.numel() :] = ids
            attention_mask[row, width - ids.numel() :] = 1
        device = next(self.model.parameters()).device
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
        pixel_values = [pv for _, pv, _ in encoded if pv is not None]
        grids = [g for _, _, g in encoded if g is not None]
        if len(pixel_values) != len(grids):
            raise CoordexpError("the prompt encoder must return pixel_values and image_grid_thw together")
        if pixel_values:
            # Row order = image order: each row's image pads consume its own patches.
            inputs["pixel_values"] = torch.cat(pixel_values).to(device)
            inputs["image_grid_thw"] = torch.cat([g.reshape(-1, 3) for g in grids]).to(device)
            inputs["mm_token_type_ids"] = self._mm_token_types(input_ids).to(device)
        return inputs, width

    def _run_generate(
        self, encoded: Sequence[PromptEncoding], params: DecodeParams, seed: int
    ) -> list[RolloutOutput]:
        for ids, _, _ in encoded:
            self._check_length(ids.numel(), params)
        inputs, width = self._batch_inputs(encoded)
        recorder = _RawLogprobRecorder() if self.token_logprobs else None
        processors: list[LogitsProcessor] = [recorder] if recorder is not None else []
        if params.coord_pick == "expectation":
            processors.append(self.expected_coord)
        handle = None
        if recorder is not None:
            handle = self.model.get_output_embeddings().register_forward_hook(recorder.hook)
        try:
            with seeded_rng(seed) if params.do_sample else contextlib.nullcontext():
                out = self.model.generate(
                    **inputs,
                    generation_config=self._generation_config(params),
                    logits_processor=LogitsProcessorList(processors) if processors else None,
                )
        finally:
            if handle is not None:
                handle.remove()
        generated = out.sequences[:, width:].cpu()
        logprobs = recorder.finish(out.sequences, generated.shape[1]) if recorder is not None else None
        # A response ends at (and includes) its first eos id; finished rows are padded after it.
        is_eos = torch.isin(generated, torch.tensor(sorted(self.eos_token_ids), dtype=torch.long))
        has_eos = is_eos.any(dim=1)
        lengths = torch.where(has_eos, is_eos.int().argmax(dim=1) + 1, generated.shape[1]).tolist()
        return [
            self._output(
                ids,
                generated[row, : lengths[row]].tolist(),
                params,
                "stop" if bool(has_eos[row]) else "length",
                logprobs[row, : lengths[row]].tolist() if logprobs is not None else None,
            )
            for row, (ids, _, _) in enumerate(encoded)
        ]


__all__ = ["HFBackend", "PromptEncoder", "seeded_rng"]
