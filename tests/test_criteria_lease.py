"""Criteria single flight across processes: judges sharing one SQLite file generate a prompt's criteria once.

Each ``Store`` opens its own SQLite connections, as separate processes do; tests/reward/test_openrlhf_real.py
runs the same with two real ``cerm serve`` processes.
"""

from __future__ import annotations

import threading
import time

from cerm import Judge, JudgeConfig
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
from cerm.cache import CriteriaCache, Store


def slow_criteria(calls: list[str], seconds: float = 0.5):
    def script(messages, params):
        if len(messages) == 1:
            calls.append(messages[0]["content"])
            time.sleep(seconds)
            return CANNED_CRITERIA
        return canned_evaluation(7)

    return script


def test_concurrent_misses_generate_criteria_once(tmp_path):
    """Fails without the lease: every judge missed the cache and generated the criteria itself."""
    calls: list[str] = []
    judges = [Judge(FakeBackend(script=slow_criteria(calls)), store=Store(tmp_path / "shared.sqlite"))
              for _ in range(3)]
    scores: list[float | None] = []
    threads = [threading.Thread(target=lambda j=j: scores.append(j.score("Why?", ["a"])[0].score)) for j in judges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert scores == [7.0, 7.0, 7.0]
    assert len(calls) == 1
    assert sum(j.stats.criteria_generated for j in judges) == 1
    assert sum(j.stats.criteria_cache_hits for j in judges) == 2
    assert sum(j.stats.criteria_lease_waits for j in judges) >= 1  # a late starter may simply hit the cache
    assert all("criteria_lease_waits" in j.stats.as_dict() for j in judges)


def test_a_dead_holders_lease_expires_and_the_waiter_generates(tmp_path):
    store = Store(tmp_path / "shared.sqlite")
    calls: list[str] = []
    judge = Judge(FakeBackend(script=slow_criteria(calls, 0.0)), JudgeConfig(criteria_lease_s=0.3), store)
    key = judge.criteria_key("Why?")
    assert CriteriaCache(Store(tmp_path / "shared.sqlite")).lease(key, "a process that died", 0.3)
    start = time.monotonic()
    assert judge.score("Why?", ["a"])[0].score == 7.0
    assert len(calls) == 1 and time.monotonic() - start >= 0.25
    assert store.execute("SELECT COUNT(*) FROM criteria_leases") == [(0,)]  # released after generating


def test_a_failed_generation_releases_the_lease_uncached(tmp_path):
    from cerm.types import Generation

    def broken(messages, params):
        return Generation("", "error", error="connection refused")

    store = Store(tmp_path / "shared.sqlite")
    judge = Judge(FakeBackend(script=broken), store=store)
    judge.score("Why?", ["a"])
    assert store.execute("SELECT COUNT(*) FROM criteria_leases") == [(0,)]
    assert store.execute("SELECT COUNT(*) FROM criteria") == [(0,)]
