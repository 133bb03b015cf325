"""How a request reaches the judge: straight on, or through the dynamic batcher.

An engine that schedules requests itself (``Capabilities.streaming``: vLLM's async engine, an OpenAI-compatible
pool) gets each request the moment it arrives (``DirectDispatch``): no batch window, the engine batches
continuously. An engine that takes whole batches (hf, llama.cpp, the offline vLLM ``LLM``) is fed by the
``DynamicBatcher``, which merges the requests of a short window into one judge call (``BatchedDispatch``).
Both bound the work waiting (429 beyond it), judge a large request in slices so small ones interleave with
it, report each judge call for the metrics, and drain at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from cerm.backends.base import capabilities
from cerm.judge import Judge
from cerm.reward.batcher import (
    BatcherClosed,
    BatcherConfig,
    BatchItem,
    BatchReport,
    DynamicBatcher,
    QueueFull,
    slices,
)
from cerm.types import ScoredItem


class Dispatch(Protocol):
    """The server's way to the judge."""

    @property
    def queue_depth(self) -> int:
        """Requests waiting (batcher) or being judged (direct)."""
        ...

    @property
    def is_closing(self) -> bool:
        """Shutting down: new work is refused, what was accepted finishes."""
        ...

    def submit(self, items: Sequence[BatchItem]) -> Awaitable[list[ScoredItem]]:
        """Accept one request; raises ``QueueFull`` or ``BatcherClosed`` at once."""
        ...

    async def close(self, timeout_s: float) -> None:
        """Refuse new work and wait (up to ``timeout_s``) for the accepted work."""
        ...


class BatchedDispatch:
    """The dynamic batcher's worker thread in front of a judge whose engine takes whole batches."""

    def __init__(self, judge: Judge, config: BatcherConfig, on_batch: Callable[[BatchReport], None]) -> None:
        self.batcher = DynamicBatcher(judge, config, on_batch=on_batch)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the batcher's worker."""
        return self.batcher.queue_depth

    @property
    def is_closing(self) -> bool:
        """The batcher is draining."""
        return self.batcher.is_closing

    def submit(self, items: Sequence[BatchItem]) -> Awaitable[list[ScoredItem]]:
        """Queue the request for the next batch."""
        return self.batcher.submit_async(items)

    async def close(self, timeout_s: float) -> None:
        """Drain the batcher's queue (its worker thread), up to ``timeout_s``."""
        await asyncio.to_thread(self.batcher.close, timeout_s)


class DirectDispatch:
    """Each request straight to the judge's async core; the engine's scheduler does the batching.

    At most ``config.max_queue`` requests are judged at once (429 beyond). A request is judged in slices of
    at most ``config.max_batch_size`` responses, one after the other, so one bulk request has at most one
    slice in the engine at a time and the requests that arrive after it are not queued behind all of it.
    A caller that gives up (timeout, client gone) does not stop its request: it finishes and is cached, so
    the client's retry is cheap.
    """

    def __init__(self, judge: Judge, config: BatcherConfig, on_batch: Callable[[BatchReport], None]) -> None:
        self.judge = judge
        self.config = config
        self.on_batch = on_batch
        self._running: set[asyncio.Task] = set()
        self._closing = False
        self._idle: asyncio.Event | None = None

    @property
    def queue_depth(self) -> int:
        """Requests being judged."""
        return len(self._running)

    @property
    def is_closing(self) -> bool:
        """Shutting down."""
        return self._closing

    def submit(self, items: Sequence[BatchItem]) -> Awaitable[list[ScoredItem]]:
        """Start judging the request now; the awaitable is shielded (giving up does not stop it)."""
        if self._closing:
            raise BatcherClosed("the reward server is shutting down; retry on another replica.")
        if len(self._running) >= self.config.max_queue:
            raise QueueFull(f"{self.config.max_queue} requests are already being judged")
        task = asyncio.get_running_loop().create_task(self._judge(list(items)))
        self._running.add(task)
        task.add_done_callback(self._finished)
        return asyncio.shield(task)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up must not leave it "never retrieved"
        if not self._running and self._idle is not None:
            self._idle.set()

    async def _judge(self, items: list[BatchItem]) -> list[ScoredItem]:
        out: list[ScoredItem] = []
        for part in slices(items, self.config.max_batch_size):
            start = time.perf_counter()
            size = sum(len(i.responses) for i in part)
            try:
                scored = await self.judge.ascore_batch([(i.query, i.responses) for i in part],
                                                       criteria=[i.criteria for i in part])
            except Exception as e:
                self.on_batch(BatchReport(1, size, time.perf_counter() - start, (), f"{type(e).__name__}: {e}"))
                raise
            self.on_batch(BatchReport(1, size, time.perf_counter() - start, tuple(scored)))
            out.extend(scored)
        return out

    async def close(self, timeout_s: float) -> None:
        """Refuse new requests; wait for the running ones, up to ``timeout_s``."""
        self._closing = True
        if self._running:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass


def make_dispatch(judge: Judge, config: BatcherConfig, mode: str, on_batch: Callable[[BatchReport], None]
                  ) -> Dispatch:
    """Direct for an engine with its own scheduler (or ``mode="direct"``), else the batcher."""
    direct = mode == "direct" or (mode == "auto" and capabilities(judge.backend).streaming)
    return (DirectDispatch if direct else BatchedDispatch)(judge, config, on_batch)
