"""The OpenAI-compatible score readout against a real HTTP server that returns vLLM-shaped prompt log-probs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from openai_test_server import Reply, ScriptedServer, chat_reply

from cerm import Judge, JudgeConfig, ParseStatus
from cerm.backends.openai import OpenAIBackend, read_prompt_logprobs
from cerm.readout import CONTINUATIONS, ReadoutRequest, from_logprobs

MESSAGES = [{"role": "user", "content": "Judge this."}]
PREFIX = "Criterion 1 ... Overall: $\\boxed{"


def char_logprob(ch: str) -> float:
    """The scripted server's "model": one token per character, a fixed log-prob per character."""
    return -((ord(ch) * 7919) % 13) / 4


def logprob_reply(request: dict[str, Any], index: int) -> Reply:
    """vLLM's reply shape for ``prompt_logprobs=0`` on a continued assistant turn (char tokens)."""
    assert request["continue_final_message"] is True and request["add_generation_prompt"] is False
    assert request["prompt_logprobs"] == 0 and request["max_tokens"] == 1
    text = "".join(m["content"] for m in request["messages"])
    body = chat_reply("x")
    body["prompt_logprobs"] = [None] + [{str(ord(c)): {"logprob": char_logprob(c), "rank": 1, "decoded_token": c}}
                                        for c in text[1:]]
    return Reply(body)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer().start()
    yield s
    s.stop()


@pytest.mark.slow  # starts an HTTP server
def test_readout_sums_the_continuation_logprobs(server: ScriptedServer) -> None:
    server.reset(logprob_reply)
    with OpenAIBackend("m", server.url, backoff_base_s=0.01, timeout_s=5) as backend:
        (d,) = backend.score_distributions([ReadoutRequest(MESSAGES, PREFIX)])
    assert d.ok, d.error
    want = from_logprobs([sum(char_logprob(c) for c in cont) for cont in CONTINUATIONS])
    assert max(abs(a - b) for a, b in zip(d.probs, want.probs, strict=True)) < 1e-12
    assert len(server.requests) == 22  # the prefix alone + 21 continuations
    # sent concurrently: the prefix-alone request is one of the 22, in no fixed place
    assert [r["messages"][-1] for r in server.requests].count({"role": "assistant", "content": PREFIX}) == 1
    assert math.isclose(sum(d.probs), 1.0)


@pytest.mark.slow
def test_server_without_prompt_logprobs_is_an_explicit_error(server: ScriptedServer) -> None:
    server.reset()  # the plain CE-RM-like reply: no prompt_logprobs
    with OpenAIBackend("m", server.url, backoff_base_s=0.01, timeout_s=5) as backend:
        j = Judge(backend, JudgeConfig(expected_score=True)).score("q", ["a"])[0]
    assert j.status is ParseStatus.OK and j.expected_score is None
    assert "no prompt_logprobs" in j.error


def test_read_prompt_logprobs_shapes() -> None:
    assert read_prompt_logprobs({"prompt_logprobs": [None, {"5": {"logprob": -0.5}}]}) == [(5, -0.5)]
    with pytest.raises(ValueError, match="no prompt_logprobs"):
        read_prompt_logprobs(chat_reply("x"))
    with pytest.raises(ValueError, match="malformed"):
        read_prompt_logprobs({"prompt_logprobs": [None, {}]})
