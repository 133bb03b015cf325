"""OpenAIBackend against real OpenAI-compatible HTTP servers (FastAPI + uvicorn on 127.0.0.1, no mocks)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from openai_test_server import InFlight, Reply, ScriptedServer, chat_reply

from cerm import Judge, JudgeConfig
from cerm.backends.base import get_backend
from cerm.backends.fake import CANNED_CRITERIA, hash_score
from cerm.backends.openai import OpenAIBackend, read_reply
from cerm.types import ParseStatus, SamplingParams

PARAMS = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=64, seed=7)


def prompt(text: str = "Rate this.") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    pair = (ScriptedServer().start(), ScriptedServer().start())
    yield pair
    for s in pair:
        s.stop()


@pytest.fixture
def server(servers: tuple[ScriptedServer, ScriptedServer]) -> ScriptedServer:
    for s in servers:
        s.reset()
    return servers[0]


def make_backend(*urls: str, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("backoff_base_s", 0.01)
    kwargs.setdefault("timeout_s", 5.0)
    return OpenAIBackend("test-model", list(urls), **kwargs)


def dead_url() -> str:
    """An API root on a port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.mark.slow  # starts HTTP servers
def test_normal_reply_and_request_body(server: ScriptedServer) -> None:
    server.reset(lambda req, i: Reply(chat_reply("Overall $\\boxed{7}$", prompt_tokens=21, completion_tokens=9)))
    with make_backend(server.url, api_key="sk-test") as backend:
        [gen] = backend.generate([prompt("Hello")], PARAMS)
    assert (gen.text, gen.finish_reason, gen.source_field) == ("Overall $\\boxed{7}$", "stop", "content")
    assert (gen.tokens_in, gen.tokens_out, gen.error) == (21, 9, None)
    assert gen.seconds > 0
    [req] = server.requests
    assert req["model"] == "test-model"
    assert req["messages"] == prompt("Hello")
    assert (req["temperature"], req["top_p"], req["max_tokens"], req["seed"]) == (0.0, 1.0, 64, 7)
    assert req["chat_template_kwargs"] == {"enable_thinking": False}
    assert server.headers[0]["authorization"] == "Bearer sk-test"


@pytest.mark.slow  # starts HTTP servers
def test_hosted_mode_omits_extensions_and_merges_extra_body(server: ScriptedServer) -> None:
    with make_backend(server.url, send_chat_template_kwargs=False, extra_body={"top_k": 5}) as backend:
        backend.generate([prompt()], SamplingParams(max_new_tokens=8))
    [req] = server.requests
    assert "chat_template_kwargs" not in req and "seed" not in req
    assert req["top_k"] == 5
    assert "authorization" not in server.headers[0]


@pytest.mark.slow  # starts HTTP servers
def test_batch_keeps_input_order(server: ScriptedServer) -> None:
    # later prompts answer sooner, so completion order differs from input order
    def handler(req: dict, i: int) -> Reply:
        n = int(req["messages"][0]["content"])
        return Reply(chat_reply(f"answer {n}"), delay_s=0.02 * (5 - n))

    server.reset(handler)
    with make_backend(server.url) as backend:
        gens = backend.generate([prompt(str(n)) for n in range(5)], PARAMS)
    assert [g.text for g in gens] == [f"answer {n}" for n in range(5)]


@pytest.mark.slow  # starts HTTP servers
def test_reasoning_content_only_reply(server: ScriptedServer) -> None:
    server.reset(lambda req, i: Reply(chat_reply(None, reasoning_content="Overall $\\boxed{6}$")))
    with make_backend(server.url) as backend:
        [gen] = backend.generate([prompt()], PARAMS)
    assert (gen.text, gen.source_field, gen.finish_reason) == ("Overall $\\boxed{6}$", "reasoning_content", "stop")


def test_newer_vllm_reasoning_field_and_empty_reply() -> None:
    reply = chat_reply("")
    reply["choices"][0]["message"]["reasoning"] = "thought $\\boxed{3}$"
    assert read_reply(reply).source_field == "reasoning"
    empty = read_reply(chat_reply("", reasoning_content="  "))
    assert (empty.text, empty.source_field) == ("", "content")
    with pytest.raises(ValueError, match="choices"):
        read_reply({"error": "nope"})


@pytest.mark.slow  # starts HTTP servers
def test_empty_reply_is_judged_empty_not_scored(server: ScriptedServer) -> None:
    def handler(req: dict, i: int) -> Reply:
        return Reply() if len(req["messages"]) == 1 else Reply(chat_reply(None))

    server.reset(handler)
    with make_backend(server.url) as backend:
        [j] = Judge(backend, JudgeConfig()).score("What is 2+2?", ["4"])
    assert (j.status, j.score) == (ParseStatus.EMPTY, None)


@pytest.mark.slow  # starts HTTP servers
def test_finish_reason_length(server: ScriptedServer) -> None:
    server.reset(lambda req, i: Reply(chat_reply("Criterion 1: the answer", finish_reason="length")))
    with make_backend(server.url) as backend:
        [gen] = backend.generate([prompt()], PARAMS)
    assert (gen.finish_reason, gen.text) == ("length", "Criterion 1: the answer")


@pytest.mark.slow  # starts HTTP servers
def test_429_then_success_honours_retry_after(server: ScriptedServer) -> None:
    def handler(req: dict, i: int) -> Reply:
        if i == 0:
            return Reply({"error": "rate limited"}, status=429, headers={"Retry-After": "0.4"})
        return Reply(chat_reply("ok"))

    server.reset(handler)
    with make_backend(server.url, max_retries=2, backoff_base_s=0.001) as backend:
        start = time.perf_counter()
        [gen] = backend.generate([prompt()], PARAMS)
        elapsed = time.perf_counter() - start
    assert (gen.text, gen.finish_reason) == ("ok", "stop")
    assert len(server.requests) == 2
    assert elapsed >= 0.4  # the jittered backoff alone would be ~1 ms


@pytest.mark.slow  # starts HTTP servers
def test_500_always_gives_error_generation_after_retries(server: ScriptedServer) -> None:
    server.reset(lambda req, i: Reply({"error": "boom"}, status=500))
    with make_backend(server.url, max_retries=2) as backend:
        [gen] = backend.generate([prompt()], PARAMS)
    assert (gen.finish_reason, gen.text) == ("error", "")
    assert "failed after 3 tries" in gen.error and "HTTP 500" in gen.error
    assert len(server.requests) == 3


@pytest.mark.slow  # starts HTTP servers
def test_one_bad_request_does_not_lose_the_batch(server: ScriptedServer) -> None:
    def handler(req: dict, i: int) -> Reply:
        bad = req["messages"][0]["content"] == "bad"
        return Reply({"error": "invalid"}, status=422) if bad else Reply(chat_reply("fine"))

    server.reset(handler)
    with make_backend(server.url) as backend:
        gens = backend.generate([prompt("good"), prompt("bad"), prompt("good")], PARAMS)
    assert [g.finish_reason for g in gens] == ["stop", "error", "stop"]
    assert "HTTP 422" in gens[1].error
    assert len(server.requests) == 3  # a 422 is not retried


@pytest.mark.slow  # starts HTTP servers
def test_404_hints_at_the_api_prefix_and_context_400_is_too_long(server: ScriptedServer) -> None:
    def handler(req: dict, i: int) -> Reply:
        if any("OVERLONG" in m["content"] for m in req["messages"]):
            return Reply({"message": "This model's maximum context length is 8192 tokens."}, status=400)
        return Reply({"detail": "Not Found"}, status=404)

    server.reset(handler)
    with make_backend(server.url) as backend:
        missing, long = backend.generate([prompt("x"), prompt("OVERLONG")], PARAMS)
    assert "HTTP 404" in missing.error and "/v1" in missing.error
    assert long.error_status is ParseStatus.TOO_LONG and "maximum context length" in long.error
    assert missing.error_status is ParseStatus.BACKEND_ERROR
    with make_backend(server.url) as backend:
        [j] = Judge(backend, JudgeConfig()).score("OVERLONG query", ["r"], criteria="1. Correctness")
    assert j.status == ParseStatus.TOO_LONG


@pytest.mark.slow  # starts HTTP servers
def test_timeout_becomes_error_generation(server: ScriptedServer) -> None:
    server.reset(lambda req, i: Reply(chat_reply("late"), delay_s=10.0))  # one unbounded wait alone is 10 s
    with make_backend(server.url, timeout_s=0.2, max_retries=1) as backend:
        start = time.perf_counter()
        [gen] = backend.generate([prompt()], PARAMS)
        elapsed = time.perf_counter() - start
    assert gen.finish_reason == "error" and "timed out" in gen.error
    assert len(server.requests) == 2
    assert elapsed < 5.0  # two 0.2 s timeouts and a backoff: ~0.5 s idle


@pytest.mark.slow  # starts HTTP servers
def test_connection_error_and_failover_to_another_server(server: ScriptedServer) -> None:
    server.reset(lambda req, i: Reply(chat_reply("served")))
    with make_backend(dead_url(), max_retries=1) as backend:
        [gen] = backend.generate([prompt()], PARAMS)
    assert gen.finish_reason == "error" and "connection error" in gen.error
    # a pool with one dead server: every first try that lands there is retried on the live one
    dead = dead_url()
    with make_backend(dead, server.url, max_retries=1, backoff_base_s=1.0, backoff_max_s=30) as backend:
        gens = backend.generate([prompt(str(i)) for i in range(6)], PARAMS)
        assert [g.text for g in gens] == ["served"] * 6
        # ... and once it refused a connection it sits out: no request tries it again (and pays a backoff)
        tried = backend.router.requests[dead]
        gens = backend.generate([prompt(str(i)) for i in range(6)], PARAMS)
        assert backend.router.requests[dead] == tried
    assert [g.text for g in gens] == ["served"] * 6


@pytest.mark.slow  # starts HTTP servers
def test_two_base_urls_both_receive_traffic(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    a, b = servers
    for s in servers:
        s.reset(lambda req, i: Reply(chat_reply("ok"), delay_s=0.05))
    with make_backend(a.url, b.url, concurrency_limit=4, routing="least-loaded") as backend:
        gens = backend.generate([prompt(str(i)) for i in range(16)], PARAMS)
    assert all(g.text == "ok" for g in gens)
    # least-in-flight with 4 slots over 2 equal servers never stacks more than 2 on one of them
    assert len(a.requests) + len(b.requests) == 16
    assert 4 <= len(a.requests) <= 12 and max(a.in_flight.peak, b.in_flight.peak) <= 2


@pytest.mark.slow  # starts HTTP servers
def test_concurrency_limit_is_never_exceeded(servers: tuple[ScriptedServer, ScriptedServer]) -> None:
    shared = InFlight()
    for s in servers:
        s.reset(lambda req, i: Reply(chat_reply("ok"), delay_s=0.05), shared_in_flight=shared)
    with make_backend(servers[0].url, servers[1].url, concurrency_limit=3) as backend:
        # several threads and batches share one backend: the bound is per backend, not per call
        threads = [threading.Thread(target=backend.generate, args=([prompt(str(i)) for i in range(8)], PARAMS))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(len(s.requests) for s in servers) == 24
    assert shared.peak == 3


@pytest.mark.slow  # starts HTTP servers
def test_generate_inside_a_running_event_loop(server: ScriptedServer) -> None:
    server.reset(lambda req, i: Reply(chat_reply("from loop"), delay_s=0.02))
    with make_backend(server.url) as backend:

        async def caller() -> tuple[list, list]:
            # as in a TRL async reward function or a FastAPI handler: the loop is already running
            sync_gens = backend.generate([prompt()], PARAMS)
            async_gens = await asyncio.gather(*(backend.agenerate([prompt(str(i))], PARAMS) for i in range(3)))
            return sync_gens, async_gens

        sync_gens, async_gens = asyncio.run(caller())
    assert sync_gens[0].text == "from loop"
    assert [g[0].text for g in async_gens] == ["from loop"] * 3


@pytest.mark.slow  # starts HTTP servers
def test_judge_end_to_end_through_the_server(server: ScriptedServer) -> None:
    responses = ["Paris is the capital of France.", "It is Lyon.", "France's capital: Paris."]
    with get_backend("openai", "PKU-ONELab/CE-RM-4B", base_urls=[server.url], concurrency_limit=4) as backend:
        judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=128, eval_max_new_tokens=256))
        judgments = judge.score("What is the capital of France?", responses)
        criteria = judge.criteria("What is the capital of France?")
    assert [j.status for j in judgments] == [ParseStatus.OK] * 3
    assert [j.score for j in judgments] == [hash_score(r) for r in responses]
    assert [j.criterion_scores for j in judgments] == [(4.0, 3.0, 5.0)] * 3
    assert criteria.text == CANNED_CRITERIA and len(criteria.items) == 3
    # one criteria call for the query, then one evaluation per response
    assert [len(r["messages"]) for r in server.requests] == [1, 3, 3, 3]
    assert [r["max_tokens"] for r in server.requests] == [128, 256, 256, 256]
    assert judge.stats.criteria_generated == 1 and judge.stats.criteria_cache_hits == 1


@pytest.mark.slow  # starts HTTP servers
def test_close_and_bad_arguments(server: ScriptedServer) -> None:
    backend = make_backend(server.url)
    assert backend.model_id == "test-model" and backend.count_tokens(prompt()) is None
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([prompt()], PARAMS)
    with pytest.raises(ValueError, match="base_urls"):
        OpenAIBackend("m", [])
    with pytest.raises(ValueError, match="base_urls"):
        OpenAIBackend("m", ["localhost:8000"])
    with pytest.raises(ValueError, match="concurrency_limit"):
        OpenAIBackend("m", ["http://x/v1"], concurrency_limit=0)


def test_check_pool_names_the_unreachable_url(server: ScriptedServer) -> None:
    """An unreachable pool fails before the run (it used to retry for minutes), naming the dead URL only."""
    dead = dead_url()
    with make_backend(server.url) as backend:
        backend.check_pool()  # the scripted server has no /models route: any HTTP answer is reachable
    with make_backend(server.url, dead) as backend:
        start = time.perf_counter()
        with pytest.raises(ConnectionError) as e:
            backend.check_pool(timeout_s=5)
        assert time.perf_counter() - start < 5
    assert dead in str(e.value) and server.url not in str(e.value)


def test_failing_server_is_logged_once_per_state_change(server: ScriptedServer, caplog) -> None:
    state = {"down": True}
    server.reset(lambda req, i: Reply({"error": "boom"}, status=500) if state["down"] else Reply(chat_reply("ok")))
    with make_backend(server.url, max_retries=1) as backend, caplog.at_level("DEBUG", "cerm.backends.openai"):
        backend.generate([prompt(f"q{i}") for i in range(6)], PARAMS)
        state["down"] = False
        backend.generate([prompt(f"r{i}") for i in range(6)], PARAMS)
    warnings = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(warnings) == 2, warnings
    assert "is failing" in warnings[0] and server.url in warnings[0] and "answers again" in warnings[1]


@pytest.mark.slow  # starts HTTP servers
def test_on_done_reports_each_reply_as_it_arrives(server: ScriptedServer) -> None:
    # later prompts answer sooner: on_done sees them in completion order, each before the batch returns
    def handler(req: dict, i: int) -> Reply:
        n = int(req["messages"][0]["content"])
        return Reply(chat_reply(f"answer {n}"), delay_s=0.05 * (3 - n))

    server.reset(handler)
    seen: list[tuple[int, str]] = []
    with make_backend(server.url) as backend:
        gens = backend.generate([prompt(str(n)) for n in range(4)], PARAMS,
                                on_done=lambda i, g: seen.append((i, g.text)))
    assert [i for i, _ in seen] == [3, 2, 1, 0]
    assert dict(seen) == {n: g.text for n, g in enumerate(gens)}
