"""The reward server: contracts (OpenRLHF /get_reward, /v1/score, /v1/compare, /health, /metrics) and faults."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from support import eventually

from cerm import Judge
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation, default_script, hash_score
from cerm.reward.batcher import BatcherConfig
from cerm.reward.server import ServerConfig, create_app
from cerm.reward.split import PromptSplitter
from cerm.types import Generation


def client_for(backend=None, splitter=None, **cfg) -> tuple[TestClient, FakeBackend]:
    backend = backend or FakeBackend()
    cfg.setdefault("freeze_gc", False)  # process-wide; covered by its own test
    return TestClient(create_app(Judge(backend), ServerConfig(**cfg), splitter)), backend


def test_startup_freezes_the_heap_out_of_the_collector_unless_told_not_to():
    import gc

    gc.unfreeze()
    try:
        with TestClient(create_app(Judge(FakeBackend()), ServerConfig(freeze_gc=False))) as client:
            assert client.get("/health").status_code == 200 and gc.get_freeze_count() == 0
        with TestClient(create_app(Judge(FakeBackend()), ServerConfig())) as client:
            assert client.get("/health").status_code == 200 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test process keeps a normal collector


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition, parsed with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels} in /metrics")


def assert_json_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == code and body["detail"]
    return body


# ---- contracts -------------------------------------------------------------------------------------
def test_get_reward_openrlhf_contract_with_prompts():
    client, backend = client_for()
    prompts = ["<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n"] * 2
    responses = ["Rayleigh scattering.", "<think>hmm</think>Because it is."]
    with client:
        r = client.post("/get_reward", json={"query": [p + a + "<|im_end|>" for p, a in zip(prompts, responses, strict=True)],
                                             "prompts": prompts, "labels": ["", ""], "metas": [{}, {}]})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = [hash_score("Rayleigh scattering.") / 10, hash_score("Because it is.") / 10]
    assert body["rewards"] == pytest.approx(expected) and body["scores"] == pytest.approx(expected)
    assert body["extra_logs"]["cerm_parse_fail"] == [0.0, 0.0]
    assert backend.num_prompts == 1 + 2  # one criteria generation for the shared prompt
    # raw extractor (no tokenizer): the query is the prompt text, template tokens included
    assert "Why is the sky blue?" in backend.calls[0][0][0][0]["content"]


def test_get_reward_uses_chat_template_without_prompts(smollm2_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a prime."}], tokenize=False,
                                     add_generation_prompt=True)
    client, backend = client_for(splitter=PromptSplitter(tok), scale="raw")
    with client:
        r = client.post("/get_reward", json={"query": [tok.pad_token + prompt + "7" + tok.eos_token]})
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == [hash_score("7")] and r.json()["scores"] == [hash_score("7") / 10]
    criteria_prompt = backend.calls[0][0][0][0]["content"]
    assert "Name a prime." in criteria_prompt and "<|im_start|>" not in criteria_prompt and "SmolLM" not in criteria_prompt


def test_get_reward_parse_failure_gets_failure_reward_and_is_logged():
    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        return "no box at all" if "bad" in messages[-1]["content"] else canned_evaluation(9)

    client, _ = client_for(FakeBackend(script=script), failure_reward=-1.0)
    with client:
        r = client.post("/get_reward", json={"query": ["P good", "P bad"], "prompts": ["P", "P"]})
        metrics = client.get("/metrics").text
    assert r.json()["rewards"] == [0.9, -1.0] and r.json()["scores"] == [0.9, -1.0]
    assert r.json()["extra_logs"]["cerm_parse_fail"] == [0.0, 1.0]
    assert metric(metrics, "cerm_parse_failures_total") == 1
    assert metric(metrics, "cerm_judgments_total", status="no_box") == 1


def test_score_compare_health_metrics():
    client, backend = client_for(warning="plumbing model")
    with client:
        s = client.post("/v1/score", json={"query": [{"role": "user", "content": "Capital of France?"}],
                                           "responses": ["Paris", "Lyon"], "include_text": False})
        c = client.post("/v1/compare", json={"query": "Capital of France?", "a": "Paris", "b": "Lyon"})
        u = client.post("/v1/score", json={"query": "Q", "responses": ["x"], "criteria": "[Mine]\n1. A: b"})
        h = client.get("/health")
        m = client.get("/metrics")
    body = s.json()
    assert body["scores"] == [hash_score("Paris"), hash_score("Lyon")]
    assert body["rewards"] == [hash_score("Paris") / 10, hash_score("Lyon") / 10]
    assert body["criteria"]["source"] == "generated" and len(body["criteria"]["items"]) == 3
    assert body["judgments"][0]["status"] == "ok" and body["judgments"][0]["text"] is None
    assert body["warning"] == "plumbing model" and body["model"] == "fake:fake"
    sa, sb = hash_score("Paris"), hash_score("Lyon")
    assert c.json()["winner"] == ("a" if sa > sb else "b" if sb > sa else "tie")
    assert c.json()["criteria"]["source"] == "cache"  # the same query: criteria generated once
    assert c.json()["judgments"][0]["text"].endswith(f"$\\boxed{{{sa:g}}}$")
    assert u.json()["criteria"]["source"] == "user"
    assert h.json() == {"status": "ok", "model": "fake:fake", "prompt_version": h.json()["prompt_version"],
                        "queue_depth": 0, "warning": "plumbing model"}
    text = m.text
    assert m.headers["content-type"].startswith("text/plain")
    assert metric(text, "cerm_requests_total", route="/v1/score", code="200") == 2
    assert metric(text, "cerm_request_seconds_count", route="/v1/compare") == 1
    assert metric(text, "cerm_batch_responses_sum") == 5 and metric(text, "cerm_batch_responses_count") == 3
    assert metric(text, "cerm_criteria_generated_total") == 1 and metric(text, "cerm_criteria_cache_hits_total") == 1
    assert metric(text, "cerm_queue_depth") == 0
    # /v1/compare re-judged the same (query, response) pairs: criteria and judgments came from the cache
    assert backend.num_prompts == 1 + 2 + 0 + 1


def test_merged_requests_share_one_criteria_generation(serve_app):
    gate, entered = threading.Event(), threading.Event()

    def script(messages, params):
        if len(messages) == 1:
            entered.set()
            gate.wait(5)  # hold the first batch so the other requests queue behind it
        return default_script(messages, params)

    backend = FakeBackend(script=script)
    app = create_app(Judge(backend), ServerConfig(batch=BatcherConfig(window_s=0.0)))
    with serve_app(app) as srv:
        def post(i: int) -> httpx.Response:
            return httpx.post(f"{srv.url}/get_reward", json={"query": [f"P{i % 2} r{i}"], "prompts": [f"P{i % 2}"]},
                              timeout=20)

        threads, results = [], {}
        for i in range(8):
            t = threading.Thread(target=lambda i=i: results.__setitem__(i, post(i)))
            t.start()
            threads.append(t)
            if i == 0:
                assert entered.wait(5)  # request 0 is in the judge before the others are sent
        deadline = time.monotonic() + 10
        while httpx.get(f"{srv.url}/health").json()["queue_depth"] < 7:  # the first one is being judged
            assert time.monotonic() < deadline, "requests never queued"
            time.sleep(0.02)
        gate.set()
        for t in threads:
            t.join(20)
        metrics = httpx.get(f"{srv.url}/metrics").text
    assert all(r.status_code == 200 for r in results.values())
    assert [results[i].json()["rewards"][0] for i in range(8)] == [hash_score(f"r{i}") / 10 for i in range(8)]
    criteria_calls = sum(len(p) for p, _ in backend.calls if len(p[0]) == 1)
    assert criteria_calls == 2  # one per distinct prompt, across 8 requests
    assert [len(p) for p, _ in backend.calls if len(p[0]) > 1] == [1, 7]  # the 7 waiting evaluations: one batch
    assert metric(metrics, "cerm_batch_requests_count") == 2  # 8 requests, 2 judge calls


# ---- faults ----------------------------------------------------------------------------------------
def test_malformed_and_invalid_json_is_422():
    client, _ = client_for()
    with client:
        bad = client.post("/get_reward", content=b"{not json", headers={"content-type": "application/json"})
        missing = client.post("/get_reward", json={"prompts": ["x"]})
        empty = client.post("/v1/score", json={"query": "  ", "responses": ["a"]})
        mismatch = client.post("/get_reward", json={"query": ["a", "b"], "prompts": ["a"]})
        split = client.post("/get_reward", json={"query": ["abc"], "prompts": ["zzz"]})
    assert assert_json_error(bad, 422, "invalid_request")["detail"][0]["loc"] == ["body"]
    assert assert_json_error(missing, 422, "invalid_request")["detail"][0]["loc"] == ["body", "query"]
    assert "query is empty" in assert_json_error(empty, 422, "invalid_request")["detail"]
    assert "'prompts' has 1 entries" in assert_json_error(mismatch, 422, "invalid_request")["detail"]
    assert "sample 0" in assert_json_error(split, 422, "split_error")["detail"]


def test_oversized_body_is_413_with_and_without_content_length():
    client, backend = client_for(max_body_bytes=1000)
    big = {"query": ["x" * 2000], "prompts": ["x"]}
    with client:
        r = client.post("/get_reward", json=big)
        chunked = client.post("/get_reward", content=iter([json.dumps(big).encode()[i:i + 500]
                                                           for i in range(0, 2100, 500)]),
                              headers={"content-type": "application/json"})
    assert_json_error(r, 413, "body_too_large")
    assert_json_error(chunked, 413, "body_too_large")
    assert backend.num_prompts == 0


def test_bearer_token_401():
    client, _ = client_for(token="s3cret")
    payload = {"query": "q", "responses": ["a"]}
    with client:
        missing = client.post("/v1/score", json=payload)
        wrong = client.post("/v1/score", json=payload, headers={"Authorization": "Bearer nope"})
        ok = client.post("/v1/score", json=payload, headers={"Authorization": "Bearer s3cret"})
        health = client.get("/health")
    assert_json_error(missing, 401, "unauthorized")
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert ok.status_code == 200 and health.status_code == 200


def test_backend_raising_is_502_never_a_reward():
    def script(messages, params):
        raise ConnectionError("vLLM server went away")

    client, _ = client_for(FakeBackend(script=script))
    with client:
        r = client.post("/get_reward", json={"query": ["P a"], "prompts": ["P"]})
        after = client.get("/health")
    assert "vLLM server went away" in assert_json_error(r, 502, "backend_error")["detail"]
    assert "rewards" not in r.json() and after.status_code == 200


def test_backend_error_generation_is_502():
    def script(messages, params):
        return CANNED_CRITERIA if len(messages) == 1 else Generation("", "error", error="HTTP 500 from upstream")

    client, _ = client_for(FakeBackend(script=script))
    with client:
        r = client.post("/v1/score", json={"query": "q", "responses": ["a", "b"]})
        metrics = client.get("/metrics").text
    assert "2 of 2 judgments failed in the backend: HTTP 500" in assert_json_error(r, 502, "backend_error")["detail"]
    # a backend error is not a parse failure (it used to be counted as both)
    assert metric(metrics, "cerm_backend_errors_total") == 2
    assert metric(metrics, "cerm_parse_failures_total") == 0


def test_get_reward_empty_batch_and_any_labels():
    """OpenRLHF 0.11.0 posts {"query": []} to the URLs beyond the batch's shards and passes the dataset's
    label column through (ints, nulls, dicts): both got 422, i.e. no reward for any sample."""
    client, backend = client_for()
    with client:
        empty = client.post("/get_reward", json={"query": [], "prompts": [], "labels": []})
        labelled = client.post("/get_reward", json={"query": ["P a", "P b", "P c"], "prompts": ["P"] * 3,
                                                    "labels": [3, None, {"answer": [1, 2]}]})
    assert empty.status_code == 200, empty.text
    assert empty.json()["rewards"] == [] and empty.json()["scores"] == []
    # the same extra_logs keys on every answer, an empty batch too (OpenRLHF logs them per step)
    assert empty.json()["extra_logs"] == dict.fromkeys(labelled.json()["extra_logs"], [])
    assert set(labelled.json()["extra_logs"]) == {"cerm_parse_fail", "cerm_off_grid", "cerm_injection_flagged",
                                                  "cerm_tokens_out"}
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["rewards"] == pytest.approx([hash_score(r) / 10 for r in ("a", "b", "c")])


def test_backend_timeout_is_504_and_server_recovers():
    release, done = threading.Event(), threading.Event()

    def script(messages, params):
        if len(messages) == 1 and "slow" in messages[0]["content"]:
            release.wait(20)  # the criteria turn of the slow query, held past the timeout
            done.set()
        return default_script(messages, params)

    client, _ = client_for(FakeBackend(script=script), timeout_s=1.0)
    with client:
        r = client.post("/v1/score", json={"query": "slow query", "responses": ["a"]})
        release.set()
        assert done.wait(10)
        fine = client.post("/v1/score", json={"query": "quick", "responses": ["a"]})
    assert "within 1 s" in assert_json_error(r, 504, "timeout")["detail"]
    assert fine.status_code == 200


def test_queue_full_is_429_with_retry_after(serve_app):
    gate, entered = threading.Event(), threading.Event()

    def script(messages, params):
        entered.set()
        gate.wait(10)
        return default_script(messages, params)

    app = create_app(Judge(FakeBackend(script=script)),
                     ServerConfig(batch=BatcherConfig(max_queue=1, window_s=0.0), retry_after_s=3))
    with serve_app(app) as srv:
        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            httpx.post(f"{srv.url}/v1/score", json={"query": f"q{i}", "responses": ["a"]}, timeout=20)))
            for i in range(2)]
        threads[0].start()  # the first is being judged (blocked) ...
        assert entered.wait(10)
        threads[1].start()  # ... the second fills the queue
        eventually(lambda: httpx.get(f"{srv.url}/health").json()["queue_depth"] == 1, what="the second queued")
        refused = httpx.post(f"{srv.url}/v1/score", json={"query": "q", "responses": ["a"]}, timeout=5)
        gate.set()
        for t in threads:
            t.join(20)
        metrics = httpx.get(f"{srv.url}/metrics").text
    assert_json_error(refused, 429, "queue_full")
    assert refused.headers["retry-after"] == "3"
    assert [r.status_code for r in results] == [200, 200]
    assert metric(metrics, "cerm_rejected_total", reason="queue_full") == 1


def test_client_disconnect_mid_request_keeps_server_up(serve_app):
    started = threading.Event()

    def script(messages, params):
        started.set()
        time.sleep(0.5)
        return default_script(messages, params)

    app = create_app(Judge(FakeBackend(script=script)))
    with serve_app(app) as srv:
        body = json.dumps({"query": "q", "responses": ["a"]}).encode()
        for _ in range(3):  # drop the connection while the judge is working
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert started.wait(5)
            sock.close()
        half = socket.create_connection(("127.0.0.1", srv.port))  # and one that never finishes its body
        half.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n{")
        half.close()
        time.sleep(1.0)
        assert httpx.get(f"{srv.url}/health").status_code == 200
        r = httpx.post(f"{srv.url}/v1/score", json={"query": "q2", "responses": ["b"]}, timeout=10)
        assert r.status_code == 200 and r.json()["scores"] == [hash_score("b")]


def test_graceful_shutdown_drains_in_flight_requests(serve_app):
    criteria_turns: list[int] = []  # one per request the judge has taken

    def script(messages, params):
        if len(messages) == 1:
            criteria_turns.append(1)
        time.sleep(0.3)
        return default_script(messages, params)

    app = create_app(Judge(FakeBackend(script=script)), ServerConfig(batch=BatcherConfig(window_s=0.0)))
    with serve_app(app) as srv:
        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            httpx.post(f"{srv.url}/v1/score", json={"query": f"q{i}", "responses": ["a"]}, timeout=20)))
            for i in range(3)]
        for t in threads:
            t.start()
        # every request inside: taken by the judge or waiting in the batcher's queue
        eventually(lambda: len(criteria_turns) + httpx.get(f"{srv.url}/health").json()["queue_depth"] >= 3,
                   what="all three requests inside")
        srv.stop()  # what SIGTERM does: stop accepting, finish in-flight requests, then drain the batcher
        for t in threads:
            t.join(20)
        assert [r.status_code for r in results] == [200, 200, 200]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.url}/health", timeout=2)


def test_unknown_route_and_unexpected_errors_are_json():
    class BrokenSplitter:
        def split(self, full, prompt=None):
            raise RuntimeError("splitter bug")

    client, _ = client_for(splitter=BrokenSplitter())  # type: ignore[arg-type]
    with TestClient(client.app, raise_server_exceptions=False) as c:
        missing = c.get("/nope")
        wrong_method = c.get("/get_reward")
        bug = c.post("/get_reward", json={"query": ["x"], "prompts": ["x"]})
        health = c.get("/health")
    assert_json_error(missing, 404, "not_found")
    assert_json_error(wrong_method, 405, "method_not_allowed")
    assert "splitter bug" in assert_json_error(bug, 500, "internal_error")["detail"]
    assert health.status_code == 200


def test_openapi_documents_every_route_with_its_models():
    client, _ = client_for()
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/get_reward", "/v1/score", "/v1/compare", "/v1/criteria", "/health", "/metrics"}
    reward = spec["paths"]["/get_reward"]["post"]  # served as a plain Starlette route, documented all the same
    body = reward["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["query"] and set(body["properties"]) == {"query", "prompts", "labels"}
    assert reward["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/RewardResponse")
    assert reward["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


def asgi_post(app, path: str, headers: list[tuple[bytes, bytes]], messages: list[dict]) -> list[dict]:
    """Drive the ASGI app by hand: what an HTTP client cannot send (a lying header, a vanished client)."""
    import asyncio

    sent: list[dict] = []
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "app": app}
    asyncio.run(app(scope, receive, send))
    return sent


def test_client_gone_while_sending_the_body_is_answered_and_judges_nothing():
    client, backend = client_for()
    sent = asgi_post(client.app, "/get_reward", [(b"content-type", b"application/json")], [])
    assert sent[0]["status"] == 400 and json.loads(sent[1]["body"])["error"] == "client_disconnected"
    assert backend.num_prompts == 0


def test_chunked_body_is_counted_even_with_a_small_content_length():
    client, backend = client_for(max_body_bytes=1000)
    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3
    sent = asgi_post(client.app, "/get_reward", [(b"content-length", b"10"), (b"transfer-encoding", b"chunked")], chunks)
    assert sent[0]["status"] == 413 and json.loads(sent[1]["body"])["error"] == "body_too_large"
    assert backend.num_prompts == 0


def test_server_config_is_checked():
    with pytest.raises(ValueError, match="scale 'centered'"):
        ServerConfig(scale="centered")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        ServerConfig(timeout_s=0)
