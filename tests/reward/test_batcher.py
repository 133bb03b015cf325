"""DynamicBatcher: merging, limits, queue bound, draining, cancellation and failures."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
from support import eventually

from cerm import Judge
from cerm.backends.base import Capabilities
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, default_script, hash_score
from cerm.reward.batcher import (
    BatcherClosed,
    BatcherConfig,
    BatchItem,
    BatchReport,
    DynamicBatcher,
    QueueFull,
)


class GatedBackend(FakeBackend):
    """FakeBackend whose first generate call blocks until ``gate`` is set, so requests pile up."""

    capabilities = Capabilities(readout=True)  # its generate takes no on_done

    def __init__(self, script=default_script) -> None:
        super().__init__(script=script)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def generate(self, prompts, params):
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        return super().generate(prompts, params)


def eval_batches(backend: FakeBackend) -> list[int]:
    """Sizes of the evaluation batches sent to the backend (criteria prompts have one message)."""
    return [len(p) for p, _ in backend.calls if len(p[0]) > 1]


def test_requests_waiting_together_are_merged_and_share_criteria():
    backend = GatedBackend()
    reports: list[BatchReport] = []
    batcher = DynamicBatcher(Judge(backend), BatcherConfig(window_s=0.0), on_batch=reports.append)
    first = batcher.submit([BatchItem("warm-up", ["x"])])
    assert backend.entered.wait(5)
    # while the worker is blocked, 6 requests for one prompt queue up; they must become one judge call
    futures = [batcher.submit([BatchItem("Why is the sky blue?", [f"answer {i}"])]) for i in range(6)]
    backend.gate.set()
    results = [f.result(5) for f in futures]
    first.result(5)
    batcher.close()
    assert [r[0].scores for r in results] == [[hash_score(f"answer {i}")] for i in range(6)]
    assert eval_batches(backend) == [1, 6]
    assert backend.num_prompts == 2 + 7  # 2 criteria generations (one per prompt) + 7 evaluations
    assert [(r.requests, r.responses) for r in reports] == [(1, 1), (6, 6)]


def test_max_batch_size_splits_batches():
    backend = GatedBackend()
    batcher = DynamicBatcher(Judge(backend), BatcherConfig(max_batch_size=4, window_s=0.0))
    first = batcher.submit([BatchItem("q", ["r"])])
    assert backend.entered.wait(5)
    futures = [batcher.submit([BatchItem("q", [f"a{i}", f"b{i}"])]) for i in range(4)]  # 8 responses
    backend.gate.set()
    for f in [first, *futures]:
        f.result(5)
    batcher.close()
    assert eval_batches(backend) == [1, 4, 4]


def test_window_collects_requests_that_arrive_later():
    backend = FakeBackend()
    batcher = DynamicBatcher(Judge(backend), BatcherConfig(window_s=1.0))  # room for a stall between the two
    a = batcher.submit([BatchItem("q", ["a"])])
    time.sleep(0.05)
    b = batcher.submit([BatchItem("q", ["b"])])
    a.result(5), b.result(5)
    batcher.close()
    assert eval_batches(backend) == [2]


def test_queue_full_raises_and_close_drains_then_refuses():
    backend = GatedBackend()
    batcher = DynamicBatcher(Judge(backend), BatcherConfig(max_queue=2, window_s=0.0))
    running = batcher.submit([BatchItem("q", ["r0"])])
    assert backend.entered.wait(5)
    queued = [batcher.submit([BatchItem("q", [f"r{i}"])]) for i in (1, 2)]
    with pytest.raises(QueueFull, match="2 requests are already waiting"):
        batcher.submit([BatchItem("q", ["r3"])])
    closer = threading.Thread(target=batcher.close, args=(10,))
    closer.start()
    eventually(lambda: batcher.is_closing, what="close called")
    with pytest.raises(BatcherClosed):
        batcher.submit([BatchItem("q", ["late"])])
    backend.gate.set()
    closer.join(10)
    # everything accepted before close was judged: draining, not dropping
    assert [f.result(0)[0].scores[0] for f in [running, *queued]] == [hash_score(f"r{i}") for i in range(3)]


def test_cancelled_request_is_skipped():
    backend = GatedBackend()
    batcher = DynamicBatcher(Judge(backend), BatcherConfig(window_s=0.0))
    first = batcher.submit([BatchItem("q", ["r"])])
    assert backend.entered.wait(5)
    gone = batcher.submit([BatchItem("q", ["client went away"])])
    kept = batcher.submit([BatchItem("q", ["kept"])])
    assert gone.cancel()
    backend.gate.set()
    first.result(5), kept.result(5)
    batcher.close()
    evaluated = [m[-1]["content"] for p, _ in backend.calls for m in p if len(m) > 1]
    assert not any("client went away" in e for e in evaluated)


def test_judge_exception_fails_only_that_batch_and_worker_survives():
    calls = {"n": 0}

    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory")
        return default_script(messages, params)

    reports: list[BatchReport] = []
    batcher = DynamicBatcher(Judge(FakeBackend(script=script)), on_batch=reports.append)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.submit([BatchItem("q", ["a"])]).result(5)
    assert batcher.submit([BatchItem("q", ["b"])]).result(5)[0].scores == [hash_score("b")]
    batcher.close()
    assert reports[0].error == "RuntimeError: CUDA out of memory" and reports[1].error is None


def test_items_of_one_request_keep_their_order_and_user_criteria():
    backend = FakeBackend()
    batcher = DynamicBatcher(Judge(backend))
    fut: Future = batcher.submit([BatchItem("q1", ["a", "b"]), BatchItem("q2", ["c"], "[My criteria]\n1. X: y")])
    first, second = fut.result(5)
    batcher.close()
    assert first.scores == [hash_score("a"), hash_score("b")] and second.scores == [hash_score("c")]
    assert second.criteria[0].source == "user"
    assert backend.num_prompts == 1 + 3  # only q1 needed generated criteria


def test_config_is_checked():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatcherConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue"):
        BatcherConfig(max_queue=0)


def test_submit_async_resolves_on_the_loop_and_skips_cancelled():
    """asyncio futures: results arrive on the caller's loop; one cancelled before its batch starts is skipped."""
    import asyncio

    backend = GatedBackend()
    batcher = DynamicBatcher(Judge(backend), BatcherConfig(window_s=0.0))

    async def main():
        first = batcher.submit_async([BatchItem("q", ["r"])])
        await asyncio.to_thread(backend.entered.wait, 5)
        gone = batcher.submit_async([BatchItem("q", ["client went away"])])
        kept = [batcher.submit_async([BatchItem("q", [f"kept {i}"])]) for i in range(3)]
        gone.cancel()
        backend.gate.set()
        return await asyncio.wait_for(asyncio.gather(first, *kept), 10), gone

    results, gone = asyncio.run(main())
    batcher.close()
    assert gone.cancelled()
    assert [r[0].scores for r in results[1:]] == [[hash_score(f"kept {i}")] for i in range(3)]
    assert eval_batches(backend) == [1, 3]  # the three kept requests: one batch, one loop wake-up
    evaluated = [m[-1]["content"] for p, _ in backend.calls for m in p if len(m) > 1]
    assert not any("client went away" in e for e in evaluated)
