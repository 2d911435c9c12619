"""The hf rollout backend (spec 03 §3.1) on a tiny random text-only causal LM (no coordexp.train)."""

from __future__ import annotations

import random
from importlib.metadata import entry_points
from unittest import mock

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

from coordexp.core.errors import ConfigError
from coordexp.rollout.backend import RolloutBackend, RolloutRequest
from coordexp.rollout.decoding import DecodeParams
from coordexp.rollout.hf_backend import HFBackend, seeded_rng
from coordexp.rollout.parity import PromptMismatchError
from coordexp.rollout.prepare import ROLLOUT_ALIGNED, PrepareConfig, RolloutPreparer
from coordexp.rollout.testing import tiny_test_codec, tiny_test_tokenizer

CODEC = tiny_test_codec()
VOCAB = tiny_test_tokenizer().get_vocab_size(with_added_tokens=True)
PAD = min(CODEC.stop_ids - {CODEC.eos_id})
MAX_POSITIONS = 96


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lm = Qwen3ForCausalLM(config)
    lm.generation_config = GenerationConfig(
        eos_token_id=sorted(CODEC.stop_ids), pad_token_id=PAD, do_sample=True, top_k=3, temperature=3.0
    )
    return lm.eval()


def requests(n: int = 3) -> list[RolloutRequest]:
    texts = ['{"objects": [', "Detect all objects please", '{"objects": [{"desc": "a cat", "bbox_2d": [']
    return [
        RolloutRequest(
            prompt_ids=CODEC.encode(texts[i % 3] * (1 + i // 3)), user_text=texts[i % 3], sample_id=f"r{i}"
        )
        for i in range(n)
    ]


def encode_prompt(request: RolloutRequest):
    return torch.tensor(request.prompt_ids), None, None


def backend(model, **kwargs) -> HFBackend:
    kwargs.setdefault("decode_batch_size", 2)
    return HFBackend(model, encode_prompt, **kwargs)


GREEDY = DecodeParams(max_new_tokens=12)
SAMPLING = DecodeParams(max_new_tokens=12, temperature=1.3, top_p=0.9, top_k=50, repetition_penalty=1.2)


def test_outputs_align_with_requests_and_batches(model) -> None:
    reqs = requests(5)
    be = backend(model, decode_batch_size=2)
    with mock.patch.object(model, "generate", wraps=model.generate) as spy:
        outs = be.generate(reqs, GREEDY, seeds=[1, 2, 3, 4, 5])
    assert spy.call_count == 3  # ceil(5 / decode_batch_size)
    assert [spy.call_args_list[k].kwargs["input_ids"].shape[0] for k in range(3)] == [2, 2, 1]
    assert [o.prompt_ids for o in outs] == [r.prompt_ids for r in reqs]
    for out in outs:
        assert out.finish_reason in ("stop", "length") and out.max_new_tokens == 12
        assert len(out.response_ids) <= 12 and out.token_logprobs is None
        assert (out.finish_reason == "length") == (len(out.response_ids) == 12 and out.truncated)
    assert isinstance(be, RolloutBackend)


def test_left_padded_batches_equal_single_requests(model) -> None:
    reqs = requests(3)
    batched = backend(model, decode_batch_size=3).generate(reqs, GREEDY, seeds=[1, 2, 3])
    single = backend(model, decode_batch_size=1).generate(reqs, GREEDY, seeds=[1, 2, 3])
    assert [o.response_ids for o in batched] == [o.response_ids for o in single]
    assert batched == backend(model, decode_batch_size=3).generate(reqs, GREEDY, seeds=[7, 8, 9])


def test_mode_is_restored_and_no_gradients_are_recorded(model) -> None:
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append((torch.is_grad_enabled(), m.training)))
    try:
        model.train()
        backend(model).generate(requests(1), GREEDY, seeds=[1])
        assert model.training
        model.eval()
        backend(model).generate(requests(1), GREEDY, seeds=[1])
        assert not model.training
    finally:
        handle.remove()
        model.eval()
    assert seen and all(not grad and not training for grad, training in seen)


def test_sampling_is_reproducible_per_seed_and_restores_global_rng(model) -> None:
    reqs = requests(3)
    be = backend(model, decode_batch_size=3)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    first = be.generate(reqs, SAMPLING, seeds=[11, 12, 13])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert be.generate(reqs, SAMPLING, seeds=[11, 99, 98]) == first  # the micro-batch's first seed rules
    others = [be.generate(reqs, SAMPLING, seeds=[s, 12, 13]) for s in (21, 31, 41)]
    assert any(o != first for o in others)


def test_seeded_rng_restores_state_after_an_error() -> None:
    state = torch.random.get_rng_state()
    with pytest.raises(RuntimeError), seeded_rng(3):
        torch.rand(3)
        raise RuntimeError("boom")
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("params", [GREEDY, SAMPLING], ids=["greedy", "sampling"])
def test_token_logprobs_are_raw_tau1_log_softmax(model, params) -> None:
    reqs = requests(3)
    outs = backend(model, decode_batch_size=3, token_logprobs=True).generate(reqs, params, seeds=[4, 5, 6])
    for req, out in zip(reqs, outs, strict=True):
        ids = torch.tensor([[*req.prompt_ids, *out.response_ids]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        p = len(req.prompt_ids)
        expected = torch.log_softmax(logits[p - 1 : -1], dim=-1).gather(1, ids[0, p:, None]).squeeze(1)
        assert out.token_logprobs is not None and len(out.token_logprobs) == len(out.response_ids)
        assert np.allclose(out.token_logprobs, expected.numpy(), atol=1e-4)


def test_eos_ends_the_response(model) -> None:
    reqs = requests(2)
    plain = backend(model).generate(reqs, GREEDY, seeds=[1, 2])
    stop_at = plain[0].response_ids[3]
    outs = backend(model, eos_token_ids=[*CODEC.stop_ids, stop_at]).generate(reqs, GREEDY, seeds=[1, 2])
    first = outs[0]
    assert first.finish_reason == "stop" and first.response_ids[-1] == stop_at
    assert first.response_ids == plain[0].response_ids[: plain[0].response_ids.index(stop_at) + 1]
    assert stop_at in first.eos_token_ids and not first.truncated


def test_prompt_plus_new_tokens_must_fit_the_positions(model) -> None:
    long_request = RolloutRequest(prompt_ids=[5] * (MAX_POSITIONS - 4), user_text="x")
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        backend(model).generate([long_request], DecodeParams(max_new_tokens=5), seeds=[1])
    backend(model).generate([long_request], DecodeParams(max_new_tokens=4), seeds=[1])


def test_prompt_mismatch_raises_or_is_dropped_and_counted(model) -> None:
    reqs = requests(2)

    def drifting(request):
        ids = list(request.prompt_ids)
        if request.sample_id == "r1":
            ids[1] += 1
        return torch.tensor(ids), None, None

    with pytest.raises(PromptMismatchError, match="position 1"):
        HFBackend(model, drifting, decode_batch_size=2).generate(reqs, GREEDY, seeds=[1, 2])
    outs = HFBackend(model, drifting, decode_batch_size=2, prompt_mismatch_policy="drop").generate(
        reqs, GREEDY, seeds=[1, 2]
    )
    assert outs[1].finish_reason == "abort" and outs[1].response_ids == ()
    assert outs[0].finish_reason != "abort"
    preparer = RolloutPreparer(
        CODEC, PrepareConfig(ROLLOUT_ALIGNED, "desc_first", prompt_mismatch_policy="drop")
    )
    prepared = [
        preparer.prepare(o, [], local_prompt_ids=r.prompt_ids) for r, o in zip(reqs, outs, strict=True)
    ]
    assert [p.dropped for p in prepared] == [False, True]
    assert prepared[1].counters.prompt_mismatch_dropped == 1


def test_beam_search_keeps_the_best_beam(model) -> None:
    params = DecodeParams(max_new_tokens=6, num_beams=3)
    outs = backend(model).generate(requests(2), params, seeds=[1, 2])
    assert all(0 < len(o.response_ids) <= 6 for o in outs)
    with pytest.raises(ConfigError, match="num_beams"):
        backend(model, token_logprobs=True).generate(requests(1), params, seeds=[1])


def _expected_picks_hold(model, request: RolloutRequest, response: tuple[int, ...]) -> int:
    """Teacher-force `response` and check every step: where the coord tokens hold > 1/2 of the
    τ = 1 mass the token is the expected bin's; returns how many such coord steps there were."""
    ids = torch.tensor([[*request.prompt_ids, *response]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    coord = CODEC.coord_vocab.coord_ids
    steps = 0
    for t, token in enumerate(response):
        coord_logp = logp[len(request.prompt_ids) - 1 + t, coord]
        if coord_logp.logsumexp(0).exp() > 0.5:
            expected = float((coord_logp.softmax(0) * torch.arange(coord.numel())).sum())
            assert abs(coord.tolist().index(token) - expected) <= 0.5 + 1e-3
            steps += 1
    return steps


NO_PENALTY = SAMPLING.with_overrides(repetition_penalty=1.0)  # the check below reads raw logits


@pytest.mark.parametrize("params", [GREEDY, NO_PENALTY, DecodeParams(max_new_tokens=8, num_beams=2)])
def test_expectation_decoding_emits_the_expected_bin_at_every_coord_step(model, params) -> None:
    expectation = params.with_overrides(coord_pick="expectation")
    reqs = requests(3)
    be = backend(model, coord_ids=CODEC.coord_vocab.coord_ids)
    outs = be.generate(reqs, expectation, seeds=[1, 2, 3])
    coord_steps = sum(_expected_picks_hold(model, r, o.response_ids) for r, o in zip(reqs, outs, strict=True))
    assert coord_steps >= 3  # the random model's 1000 of 1422 ids hold most of the mass
    plain = be.generate(reqs, params, seeds=[1, 2, 3])  # coord_pick token: the processor stays out
    assert plain == backend(model).generate(reqs, params, seeds=[1, 2, 3])
    assert [o.response_ids for o in outs] != [o.response_ids for o in plain]


def test_expectation_decoding_needs_the_coord_ids(model) -> None:
    with pytest.raises(ConfigError, match="coord_ids") as info:
        backend(model).generate(requests(1), GREEDY.with_overrides(coord_pick="expectation"), seeds=[1])
    assert info.value.path == "rollout_matching.decoding.coord_pick"


def test_configuration_errors(model) -> None:
    with pytest.raises(ConfigError, match="decode_batch_size"):
        HFBackend(model, encode_prompt, decode_batch_size=0)
    with pytest.raises(ConfigError, match="prompt_mismatch_policy"):
        HFBackend(model, encode_prompt, decode_batch_size=1, prompt_mismatch_policy="ignore")


def test_entry_point_names_the_backend() -> None:
    (ep,) = [ep for ep in entry_points(group="coordexp.rollout_backends") if ep.name == "hf"]
    assert ep.load() is HFBackend and HFBackend.name == "hf"
