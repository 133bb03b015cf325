"""The judge's async core: a query's evaluations start the moment its own criteria exist, criteria can be
fetched ahead, single flight across callers, and the same outputs as a batch-at-a-time schedule.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cerm import Judge, JudgeConfig, Store
from cerm.backends.base import Capabilities
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, FakeStreamingBackend, default_script, hash_score
from cerm.engine import CollectingEngine, StreamingEngine
from cerm.parsing import parse_judgment
from cerm.prompts import criteria_messages, evaluation_messages


def is_criteria(messages) -> bool:
    return len(messages) == 1


def test_each_querys_evaluations_start_when_its_own_criteria_exist():
    """A slow criteria turn (query "slow") must not hold up the evaluations of a fast one."""
    log: list[tuple[str, float]] = []
    start = time.monotonic()

    def latency(messages, params):
        if is_criteria(messages):
            return 2.0 if "slow" in messages[0]["content"] else 0.05  # ~0.1 s for the fast query's whole path
        return 0.05

    class Logging(FakeStreamingBackend):
        def _run(self, messages, params):
            kind = "criteria" if is_criteria(messages) else "evaluation"
            which = "slow" if "slow" in messages[0]["content"] else "fast"  # the query is in the first turn
            log.append((f"{kind}:{which}", time.monotonic() - start))
            return super()._run(messages, params)

    judge = Judge(Logging(latency_s=latency))
    items = judge.score_batch([("the slow query", ["a", "b"]), ("the fast query", ["c", "d"])])
    assert [i.scores for i in items] == [[hash_score("a"), hash_score("b")], [hash_score("c"), hash_score("d")]]
    when = {k: t for k, t in log}
    # the fast query was fully judged while the slow one's criteria were still being written
    assert when["evaluation:fast"] < when["criteria:slow"]
    assert [k for k, _ in log].count("criteria:slow") == 1


def test_collecting_engine_keeps_batch_at_a_time_for_engines_without_a_scheduler():
    backend = FakeBackend()
    judge = Judge(backend)
    assert isinstance(judge._engine, CollectingEngine)
    assert isinstance(Judge(FakeStreamingBackend())._engine, StreamingEngine)
    judge.score_batch([("q1", ["a", "b"]), ("q2", ["c"]), ("q3", ["d", "e", "f"])])
    # every criteria turn in one backend call, then every evaluation in one: the largest batches
    assert [len(p) for p, _ in backend.calls] == [3, 6]


def test_streaming_and_collecting_cores_give_the_same_judgments():
    items = [(f"query {q}", [f"response {q}.{r}" for r in range(3)]) for q in range(4)]
    a = Judge(FakeBackend()).score_batch(items)
    b = Judge(FakeStreamingBackend(latency_s=lambda m, p: 0.001 * len(m[-1]["content"]) % 0.01)).score_batch(items)
    assert a == b


def test_prefetch_returns_at_once_and_is_single_flight_with_a_score():
    gate = threading.Event()

    def script(messages, params):
        if is_criteria(messages):
            assert gate.wait(10)
        return default_script(messages, params)

    backend = FakeStreamingBackend(script=script)
    judge = Judge(backend)
    t0 = time.monotonic()
    future = judge.prefetch(["q1", "q2"])
    assert time.monotonic() - t0 < 5 and not future.done()  # generated in the background (held up to 10 s)
    scoring = threading.Thread(target=lambda: judge.score("q1", ["a"]))
    scoring.start()
    time.sleep(0.2)
    gate.set()
    scoring.join(10)
    crits = future.result(10)
    assert [c.source for c in crits] == ["generated", "generated"]
    assert sum(is_criteria(p[0]) for p, _ in backend.calls) == 2  # q1 once, although two callers wanted it
    assert judge.stats.criteria_generated == 2
    judge.score("q2", ["b"])  # prefetched: only the evaluation runs now
    assert sum(is_criteria(p[0]) for p, _ in backend.calls) == 2 and judge.stats.criteria_cache_hits >= 1


def test_prefetch_refuses_the_ablation_and_empty_queries():
    judge = Judge(FakeBackend(), JudgeConfig(unified_criteria=False))
    with pytest.raises(ValueError, match="unified criteria"):
        judge.prefetch(["q"])
    with pytest.raises(ValueError, match="empty"):
        Judge(FakeBackend()).prefetch(["  "])


def test_async_api_from_a_callers_own_event_loop():
    judge = Judge(FakeStreamingBackend())

    async def main():
        items, crit = await asyncio.gather(judge.ascore_batch([("q", ["a", "b"])]), judge.acriteria("q"))
        return items, crit

    items, crit = asyncio.run(main())
    assert items[0].scores == [hash_score("a"), hash_score("b")] and crit.text == CANNED_CRITERIA


def test_a_blocking_call_on_the_judge_loop_is_refused_not_a_deadlock():
    judge = Judge(FakeBackend())
    seen: list[BaseException] = []

    def script(messages, params):
        return default_script(messages, params)

    class Reentrant(FakeStreamingBackend):
        async def agenerate(self, prompts, params):
            try:
                judge.score("q", ["a"])  # on the judge loop: must raise, not hang
            except RuntimeError as e:
                seen.append(e)
            return await super().agenerate(prompts, params)

    Judge(Reentrant(script=script)).score("other", ["b"])
    assert seen and "judge's own event loop" in str(seen[0])


def test_criteria_are_stored_as_each_completes_so_a_kill_loses_only_what_was_in_flight(tmp_path):
    class Killed(BaseException):
        pass

    done = {"n": 0}

    def dies_on_the_third_criteria(messages, params):
        if is_criteria(messages):
            done["n"] += 1
            if done["n"] == 3:
                raise Killed
        return default_script(messages, params)

    store = tmp_path / "c.sqlite"
    with pytest.raises(Killed):
        Judge(FakeBackend(script=dies_on_the_third_criteria), store=Store(store)).score_batch(
            [(f"q{i}", ["a"]) for i in range(4)])  # one backend call of 4 criteria turns, killed inside it
    again = FakeBackend()
    judge = Judge(again, store=Store(store))
    judge.score_batch([(f"q{i}", ["a"]) for i in range(4)])
    assert judge.stats.criteria_cache_hits == 2 and judge.stats.criteria_generated == 2


def test_failed_criteria_are_counted_as_failed_not_generated():
    from cerm.types import Generation

    def down(messages, params):
        return Generation("", "error", error="connection refused") if is_criteria(messages) else "x"

    judge = Judge(FakeBackend(script=down))
    (j,) = judge.score("q", ["a"])
    assert j.status.value == "backend_error"
    assert judge.stats.criteria_generated == 0 and judge.stats.criteria_failed == 1


def test_greedy_outputs_equal_a_batch_at_a_time_schedule_on_hf(tiny_model_dir):
    """The judge on hf (the collector) against the old batch-synchronous core written out by hand: every
    criteria turn in one generate call, then every evaluation in one, parsed the same way.
    """
    from cerm.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), batch_size=4)
    cfg = JudgeConfig(criteria_max_new_tokens=12, eval_max_new_tokens=12)
    items = [("What is 2+2?", ["4", "five", "22"]), ("Name a colour.", ["blue", "red"]),
             ("Say hi.", ["hi", "hello there", "yo"])]
    got = Judge(backend, cfg).score_batch(items)

    crits = backend.generate([criteria_messages(q) for q, _ in items], cfg.criteria_params(0))
    prompts = [evaluation_messages(q, c.text, r) for (q, rs), c in zip(items, crits) for r in rs]
    evals = iter(backend.generate(prompts, cfg.eval_params(0)))
    for item, c in zip(got, crits):
        assert item.criteria[0].text == c.text
        for j in item.judgments:
            e = next(evals)
            p = parse_judgment(e.text, e.finish_reason)
            assert (j.text, j.score, j.status, j.tokens_out) == (e.text, p.score, p.status, e.tokens_out)


def test_a_backend_declaring_nothing_is_fed_plain_batches():
    class Minimal:
        model_id = "minimal"
        context_length = None

        def __init__(self):
            self.inner = FakeBackend()

        def generate(self, prompts, params):  # no on_done, no read_at: none declared
            return self.inner.generate(prompts, params)

        def count_tokens(self, messages):
            return None

        def close(self):
            pass

    judge = Judge(Minimal())
    assert judge.score("q", ["a"])[0].score == hash_score("a")
    assert Capabilities() == getattr(Minimal(), "capabilities", Capabilities())
