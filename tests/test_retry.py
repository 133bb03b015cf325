"""The one retry policy (cerm.retry) behind the OpenAI backend and the reward client."""

from __future__ import annotations

import asyncio
import random

import pytest

from cerm.retry import Backoff, Retryable, parse_retry_after


def test_delays_double_with_a_cap_and_retry_after_wins():
    b = Backoff(5, base_s=1.0, max_s=5.0)
    assert [b.delay_s(a) for a in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert b.delay_s(0, retry_after_s=3.0) == 3.0
    assert b.delay_s(0, retry_after_s=99.0) == 5.0 and b.delay_s(0, retry_after_s=-4.0) == 0.0
    jittered = Backoff(5, base_s=1.0, max_s=5.0, rng=random.Random(0))
    assert all(2.0 <= jittered.delay_s(2) <= 4.0 for _ in range(50))
    with pytest.raises(ValueError, match="tries"):
        Backoff(0)


def _flaky(fail_times: int, calls: list[int]):
    def once() -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise Retryable(f"try {len(calls)} failed", retry_after_s=0.0)
        return "ok"
    return once


def test_sync_and_async_share_the_policy():
    b = Backoff(3, base_s=0.0)
    calls: list[int] = []
    once = _flaky(2, calls)
    for attempt in b.retrying():
        with attempt:
            result = once()
    assert (result, len(calls)) == ("ok", 3)

    async def run(fail_times: int) -> tuple[str, int]:
        calls: list[int] = []
        once = _flaky(fail_times, calls)
        async for attempt in b.aretrying():
            with attempt:
                return once(), len(calls)
        raise AssertionError("unreachable")

    assert asyncio.run(run(2)) == ("ok", 3)
    with pytest.raises(Retryable, match="try 3 failed"):  # out of tries: the last error, not a result
        asyncio.run(run(3))


def test_other_errors_stop_at_once():
    calls: list[int] = []
    with pytest.raises(KeyError):
        for attempt in Backoff(5, base_s=0.0).retrying():
            with attempt:
                calls.append(1)
                raise KeyError("fatal")
    assert len(calls) == 1


def test_parse_retry_after():
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 0  # a date in the past: no wait
