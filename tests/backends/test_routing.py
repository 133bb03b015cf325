"""The openai pool's routing: a query's requests on one server, a dead server moving only its own keys, the
spill bound, and results that do not depend on the routing (real HTTP servers on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_test_server import Reply, ScriptedServer

from cerm import Judge, JudgeConfig
from cerm.backends.openai import OpenAIBackend
from cerm.backends.routing import PoolRouter, affinity_key, rendezvous
from cerm.prompts import criteria_messages, evaluation_messages

URLS = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]
KEYS = [affinity_key(criteria_messages(f"query {i}")) for i in range(400)]


def test_a_querys_criteria_turn_and_evaluations_share_one_key():
    key = affinity_key(criteria_messages("What is 2+2?"))
    assert key == affinity_key(evaluation_messages("What is 2+2?", "1. Correct", "4"))
    assert key != affinity_key(criteria_messages("What is 2+3?"))
    assert affinity_key([{"role": "system", "content": "be terse"}]) is None  # no user message: least-loaded


def test_rendezvous_spreads_keys_and_a_dead_server_moves_only_its_own():
    before = {k: rendezvous(k, URLS) for k in KEYS}
    shares = [list(before.values()).count(u) / len(KEYS) for u in URLS]
    assert min(shares) > 0.15 and max(shares) < 0.35, shares  # 400 keys over 4 servers: each near 25%
    after = {k: rendezvous(k, URLS[:2] + URLS[3:]) for k in KEYS}  # server 3 down
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == URLS[2] for k in moved)
    assert all(after[k] == before[k] for k in KEYS if before[k] != URLS[2])


def test_the_preferred_server_spills_to_the_least_loaded_when_it_is_the_bound_ahead():
    router = PoolRouter(URLS[:2], spill_above=2)
    key = KEYS[0]
    home = router.pick(key)
    other = next(u for u in URLS[:2] if u != home)
    for _ in range(2):
        assert router.pick(key) == home
        router.start(home)
    assert router.pick(key) == other and router.spilled == 1  # home is 2 ahead of an idle server
    router.start(other)
    assert router.pick(key) == home  # 2 vs 1: within the bound, the group stays home
    router.finish(home)
    assert router.pick(key) == home
    assert router.pick(key, avoid=home) == other  # a retry leaves the server that just failed
    assert PoolRouter(URLS, concurrency_limit=16).spill_above == 16  # a group is not split for balance alone
    with pytest.raises(ValueError, match="routing"):
        PoolRouter(URLS, routing="random")
    with pytest.raises(ValueError, match="spill_above"):
        PoolRouter(URLS, spill_above=0)


def test_least_loaded_ignores_the_key():
    router = PoolRouter(URLS[:2], routing="least-loaded")
    picked = []
    for _ in range(4):
        url = router.pick(KEYS[0])
        router.start(url)
        picked.append(url)
    assert sorted(picked) == sorted(URLS[:2] * 2) and router.spilled == 0


@pytest.fixture(scope="module")
def pool() -> Iterator[list[ScriptedServer]]:
    servers = [ScriptedServer().start() for _ in range(3)]
    yield servers
    for s in servers:
        s.stop()


def _judge_pool(pool: list[ScriptedServer], **kwargs) -> tuple[list[list[float | None]], list[ScriptedServer]]:
    """Score 6 queries x 4 responses through the pool; the scores and, per server, what it received."""
    for s in pool:
        s.reset(lambda req, i: Reply(delay_s=0.01))
    queries = [f"Question number {i}: what is {i} + {i}?" for i in range(6)]
    responses = [f"It is {k}." for k in range(4)]
    with OpenAIBackend("test-model", [s.url for s in pool], concurrency_limit=12, backoff_base_s=0.01,
                       **kwargs) as backend:
        judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=64, eval_max_new_tokens=64))
        scores = [[j.score for j in item.judgments] for item in judge.score_batch([(q, responses) for q in queries])]
        assert sum(backend.router.requests.values()) == 6 * 5
    return scores, pool


def _servers_per_query(pool: list[ScriptedServer]) -> dict[str, set[int]]:
    """first user message -> the servers that received a request carrying it."""
    seen: dict[str, set[int]] = {}
    for i, s in enumerate(pool):
        for r in s.requests:
            seen.setdefault(r["messages"][0]["content"], set()).add(i)
    return seen


@pytest.mark.slow  # starts HTTP servers
def test_affine_routing_keeps_each_query_on_one_server_and_changes_no_result(pool):
    affine, _ = _judge_pool(pool, routing="affine", spill_above=100)
    per_query = _servers_per_query(pool)
    assert len(per_query) == 6 and all(len(servers) == 1 for servers in per_query.values()), per_query
    urls = [s.url for s in pool]  # ... the one rendezvous hashing names for it
    assert all(servers == {urls.index(rendezvous(affinity_key([{"role": "user", "content": first}]), urls))}
               for first, servers in per_query.items())
    spread, _ = _judge_pool(pool, routing="least-loaded")
    assert any(len(servers) > 1 for servers in _servers_per_query(pool).values())  # least-loaded splits groups
    assert affine == spread and all(s is not None for row in affine for s in row)


@pytest.mark.slow  # starts HTTP servers
def test_the_cli_flag_reaches_the_pool(pool):
    from typer.testing import CliRunner

    from cerm.cli import app
    from cerm.cli.common import JudgeOptions

    urls = [s.url for s in pool]
    for routing in ("affine", "least-loaded"):
        opts = JudgeOptions(backend="openai", model="test-model", base_url=urls, routing=routing)
        with opts.backend_options().build() as backend:
            assert backend.router.routing == routing and backend.router.urls == urls
    out = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"}).output
    assert "--routing" in out and "least-loaded" in out and "spill_above" in out
