"""The reward server on an engine with its own scheduler (``DirectDispatch``): no batch window, the same
contracts as through the batcher, back-pressure, per-request errors, drain; and what both dispatches share:
bulk requests judged in slices, the entries limit, ``POST /v1/criteria``, the judge's score mode.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from support import eventually

from cerm import Judge, JudgeConfig
from cerm.backends.fake import (
    CANNED_CRITERIA,
    FakeBackend,
    FakeStreamingBackend,
    canned_evaluation,
    default_script,
    hash_score,
)
from cerm.reward.batcher import BatcherConfig
from cerm.reward.server import ServerConfig, create_app
from cerm.reward.server.dispatch import BatchedDispatch, DirectDispatch


def direct_client(backend=None, **cfg) -> tuple[TestClient, FakeStreamingBackend]:
    backend = backend or FakeStreamingBackend()
    cfg.setdefault("freeze_gc", False)
    return TestClient(create_app(Judge(backend), ServerConfig(**cfg))), backend


def criteria_calls(backend: FakeBackend) -> int:
    return sum(len(p) for p, _ in backend.calls if len(p[0]) == 1)


def test_auto_dispatch_follows_the_engine():
    from cerm.reward.server.dispatch import make_dispatch

    cfg = BatcherConfig()
    assert isinstance(make_dispatch(Judge(FakeStreamingBackend()), cfg, "auto", print), DirectDispatch)
    batched = make_dispatch(Judge(FakeBackend()), cfg, "auto", print)
    assert isinstance(batched, BatchedDispatch)
    batched.batcher.close()


def test_contracts_on_a_streaming_engine_and_no_batch_window():
    client, backend = direct_client(batch=BatcherConfig(window_s=5.0))  # a window that would cost 5 s a request
    prompts = ["<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n"] * 2
    with client:
        t0 = time.monotonic()
        reward = client.post("/get_reward", json={"query": [p + a for p, a in zip(prompts, ["x", "y"])],
                                                  "prompts": prompts})
        score = client.post("/v1/score", json={"query": "q", "responses": ["a", "b"]})
        compare = client.post("/v1/compare", json={"query": "q", "a": "a", "b": "b"})
        elapsed = time.monotonic() - t0
        health = client.get("/health").json()
    assert reward.status_code == score.status_code == compare.status_code == 200
    assert reward.json()["rewards"] == pytest.approx([hash_score("x") / 10, hash_score("y") / 10])
    assert score.json()["scores"] == [hash_score("a"), hash_score("b")]
    assert compare.json()["winner"] in ("a", "b", "tie")
    assert elapsed < 3.0, "a request waited for a batch window"  # ~0.05 s idle; one window alone is 5 s
    assert health["status"] == "ok" and health["queue_depth"] == 0
    assert criteria_calls(backend) == 2  # the OpenRLHF prompt, then "q" (cached for /v1/compare)


def test_a_bad_request_never_fails_its_neighbours():
    def script(messages, params):
        if len(messages) > 1 and "explode" in messages[-1]["content"]:
            raise RuntimeError("judge crashed")
        return default_script(messages, params)

    client, _ = direct_client(FakeStreamingBackend(script=script, latency_s=lambda m, p: 0.05))
    with client:
        results = {}
        threads = [threading.Thread(target=lambda r=r: results.__setitem__(r, client.post(
            "/v1/score", json={"query": "q", "responses": [r]}))) for r in ("fine", "explode", "also fine")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results["explode"].status_code == 502 and "judge crashed" in results["explode"].json()["detail"]
    assert results["fine"].status_code == results["also fine"].status_code == 200


def test_back_pressure_timeout_and_the_work_of_a_timed_out_request_is_cached(serve_app):
    gate = threading.Event()

    def script(messages, params):
        if "blocked" in messages[0]["content"]:
            assert gate.wait(10)
        return default_script(messages, params)

    class Blocking(FakeStreamingBackend):
        async def agenerate(self, prompts, params):  # the engine works in its own threads, as vLLM's does
            import asyncio

            return await asyncio.to_thread(lambda: [self._run(m, params) for m in prompts])

    backend = Blocking(script=script)
    app = create_app(Judge(backend), ServerConfig(batch=BatcherConfig(max_queue=1), timeout_s=0.5,
                                                  retry_after_s=2, freeze_gc=False))
    with serve_app(app) as srv:
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(httpx.post(
            f"{srv.url}/v1/score", json={"query": "blocked", "responses": ["a"]}, timeout=10)))
        t.start()
        eventually(lambda: httpx.get(f"{srv.url}/health").json()["queue_depth"] == 1, what="the first request in")
        refused = httpx.post(f"{srv.url}/v1/score", json={"query": "other", "responses": ["b"]}, timeout=5)
        t.join(10)
        gate.set()
        eventually(lambda: httpx.get(f"{srv.url}/health").json()["queue_depth"] == 0,  # the timed-out one finishes
                   what="the timed-out request finished")
        calls = len(backend.calls)
        retry = httpx.post(f"{srv.url}/v1/score", json={"query": "blocked", "responses": ["a"]}, timeout=5)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
    assert first[0].status_code == 504
    assert retry.status_code == 200 and retry.json()["scores"] == [hash_score("a")]
    assert len(backend.calls) == calls, "the retry was served from the cache"


def test_graceful_shutdown_finishes_running_requests(serve_app):
    criteria_turns: list[int] = []  # one per request that reached the judge

    def latency(messages, params):
        if len(messages) == 1:
            criteria_turns.append(1)
        return 0.3

    app = create_app(Judge(FakeStreamingBackend(latency_s=latency)), ServerConfig(freeze_gc=False))
    with serve_app(app) as srv:
        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda i=i: results.append(httpx.post(
            f"{srv.url}/v1/score", json={"query": f"q{i}", "responses": ["a"]}, timeout=20))) for i in range(3)]
        for t in threads:
            t.start()
        eventually(lambda: len(criteria_turns) == 3, what="all three requests in the judge")
        srv.stop()
        for t in threads:
            t.join(20)
    assert [r.status_code for r in results] == [200, 200, 200]


@pytest.mark.parametrize("streaming", [False, True], ids=["batched", "direct"])
def test_a_bulk_request_does_not_hold_up_a_small_one(serve_app, streaming):
    """200 samples at 5 ms an evaluation take >= 1 s; a 1-sample request sent after it must not wait for all
    of it: it is judged between the bulk request's slices of 8.
    """
    def script(messages, params):
        if len(messages) > 1:
            time.sleep(0.005)
        return default_script(messages, params)

    backend = FakeStreamingBackend(script=script) if streaming else FakeBackend(script=script)
    app = create_app(Judge(backend), ServerConfig(batch=BatcherConfig(max_batch_size=8, window_s=0.0),
                                                  freeze_gc=False))
    with serve_app(app) as srv:
        done: dict[str, float] = {}
        body = {"query": [f"P bulk {i}" for i in range(200)], "prompts": ["P"] * 200}

        def bulk():
            r = httpx.post(f"{srv.url}/get_reward", json=body, timeout=60)
            assert r.status_code == 200 and len(r.json()["rewards"]) == 200
            done["bulk"] = time.monotonic()

        t = threading.Thread(target=bulk)
        t.start()
        time.sleep(0.15)  # the bulk request is being judged
        small = httpx.post(f"{srv.url}/get_reward", json={"query": ["Q small"], "prompts": ["Q"]}, timeout=60)
        done["small"] = time.monotonic()
        t.join(60)
    assert small.status_code == 200
    # with one judge call for all 200, the small request would finish after the bulk one
    assert done["small"] < done["bulk"]


def test_too_many_entries_is_413_naming_the_limit():
    client, backend = direct_client(max_entries=3)
    with client:
        reward = client.post("/get_reward", json={"query": ["a"] * 4})
        score = client.post("/v1/score", json={"query": "q", "responses": ["a"] * 4})
        prefetch = client.post("/v1/criteria", json={"prompts": ["p"] * 4})
        fine = client.post("/get_reward", json={"query": ["Pa"] * 3, "prompts": ["P"] * 3})
    for r, what in ((reward, "4 samples"), (score, "4 responses"), (prefetch, "4 prompts")):
        assert r.status_code == 413 and r.json()["error"] == "too_many_entries"
        assert what in r.json()["detail"] and "limit is 3" in r.json()["detail"]
    assert fine.status_code == 200


@pytest.mark.parametrize("streaming", [False, True], ids=["batched", "direct"])
def test_criteria_sent_ahead_are_generated_once_and_reused(streaming):
    backend = FakeStreamingBackend() if streaming else FakeBackend()
    client = TestClient(create_app(Judge(backend), ServerConfig(freeze_gc=False)))
    with client:
        accepted = client.post("/v1/criteria", json={"prompts": ["q1", [{"role": "user", "content": "q2"}]]})
        eventually(lambda: criteria_calls(backend) >= 2, what="the criteria generated")
        time.sleep(0.05)
        scored = client.post("/v1/score", json={"query": "q1", "responses": ["a"]})
        metrics = client.get("/metrics").text
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["accepted"] == 2 and len(body["keys"]) == 2
    assert scored.json()["criteria"]["key"] == body["keys"][0] and scored.json()["criteria"]["text"] == CANNED_CRITERIA
    assert criteria_calls(backend) == 2  # none more for the score
    assert "cerm_criteria_prefetched_total 2.0" in metrics


@pytest.mark.parametrize("streaming", [False, True], ids=["batched", "direct"])
def test_every_score_and_reward_follows_the_judges_score_mode(streaming):
    """Under --score expected, /v1/score and /v1/compare give the expected score (once the greedy one)."""
    def script(messages, params):
        return CANNED_CRITERIA if len(messages) == 1 else canned_evaluation(6)

    def dist(r):  # "b" peaks at 9, everything else at 5
        peak = 18 if "\nb\n" in r.messages[-1]["content"] else 10
        return [100.0 if i == peak else 1.0 for i in range(21)]

    cls = FakeStreamingBackend if streaming else FakeBackend
    judge = Judge(cls(script=script, distribution=dist), JudgeConfig(expected_score=True))
    client = TestClient(create_app(judge, ServerConfig(freeze_gc=False)))
    with client:
        score = client.post("/v1/score", json={"query": "q", "responses": ["a", "b"]}).json()
        compare = client.post("/v1/compare", json={"query": "q", "a": "a", "b": "b"}).json()
        reward = client.post("/get_reward", json={"query": ["Pb"], "prompts": ["P"]}).json()
    expected = [j["score"] for j in score["judgments"]]
    assert expected == [6.0, 6.0]  # the greedy boxed scores tie
    assert score["score_mode"] == "expected" and score["scores"][1] > score["scores"][0] == pytest.approx(5)
    assert [j["expected_score"] for j in score["judgments"]] == score["scores"]
    assert score["rewards"] == pytest.approx([s / 10 for s in score["scores"]])
    assert [j["reward"] for j in score["judgments"]] == pytest.approx(score["rewards"])
    assert compare["winner"] == "b" and compare["scores"] == pytest.approx(score["scores"])
    assert reward["rewards"][0] != 0.6  # the expected score, not the greedy 6
