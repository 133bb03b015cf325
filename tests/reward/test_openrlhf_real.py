"""Real ``cerm serve`` processes driven by OpenRLHF's own reward client (openrlhf==0.11.2,
``openrlhf.utils.agent.SingleTurnAgentExecutor._fetch_rewards_via_http``; scripts/counterparts.txt).

Two replicas share one ``--cache`` and judge through an OpenAI-compatible judge server in this process,
which counts the criteria generations and makes them slow enough for concurrent misses to overlap.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from openrlhf.utils.agent import SingleTurnAgentExecutor
from prometheus_client.parser import text_string_to_metric_families
from support import free_port

from cerm.backends.fake import CANNED_CRITERIA, canned_evaluation

TOKENIZER = Path(os.environ.get("CERM_TEST_MODELS", "")) / "tiny-qwen3"  # a ChatML (Qwen3) chat template
CERM = [str(Path(sys.executable).parent / "cerm")]


def judge_app(criteria_seconds: float) -> tuple[FastAPI, Counter, list[dict]]:
    app = FastAPI()
    criteria_calls: Counter = Counter()
    evaluations: list[dict] = []

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "judge", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        content = body["messages"][-1]["content"]
        if len(body["messages"]) == 1:
            criteria_calls[content] += 1
            await asyncio.sleep(criteria_seconds)
            text = CANNED_CRITERIA
        else:
            evaluations.append(body)
            text = "no box here" if "garbled" in content else canned_evaluation(7)
        return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

    return app, criteria_calls, evaluations


@contextmanager
def cerm_serve(judge_url: str, cache: Path, replicas: int = 2) -> Iterator[list[str]]:
    """``cerm serve`` replicas (real processes, real uvicorn) sharing one SQLite cache."""
    procs, urls = [], []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).parents[2] / "src"),
                                                                   os.environ.get("PYTHONPATH", "")] if p)}
    try:
        for _ in range(replicas):
            port = free_port()
            procs.append(subprocess.Popen(
                [*CERM, "serve", "--backend", "openai", "--model", "judge", "--base-url", f"{judge_url}/v1",
                 "--cache", str(cache), "--tokenizer", str(TOKENIZER), "--port", str(port), "--log-level",
                 "warning", "--batch-window-ms", "1"], env=env))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        for proc, url in zip(procs, urls, strict=True):
            while True:
                assert proc.poll() is None, f"cerm serve exited with {proc.returncode}"
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "cerm serve did not start"
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def chatml(messages: list[tuple[str, str]], generation: bool = True) -> str:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return text + ("<|im_start|>assistant\n" if generation else "")


PROMPT = chatml([("system", "You are terse."), ("user", "Name a prime."), ("assistant", "2"),
                 ("user", "Another one?")])


def fetch(executor: SingleTurnAgentExecutor, queries: list[str], prompts: list[str], labels: list) -> list[dict]:
    return asyncio.run(executor._fetch_rewards_via_http(queries, prompts, labels))


@pytest.mark.slow
def test_openrlhf_client_against_two_cerm_serve_replicas(serve_app, tmp_path):
    app, criteria_calls, evaluations = judge_app(criteria_seconds=1.5)
    with serve_app(app) as judge, cerm_serve(judge.url, tmp_path / "shared.sqlite") as urls:
        executor = SingleTurnAgentExecutor(remote_rm_url=[f"{u}/get_reward" for u in urls])

        # ChatML as OpenRLHF decodes it (special tokens kept): system prompt, history, <think>, eos.
        # Four single-sample rollouts of one prompt, gathered: OpenRLHF rotates them over both replicas,
        # which miss the criteria at the same time; the shared cache's lease makes one generate them.
        async def rollouts() -> list[list[dict]]:
            return await asyncio.gather(*(executor._fetch_rewards_via_http(
                [PROMPT + f"<think>try {i}</think>{i * 2 + 3}<|im_end|>"], [PROMPT], [None]) for i in range(4)))

        out = asyncio.run(rollouts())
        assert [r[0]["rewards"] for r in out] == [[0.7]] * 4
        assert sum(criteria_calls.values()) == 1, criteria_calls  # fails without the lease: one per replica
        (criteria_prompt,) = criteria_calls
        assert "Name a prime." in criteria_prompt and "Another one?" in criteria_prompt
        assert "You are terse." not in criteria_prompt and "<|im_start|>" not in criteria_prompt
        assert all("try" not in e["messages"][-1]["content"] for e in evaluations)  # <think> never judged
        assert sum(metric(u, "cerm_criteria_generated_total") for u in urls) == 1
        assert sum(metric(u, "cerm_criteria_lease_waits") for u in urls) >= 1

        # non-string labels (OpenRLHF passes the dataset column through): fails with 422 before
        labels = [3, None, {"answer": "5"}]
        queries = [PROMPT + f"{x}<|im_end|>" for x in ("5", "garbled", "7")]
        single = SingleTurnAgentExecutor(remote_rm_url=f"{urls[0]}/get_reward")
        (reply,) = fetch(single, queries, [PROMPT] * 3, labels)
        assert reply["rewards"] == [0.7, 0.0, 0.7]
        assert reply["extra_logs"]["cerm_parse_fail"] == [0.0, 1.0, 0.0]
        assert metric(urls[0], "cerm_parse_failures_total") == 1
        assert metric(urls[0], "cerm_backend_errors_total") == 0

        # OpenRLHF 0.11.0 sent {"query": []} to each URL beyond the batch's shards: 200 with empty lists
        empty = httpx.post(f"{urls[1]}/get_reward", json={"query": [], "prompts": [], "labels": []})
        assert empty.status_code == 200, empty.text
        assert empty.json()["rewards"] == [] and empty.json()["scores"] == []
