"""LlamaCppBackend with the embedded SmolLM2-135M GGUF (a plumbing model: structure is asserted, never quality)."""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from cerm import Judge, JudgeConfig
from cerm.backends.base import get_backend
from cerm.backends.embedded import EMBEDDED_WARNING, GGUF_FILE, embedded_gguf
from cerm.types import ParseStatus, SamplingParams

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed: pip install 'cerm[llama]'")
pytestmark = [pytest.mark.llama]

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
ESSAY = [{"role": "user", "content": "Write a long essay about the history of Rome."}]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)


@pytest.fixture(scope="module")
def backend() -> Iterator:
    from cerm.backends.llamacpp import LlamaCppBackend

    # one thread: on a shared 2-core machine two OpenMP threads can run 20x slower under contention
    with LlamaCppBackend("embedded", n_ctx=2048, n_threads=1) as b:
        yield b


def test_missing_package_raises_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from cerm.backends.llamacpp import LlamaCppBackend

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(ImportError, match=r"pip install 'cerm\[llama\]'"):
        LlamaCppBackend("embedded")


@pytest.mark.slow
@needs_llama
def test_bad_model_names_fail_clearly(tmp_path) -> None:
    from cerm.backends.llamacpp import LlamaCppBackend

    with pytest.raises(FileNotFoundError, match="no-such.gguf"):
        LlamaCppBackend(str(tmp_path / "no-such.gguf"))


@pytest.mark.slow
@needs_llama
def test_short_greedy_completion_is_deterministic(backend) -> None:
    first, second = backend.generate([QUESTION, QUESTION], GREEDY)
    assert first.text and first.text == second.text
    assert first.finish_reason in ("stop", "length") and first.error is None
    assert 0 < first.tokens_out <= 16 and first.seconds > 0
    # usage comes from llama.cpp itself, so it cross-checks count_tokens
    assert first.tokens_in == backend.count_tokens(QUESTION)
    assert backend.model_id == f"llamacpp:{GGUF_FILE}:{embedded_gguf().stat().st_size}"
    assert backend.context_length == 2048


@pytest.mark.slow
@needs_llama
def test_seeded_sampling_is_reproducible(backend) -> None:
    params = SamplingParams(temperature=0.9, top_p=0.95, max_new_tokens=8, seed=3)
    [a], [b] = backend.generate([ESSAY], params), backend.generate([ESSAY], params)
    assert a.text == b.text


@pytest.mark.slow
@needs_llama
def test_count_tokens_counts_the_chat_formatted_prompt(backend) -> None:
    # SmolLM2's GGUF template injects its default system prompt: 37 tokens in all for this question
    assert backend.count_tokens(QUESTION) == 37
    own_system = [{"role": "system", "content": "Judge."}, *QUESTION]
    assert backend.count_tokens(own_system) < 37


@pytest.mark.slow
@needs_llama
def test_finish_reason_length_at_a_tiny_limit(backend) -> None:
    [gen] = backend.generate([ESSAY], SamplingParams(max_new_tokens=3))
    assert (gen.finish_reason, gen.tokens_out) == ("length", 3)


@pytest.mark.slow
@needs_llama
def test_max_tokens_clamped_to_the_context_and_overlong_prompts_fail() -> None:
    from cerm.backends.llamacpp import LlamaCppBackend

    with LlamaCppBackend("embedded", n_ctx=48, n_threads=1) as small:
        n_prompt = small.count_tokens(ESSAY)
        [gen] = small.generate([ESSAY], SamplingParams(max_new_tokens=500))
        assert gen.finish_reason == "length" and gen.error is None
        assert gen.tokens_in + gen.tokens_out == 48 and gen.tokens_in == n_prompt
        [gen] = small.generate([ESSAY * 2], GREEDY)
        assert gen.finish_reason == "error" and gen.error_status is ParseStatus.TOO_LONG and "n_ctx" in gen.error


@pytest.mark.slow
@needs_llama
def test_concurrent_callers_are_serialised(backend) -> None:
    expected = backend.generate([QUESTION], GREEDY)[0].text
    results: list[str] = []

    def call() -> None:
        results.append(backend.generate([QUESTION], GREEDY)[0].text)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


@pytest.mark.slow
@needs_llama
def test_judge_end_to_end_statuses_are_explicit(caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import cerm.backends.embedded

    monkeypatch.setattr(cerm.backends.embedded, "_warned", False)  # logged once per process
    with caplog.at_level(logging.WARNING):
        backend = get_backend("llamacpp", "embedded", n_ctx=2048, n_threads=1)
    assert EMBEDDED_WARNING.removeprefix("WARNING: ") in caplog.text
    with backend:
        judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=32, eval_max_new_tokens=32))
        judgments = judge.score("What is the capital of France?", ["Paris.", "Lyon."])
    assert judge.stats.criteria_generated == 1 and judge.stats.evaluations_generated == 2
    assert sum(judge.stats.statuses.values()) == 2
    for j in judgments:
        assert isinstance(j.status, ParseStatus) and j.tokens_in > 0 and 0 < j.tokens_out <= 32
        # SmolLM2 rarely writes a box within 32 tokens: a failure must say so and carry no score
        assert (j.score is None) == (j.status is not ParseStatus.OK)
        if j.tokens_out == 32:
            assert j.status is ParseStatus.TRUNCATED


@needs_llama
@pytest.mark.slow
def test_readout_equals_brute_force(backend) -> None:
    import numpy as np

    from cerm.readout import CONTINUATIONS, ReadoutRequest, from_logprobs

    messages = [{"role": "user", "content": "Rate the answer '4' to 'What is 2+2?' from 0 to 10."}]  # short: fast
    prefixes = ["Criterion 1: right. $\\boxed{5}$\n\nOverall: $\\boxed{", "Overall score: \\boxed{"]
    dists = backend.score_distributions([ReadoutRequest(messages, p) for p in prefixes])
    ll = backend._llama
    rendered = backend._formatter(messages=messages, enable_thinking=False)
    for p, d in zip(prefixes, dists):
        assert d.ok, d.error
        enc = lambda t: ll.tokenize(t.encode(), add_bos=not rendered.added_special, special=True)  # noqa: E731
        n = len(enc(rendered.prompt + p))
        logps = []
        for c in CONTINUATIONS:  # each full sequence from an empty cache, one token at a time after the prefix
            ids = enc(rendered.prompt + p + c)
            ll.n_tokens = 0
            ll.eval(ids[:n])
            total = 0.0
            for k in range(n, len(ids)):
                row = backend._last_logits()
                total += row[ids[k]] - row.max() - np.log(np.exp(row - row.max()).sum())
                ll.eval([ids[k]])
            logps.append(total)
        want = from_logprobs(logps)
        assert max(abs(a - b) for a, b in zip(d.probs, want.probs)) < 1e-5
    assert dists[0].probs != dists[1].probs
    # generation still works after the readout moved the KV cache around
    again = backend.generate([QUESTION], GREEDY)[0]
    assert again.finish_reason in ("stop", "length") and again.error is None
