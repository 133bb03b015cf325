"""Two real `cerm serve` replicas on one real redis-server (issue 26 items 2-3 and its "Measure" line).

Both judge through a slow OpenAI-compatible stand-in in this process, which logs every criteria call.
Concurrent requests for the same prompts on both replicas generate each prompt's criteria exactly once in
total; a replica killed (SIGKILL) while holding a criteria lease delays the other by at most the lease TTL
when it ran on another host (here: its own UTS namespace, so its lease names another host name), and not
at all when it ran on this host (the survivor sees the holder's process is gone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from judge_standin import JudgeStandIn
from prometheus_client.parser import text_string_to_metric_families
from support import free_port

from cerm.cache.store import LEASE_TTL_S, RENEWALS_PER_TTL

ROOT = Path(__file__).resolve().parents[2]
CERM = [sys.executable, "-c", "from cerm.cli import main; main()"]
PROMPTS = [f"Prompt {i}: explain why the sea is salty." for i in range(4)]


@contextmanager
def replica(judge_url: str, cache: str, *, hostname: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """One ``cerm serve`` process; ``hostname`` runs it in a UTS namespace of its own under that name."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [*CERM, "serve", "--backend", "openai", "--model", "judge", "--base-url", judge_url, "--cache", cache,
           "--port", str(port), "--log-level", "warning", "--batch-window-ms", "1"]
    if hostname is not None:
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *cmd]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"cerm serve exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "cerm serve did not start"
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(60)


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def score(url: str, prompt: str, response: str = "Rivers carry dissolved minerals.") -> dict:
    r = httpx.post(f"{url}/v1/score", json={"query": prompt, "responses": [response]}, timeout=170)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def standin():
    server = JudgeStandIn(criteria_s=1.5, evaluation_s=0.1).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_two_replicas_on_one_redis_generate_each_prompt_s_criteria_once(standin, redis_url):
    with replica(standin.url, redis_url) as (a, _), replica(standin.url, redis_url) as (b, _):
        # every prompt asked of both replicas at once, twice each: 16 concurrent requests, 4 distinct prompts
        jobs = [(url, p, f"answer {k}") for p in PROMPTS for url in (a, b) for k in range(2)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            replies = list(pool.map(lambda job: score(*job), jobs))
        assert all(r["scores"] == [7.0] for r in replies)
        per_prompt = {p: len(standin.of("criteria", p)) for p in PROMPTS}
        assert per_prompt == dict.fromkeys(PROMPTS, 1)  # fails on two SQLite files: two per prompt
        generated = {u: metric(u, "cerm_criteria_generated_total") for u in (a, b)}
        assert sum(generated.values()) == len(PROMPTS), generated
        assert sum(metric(u, "cerm_criteria_lease_waits") for u in (a, b)) >= 1


def _doomed_request(url: str) -> None:
    try:
        httpx.post(f"{url}/v1/score", timeout=170, json={"query": PROMPTS[0], "responses": ["x"]})
    except httpx.HTTPError:  # its server is killed mid-request: no answer is the point
        pass


def _kill_while_holding(standin: JudgeStandIn, redis_url: str, hostname: str | None) -> float:
    """Seconds from SIGKILL of the replica holding the lease on PROMPTS[0] to the survivor's criteria call."""
    with replica(standin.url, redis_url) as (survivor, _):
        with replica(standin.url, redis_url, hostname=hostname) as (doomed, proc):
            threading.Thread(target=_doomed_request, args=(doomed,), daemon=True).start()
            deadline = time.monotonic() + 60
            while not standin.of("criteria", PROMPTS[0]):  # its criteria call is in flight: it holds the lease
                assert time.monotonic() < deadline, "the doomed replica never asked for criteria"
                time.sleep(0.01)
            proc.kill()  # SIGKILL to the replica (under unshare it is exec'd: the same process)
            killed = time.monotonic()
            proc.wait(30)
        reply = score(survivor, PROMPTS[0])
        assert reply["scores"] == [7.0]
        calls = standin.of("criteria", PROMPTS[0])
        assert len(calls) == 2  # the killed replica's, then the survivor's
        return calls[1].at - killed


@pytest.mark.slow
def test_a_replica_killed_on_another_host_delays_the_other_by_at_most_the_lease_ttl(standin, redis_url):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("a second host name needs root and unshare (util-linux); CI runs as root")
    gap = _kill_while_holding(standin, redis_url, hostname="replica-on-another-host")
    print(f"replica killed on another host: the survivor generated the criteria {gap:.2f} s after the kill")
    # The lease expires TTL (5 s) after its last renewal, which came at most one renewal interval (1 s)
    # before the kill when the renewer is on time: 4-5 s after the kill. Upper bound: TTL, then the
    # survivor's 20 ms poll and one local request; 3 s covers that on a loaded 2-core machine (without
    # expiry it would wait its 150 s wait bound). Lower bound 1 s: below it the renewer would have slept
    # 3 s past its time, close to losing the lease; a take-over at once (the bug this guards) is ~0.05 s.
    assert 1.0 <= gap <= LEASE_TTL_S + 3


@pytest.mark.slow
def test_a_replica_killed_on_this_host_is_taken_over_at_once(standin, redis_url):
    gap = _kill_while_holding(standin, redis_url, hostname=None)
    print(f"replica killed on this host: the survivor generated the criteria {gap:.2f} s after the kill")
    # no wait for the lease: the survivor's request and one lease take-over; honouring the lease would cost
    # at least TTL - one renewal interval (4 s)
    assert gap < LEASE_TTL_S - LEASE_TTL_S / RENEWALS_PER_TTL
