"""DecodeParams (spec 03 §3.1 decoding) and the backend value types / batching helper."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from coordexp.core.errors import ConfigError, CoordexpError
from coordexp.rollout.backend import (
    RolloutBackend,
    RolloutOutput,
    RolloutRequest,
    check_generate_call,
    check_generate_result,
    iter_batches,
)
from coordexp.rollout.decoding import DecodeParams

# --- DecodeParams --------------------------------------------------------------------------------


def test_defaults() -> None:
    params = DecodeParams(max_new_tokens=64)
    assert params.to_dict() == {
        "max_new_tokens": 64,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "repetition_penalty": 1.0,
        "num_beams": 1,
        "coord_pick": "token",  # coordexp extension; the default decodes as spec 03 §3.1 says
    }
    assert params.is_greedy and not params.do_sample


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("temperature", "0.7"),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("top_k", 0),
        ("top_k", -2),
        ("top_k", 5.0),
        ("repetition_penalty", 0.0),
        ("repetition_penalty", float("inf")),
        ("max_new_tokens", 0),
        ("max_new_tokens", True),
        ("num_beams", 0),
    ],
)
def test_invalid_values_name_the_key(key: str, value) -> None:
    with pytest.raises(ConfigError, match=rf"^rollout_matching\.decoding\.{key}: "):
        DecodeParams(**{"max_new_tokens": 8, key: value})


def test_valid_edges() -> None:
    params = DecodeParams(max_new_tokens=1, temperature=2.0, top_p=1.0, top_k=1, repetition_penalty=0.5)
    assert params.do_sample and not params.is_greedy
    beams = DecodeParams(max_new_tokens=4, num_beams=3)
    assert not beams.do_sample and not beams.is_greedy


def test_beams_require_temperature_zero() -> None:
    with pytest.raises(ConfigError, match=r"^rollout_matching\.decoding\.num_beams: .*temperature 0"):
        DecodeParams(max_new_tokens=8, num_beams=2, temperature=0.7)


def test_overrides_return_new_objects() -> None:
    configured = DecodeParams(max_new_tokens=32, temperature=0.8, top_p=0.9)
    greedy = configured.greedy()
    assert greedy == DecodeParams(max_new_tokens=32, temperature=0.0, top_p=0.9)
    assert greedy.is_greedy
    assert configured.temperature == 0.8  # unchanged
    longer = configured.with_overrides(max_new_tokens=128)
    assert longer.max_new_tokens == 128 and configured.max_new_tokens == 32
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        configured.temperature = 0.0  # type: ignore[misc]


def test_overrides_are_validated() -> None:
    params = DecodeParams(max_new_tokens=8)
    with pytest.raises(ConfigError, match=r"^rollout_matching\.decoding\.top_p: "):
        params.with_overrides(top_p=2.0)
    with pytest.raises(ConfigError, match=r"^rollout_matching\.decoding\.do_sampel: unknown decoding key"):
        params.with_overrides(do_sampel=True)


def test_from_mapping() -> None:
    assert DecodeParams.from_mapping({"max_new_tokens": 16, "top_k": 5}) == DecodeParams(
        max_new_tokens=16, top_k=5
    )
    with pytest.raises(ConfigError, match=r"^rollout_matching\.decoding\.max_new_tokens: required"):
        DecodeParams.from_mapping({"temperature": 0.5})
    with pytest.raises(ConfigError, match=r"^rollout_matching\.decoding\.beams: unknown"):
        DecodeParams.from_mapping({"max_new_tokens": 16, "beams": 2})
    with pytest.raises(ConfigError, match=r"^rollout_matching\.decoding: expected a mapping"):
        DecodeParams.from_mapping([("max_new_tokens", 16)])  # type: ignore[arg-type]


# --- backend types -------------------------------------------------------------------------------


def test_request_normalizes_and_validates() -> None:
    request = RolloutRequest(
        prompt_ids=[3, 4, 5], user_text="find objects", image=Path("img.png"), sample_id="7"
    )
    assert request.prompt_ids == (3, 4, 5)
    assert request == RolloutRequest(
        prompt_ids=(3, 4, 5), user_text="find objects", image="other.png", sample_id="7"
    )
    hash(request)
    with pytest.raises(CoordexpError, match="prompt_ids must not be empty"):
        RolloutRequest(prompt_ids=[], user_text="x")
    with pytest.raises(CoordexpError, match=r"prompt_ids\[1\]"):
        RolloutRequest(prompt_ids=[1, -2], user_text="x")
    with pytest.raises(CoordexpError, match="image must be None, a path or a PIL image"):
        RolloutRequest(prompt_ids=[1], user_text="x", image=b"png-bytes")


def test_request_accepts_pil_images() -> None:
    from PIL import Image

    request = RolloutRequest(prompt_ids=[1], user_text="x", image=Image.new("RGB", (8, 8)))
    assert request.image.size == (8, 8)
    hash(request)


def _output(response, max_new_tokens=4, finish_reason="length", logprobs=None) -> RolloutOutput:
    return RolloutOutput(
        prompt_ids=[1, 2],
        response_ids=response,
        finish_reason=finish_reason,
        max_new_tokens=max_new_tokens,
        eos_token_ids={99, 98},
        token_logprobs=logprobs,
    )


@pytest.mark.parametrize(
    ("response", "truncated"),
    [
        ([5, 6, 7, 8], True),  # hit the limit, no eos
        ([5, 6, 7, 99], False),  # eos as the last allowed token
        ([5, 98], False),  # stopped early on eos
        ([5, 6], False),  # stopped early without eos (e.g. a stop string)
        ([], False),
    ],
)
def test_truncated(response, truncated: bool) -> None:
    assert _output(response).truncated is truncated


def test_output_validation() -> None:
    assert _output([5, 6], logprobs=[-0.1, -2.0]).token_logprobs == (-0.1, -2.0)
    with pytest.raises(CoordexpError, match="token_logprobs has 1 entries for 2 response ids"):
        _output([5, 6], logprobs=[-0.1])
    with pytest.raises(CoordexpError, match="finish_reason"):
        _output([5], finish_reason="eos")
    with pytest.raises(CoordexpError, match="max_new_tokens"):
        _output([5], max_new_tokens=0)
    with pytest.raises(CoordexpError, match="eos_token_ids must not be empty"):
        RolloutOutput(
            prompt_ids=[1], response_ids=[], finish_reason="stop", max_new_tokens=1, eos_token_ids=[]
        )


class _EchoBackend:
    """A minimal conforming backend: the response is the request's last prompt id, then eos."""

    name = "echo"

    def generate(self, requests, params, *, seeds):
        check_generate_call(requests, seeds)
        return [
            RolloutOutput(
                prompt_ids=r.prompt_ids,
                response_ids=(r.prompt_ids[-1], 0)[: params.max_new_tokens],
                finish_reason="stop",
                max_new_tokens=params.max_new_tokens,
                eos_token_ids={0},
            )
            for r in requests
        ]


def test_backend_protocol_and_call_checks() -> None:
    backend = _EchoBackend()
    assert isinstance(backend, RolloutBackend)
    requests = [RolloutRequest(prompt_ids=[i + 1], user_text="u") for i in range(3)]
    outputs = backend.generate(requests, DecodeParams(max_new_tokens=1), seeds=[1, 2, 3])
    check_generate_result(requests, outputs)
    assert [o.response_ids for o in outputs] == [(1,), (2,), (3,)]
    assert all(o.truncated for o in outputs)
    with pytest.raises(CoordexpError, match="2 seeds for 3 requests"):
        backend.generate(requests, DecodeParams(max_new_tokens=1), seeds=[1, 2])
    with pytest.raises(CoordexpError, match=r"seeds\[0\] must be an int in \[1, 2\*\*31 - 1\]"):
        backend.generate(requests, DecodeParams(max_new_tokens=1), seeds=[0, 2, 3])
    with pytest.raises(CoordexpError, match="2 outputs for 3 requests"):
        check_generate_result(requests, outputs[:2])
    with pytest.raises(CoordexpError, match=r"outputs\[0\] must be a RolloutOutput"):
        check_generate_result(requests[:1], ["text"])


def test_iter_batches() -> None:
    # F10: decode_batch_size 4 over 7 items gives micro-batches of 4 and 3.
    assert [list(b) for b in iter_batches(list(range(7)), 4)] == [[0, 1, 2, 3], [4, 5, 6]]
    assert list(iter_batches([], 4)) == []
    assert [list(b) for b in iter_batches("abc", 5)] == [["a", "b", "c"]]


@pytest.mark.parametrize("size", [0, -1, 2.0, True])
def test_iter_batches_rejects_bad_sizes_eagerly(size) -> None:
    with pytest.raises(ConfigError, match=r"^rollout_matching\.decode_batch_size: "):
        iter_batches([1, 2], size)
