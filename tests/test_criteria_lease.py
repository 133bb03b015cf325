"""Criteria single flight across processes, on both stores (a SQLite file, a real redis-server).

Judges sharing one store generate a prompt's criteria once; a lease names its holder (host, pid, process
start), is renewed while the holder works, taken over at once when its holder is gone from this host, and
expires by itself when a holder on another host stops renewing. Each ``Store`` opens its own connections,
as separate processes do; tests/cli/test_interrupt.py kills real ``cerm score`` processes,
tests/reward/test_replicas_redis.py runs two real ``cerm serve`` replicas on one Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from cerm import Judge, JudgeConfig
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
from cerm.cache import CriteriaCache, Store, new_holder_id, release_all_leases
from cerm.cache.holder import Holder, is_gone, parse_holder
from cerm.types import Generation


def slow_criteria(calls: list[str], seconds: float = 0.5):
    def script(messages, params):
        if len(messages) == 1:
            calls.append(messages[0]["content"])
            time.sleep(seconds)
            return CANNED_CRITERIA
        return canned_evaluation(7)

    return script


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request, tmp_path):
    """Opens a new connection to one shared store, as another process would: ``open_store(lease_ttl_s=...)``."""
    target = str(tmp_path / "shared.sqlite") if request.param == "sqlite" else request.getfixturevalue("redis_url")
    opened: list[Store] = []

    def make(**options) -> Store:
        opened.append(Store(target, **options))
        return opened[-1]

    make.target = target  # type: ignore[attr-defined]
    yield make
    for s in opened:
        s.close()


def other_host_holder() -> str:
    """A holder id of a process on another host: only its lease's expiry can tell it is gone."""
    return str(Holder("another-host", "boot", 4242, "123", "token"))


def test_concurrent_misses_generate_criteria_once(open_store):
    """Fails without the lease: every judge missed the cache and generated the criteria itself."""
    calls: list[str] = []
    judges = [Judge(FakeBackend(script=slow_criteria(calls)), store=open_store()) for _ in range(3)]
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


def test_a_crashed_holder_on_another_host_delays_the_waiter_by_at_most_the_ttl(open_store):
    """The lease such a holder leaves (taken, never renewed) expires after the store's TTL; then we generate."""
    ttl = 0.5
    store = open_store(lease_ttl_s=ttl)
    calls: list[str] = []
    judge = Judge(FakeBackend(script=slow_criteria(calls, 0.0)), JudgeConfig(), store)
    key = judge.criteria_key("Why?")
    start = time.monotonic()  # before the lease is taken: a stall in between cannot shorten what we measure
    assert open_store()._take_lease(key, other_host_holder(), ttl) == other_host_holder()
    assert judge.score("Why?", ["a"])[0].score == 7.0
    waited = time.monotonic() - start
    # at least the lease's life (minus the poll); the upper bound is the hang detector of a lease
    # that never expires (criteria_lease_s = 150 s would be the fallback)
    assert len(calls) == 1 and ttl - 0.1 <= waited < ttl + 10
    assert store.lease_holder(key) is None  # released after generating


def test_a_dead_holder_on_this_host_is_taken_over_at_once(open_store):
    """A real process takes a lease and dies by SIGKILL (no release); the waiter does not wait for its TTL."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        from cerm.cache import Store, new_holder_id
        store = Store({open_store.target!r}, lease_ttl_s=60.0)
        assert store.lease(sys.argv[1], new_holder_id())
        print("held", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    calls: list[str] = []
    judge = Judge(FakeBackend(script=slow_criteria(calls, 0.0)), JudgeConfig(), open_store())
    key = judge.criteria_key("Why?")
    proc = subprocess.run([sys.executable, "-c", code, key], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9 and proc.stdout == "held\n", proc.stderr
    holder = open_store().lease_holder(key)
    assert holder is not None and is_gone(holder)
    start = time.monotonic()
    assert judge.score("Why?", ["a"])[0].score == 7.0
    # its lease has 60 s left: anything below that is a take-over; 10 s leaves the poll and a busy machine room
    assert len(calls) == 1 and time.monotonic() - start < 10


def test_a_live_holder_keeps_its_lease_by_renewal(open_store):
    ttl = 2.0  # renewed every 0.4 s: it is lost only if the renewer sleeps 1.6 s past its time
    holder_store, other = open_store(lease_ttl_s=ttl), open_store(lease_ttl_s=ttl)
    me = new_holder_id()
    assert holder_store.lease("k", me)
    time.sleep(ttl * 2)  # two lifetimes: only renewals keep it
    assert not other.lease("k", new_holder_id())
    assert other.lease_holder("k") == me
    holder_store.release("k", me)
    assert other.lease("k", new_holder_id())


def test_a_hung_live_holder_is_waited_for_at_most_the_wait_bound(open_store):
    # renewed every 0.6 s: a renewer late by 2.4 s would let it expire before the 1 s wait bound
    holder_store = open_store(lease_ttl_s=3.0)
    calls: list[str] = []
    judge = Judge(FakeBackend(script=slow_criteria(calls, 0.0)), JudgeConfig(criteria_lease_s=1.0), open_store())
    key = judge.criteria_key("Why?")
    assert holder_store.lease(key, new_holder_id())  # held and renewed, never finished
    start = time.monotonic()
    assert judge.score("Why?", ["a"])[0].score == 7.0
    assert len(calls) == 1 and 0.9 <= time.monotonic() - start < 11  # the bound, then we generate


def test_release_all_leases_frees_this_process_s_leases(open_store):
    store, other = open_store(), open_store()
    assert store.lease("a", new_holder_id()) and store.lease("b", new_holder_id())
    assert release_all_leases() >= 2
    assert store.held_leases() == {} and other.lease_holder("a") is None and other.lease_holder("b") is None


def test_a_failed_generation_releases_the_lease_uncached(open_store):
    def broken(messages, params):
        return Generation("", "error", error="connection refused")

    store = open_store()
    judge = Judge(FakeBackend(script=broken), store=store)
    judge.score("Why?", ["a"])
    key = judge.criteria_key("Why?")
    assert store.lease_holder(key) is None and store.get_criteria(key) is None
    assert store.held_leases() == {}


def test_holder_liveness():
    me = parse_holder(new_holder_id())
    assert me is not None and me.pid == os.getpid() and not is_gone(str(me))
    assert is_gone(str(Holder(me.host, me.boot, me.pid, "1", "t")))  # our pid, another start: a reused pid
    assert is_gone(str(Holder(me.host, "another-boot", me.pid, me.start, "t")))  # the host rebooted since
    assert not is_gone(other_host_holder()) and not is_gone("an id of another form")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert is_gone(str(Holder(me.host, me.boot, dead.pid, "", "t")))


def test_the_sqlite_lease_table_is_empty_after_a_run(tmp_path):
    store = Store(tmp_path / "shared.sqlite")
    Judge(FakeBackend(), store=store).score("Why?", ["a"])
    assert store.execute("SELECT COUNT(*) FROM criteria_leases") == [(0,)]
    assert CriteriaCache(store).records()
