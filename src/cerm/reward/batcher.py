"""Dynamic batching in front of a blocking ``Judge``: one worker thread, a bounded queue.

Callers ``submit`` a request (one or more ``(query, responses)`` items) and get a
``concurrent.futures.Future``; coroutines call ``submit_async`` and get an ``asyncio.Future`` of their own
loop (the worker resolves all such futures of a batch with one thread-safe call per loop: one wake-up of the
event loop per batch instead of one per request). The worker takes the oldest request, keeps collecting
for up to ``window_s`` (or until ``max_batch_size`` responses), then calls ``judge.score_batch`` once for
the merged batch. ``score_batch`` deduplicates criteria by query, so requests for the same prompt that
arrive in one window share one criteria generation, and all evaluations go to the backend as one
batch (which is what a batching engine such as hf or vLLM needs to be fast).

A request larger than ``max_batch_size`` responses is judged in slices: after each slice it goes back to
the end of the queue, so the requests that arrived after it are judged between its slices instead of after
all of it (one bulk request of 10,000 samples no longer holds up a 1-sample one).

The judge is only ever called from the worker thread, so the event loop of a server stays free.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple

from cerm.judge import Judge
from cerm.types import Criteria, Query, ScoredItem

logger = logging.getLogger(__name__)


class BatchItem(NamedTuple):
    """One query with the responses to judge against its criteria (user-written criteria optional)."""

    query: Query
    responses: Sequence[str]
    criteria: Criteria | str | None = None


@dataclass(frozen=True)
class BatcherConfig:
    """Batching limits. ``max_batch_size=1`` judges one request at a time (the comparison baseline)."""

    max_batch_size: int = 64  # responses per judge call; one larger request still goes alone
    window_s: float = 0.005
    max_queue: int = 1024  # requests waiting; beyond it ``submit`` raises QueueFull

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size ({self.max_batch_size}) must be >= 1.")
        if self.window_s < 0:
            raise ValueError(f"window_s ({self.window_s}) must be >= 0.")
        if self.max_queue < 1:
            raise ValueError(f"max_queue ({self.max_queue}) must be >= 1.")


@dataclass(frozen=True)
class BatchReport:
    """What one judge call did, for metrics."""

    requests: int
    responses: int
    seconds: float
    scored: tuple[ScoredItem, ...]
    error: str | None = None


class QueueFull(RuntimeError):
    """The queue holds ``max_queue`` requests; the caller should retry later (HTTP 429)."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work (HTTP 503)."""


def slices(items: Sequence[BatchItem], max_responses: int) -> list[list[BatchItem]]:
    """Consecutive slices of at most ``max_responses`` responses; an item is never split (a larger one goes
    alone), so each query keeps its responses together under one criteria set.
    """
    out: list[list[BatchItem]] = []
    size = 0
    for item in items:
        if out and size + len(item.responses) <= max_responses:
            out[-1].append(item)
            size += len(item.responses)
        else:
            out.append([item])
            size = len(item.responses)
    return out


@dataclass
class _Request:
    parts: list[list[BatchItem]]  # the slices, judged one per turn
    future: Future | asyncio.Future
    loop: asyncio.AbstractEventLoop | None = None  # set for an asyncio future (resolved on its loop)
    done: list[ScoredItem] = field(default_factory=list)
    turn: int = 0  # the slice judged next

    @property
    def items(self) -> list[BatchItem]:
        """This turn's slice."""
        return self.parts[self.turn]

    @property
    def size(self) -> int:
        """Responses in this turn's slice."""
        return sum(len(i.responses) for i in self.parts[self.turn])

    def claim(self) -> bool:
        """False if the caller gave up (timeout, disconnect) before the work started: skip it."""
        if self.loop is None:
            if self.turn:  # started already: a concurrent future cannot be cancelled once running
                return True
            return self.future.set_running_or_notify_cancel()  # type: ignore[union-attr]
        return not self.future.cancelled()  # read from the worker thread: at worst a cancelled result is dropped


_STOP = object()


class DynamicBatcher:
    """Merge concurrent judge requests into few ``score_batch`` calls on one worker thread.

    Args:
        judge: the judge; only the worker thread calls it.
        config: batch size, window and queue bound.
        on_batch: called on the worker thread after every judge call (metrics).
    """

    def __init__(self, judge: Judge, config: BatcherConfig | None = None,
                 on_batch: Callable[[BatchReport], None] | None = None) -> None:
        self.judge = judge
        self.config = config or BatcherConfig()
        self.on_batch = on_batch
        # unbounded: the worker puts a large request's next slice back itself; ``max_queue`` is checked on submit
        self._queue: queue.Queue = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cerm-batcher", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Requests (or slices of large ones) waiting for the worker."""
        return self._queue.qsize()

    @property
    def is_closing(self) -> bool:
        """``close`` was called: queued work is being drained, new work is refused."""
        return self._closed.is_set()

    def submit(self, items: Sequence[BatchItem]) -> Future:
        """Queue one request; the future resolves to one ``ScoredItem`` per item, in order.

        Raises:
            QueueFull: ``max_queue`` requests are already waiting.
            BatcherClosed: ``close`` was called.
        """
        future: Future = Future()
        self._enqueue(_Request(slices(items, self.config.max_batch_size), future))
        return future

    def submit_async(self, items: Sequence[BatchItem]) -> asyncio.Future:
        """``submit`` for a coroutine: an ``asyncio.Future`` of the running loop (cancel it to give up)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue(_Request(slices(items, self.config.max_batch_size), future, loop))
        return future

    def _enqueue(self, request: _Request) -> _Request:
        if self._closed.is_set():
            raise BatcherClosed("the reward server is shutting down; retry on another replica.")
        if self._queue.qsize() >= self.config.max_queue:
            raise QueueFull(f"{self.config.max_queue} requests are already waiting")
        self._queue.put_nowait(request)
        return request

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking work, finish every queued request, then stop the worker."""
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(_STOP)  # after every queued request: they are drained first
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("batcher still busy after %.1f s; abandoning its queue", timeout_s)

    # ---- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                if self._queue.empty():
                    break
                self._queue.put_nowait(_STOP)  # slices of large requests were queued after it: those first
                continue
            batch = [first]
            size = first.size
            deadline = time.monotonic() + self.config.window_s
            while size < self.config.max_batch_size:
                # what is already queued joins at once; otherwise wait out the window. Read the clock once:
                # checking it and then computing the wait raced into a negative timeout (ValueError), which
                # killed this thread under load
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put_nowait(_STOP)  # back at the end: the batch and any next slices first
                    break
                if size + nxt.size > self.config.max_batch_size:
                    self._judge(batch)
                    batch, size = [], 0
                batch.append(nxt)
                size += nxt.size
            if batch:
                self._judge(batch)

    def _judge(self, batch: list[_Request]) -> None:
        # a client that gave up (timeout, disconnect) cancelled its future: skip its work
        live = [r for r in batch if r.claim()]
        if not live:
            return
        items = [item for r in live for item in r.items]
        start = time.perf_counter()
        try:
            scored = self.judge.score_batch([(i.query, i.responses) for i in items],
                                            criteria=[i.criteria for i in items])
        except Exception as e:
            logger.exception("judge call failed for %d requests", len(live))
            if len(live) > 1:
                # one bad request must never fail its batch-mates: judge each alone (finished work is cached)
                for r in live:
                    self._judge_alone(r)
                return
            _deliver([(r, None, e) for r in live])
            self._report(BatchReport(len(live), sum(r.size for r in live), time.perf_counter() - start, (),
                                     f"{type(e).__name__}: {e}"))
            return
        seconds = time.perf_counter() - start
        size = sum(r.size for r in live)
        finished, pos = [], 0
        for r in live:
            n = len(r.items)
            if self._advance(r, scored[pos:pos + n]):
                finished.append((r, r.done, None))
            pos += n
        _deliver(finished)
        self._report(BatchReport(len(live), size, seconds, tuple(scored)))

    def _judge_alone(self, r: _Request) -> None:
        start = time.perf_counter()
        try:
            scored = self.judge.score_batch([(i.query, i.responses) for i in r.items],
                                            criteria=[i.criteria for i in r.items])
        except Exception as e:  # noqa: BLE001 - this request's own failure, delivered to it alone
            _deliver([(r, None, e)])
            self._report(BatchReport(1, r.size, time.perf_counter() - start, (), f"{type(e).__name__}: {e}"))
            return
        size = r.size
        if self._advance(r, scored):
            _deliver([(r, r.done, None)])
        self._report(BatchReport(1, size, time.perf_counter() - start, tuple(scored)))

    def _advance(self, r: _Request, scored: list[ScoredItem]) -> bool:
        """Record a slice's results; True when the request is complete, else its next slice is queued last."""
        r.done.extend(scored)
        r.turn += 1
        if r.turn < len(r.parts):
            self._queue.put_nowait(r)  # behind whatever arrived meanwhile (before a _STOP: drained first)
            return False
        return True

    def _report(self, report: BatchReport) -> None:
        if self.on_batch is not None:
            self.on_batch(report)


def _deliver(outcomes: Sequence[tuple[_Request, list[ScoredItem] | None, BaseException | None]]) -> None:
    """Resolve futures: concurrent ones here, asyncio ones with one ``call_soon_threadsafe`` per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for request, result, error in outcomes:
        if request.loop is None:
            if error is None:
                request.future.set_result(result)
            else:
                request.future.set_exception(error)
        else:
            by_loop.setdefault(request.loop, []).append((request.future, result, error))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_on_loop, items)
        except RuntimeError:  # the loop closed while the batch ran: nobody is waiting any more
            logger.warning("event loop closed before %d results could be delivered", len(items))


def _resolve_on_loop(items: list[tuple[asyncio.Future, list[ScoredItem] | None, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():  # cancelled meanwhile (timeout, client gone)
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
