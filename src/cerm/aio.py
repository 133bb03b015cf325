"""The process's judging event loop: one background thread that every ``Judge`` (and streaming backend that
wants it) runs its coroutines on.

The judge's core is async (a query's evaluations start the moment its own criteria exist); the sync API
(``Judge.score``, the CLI, TRL's sync reward functions, the dynamic batcher's worker) calls into this loop and
waits. Async callers on any other loop (FastAPI handlers, TRL's async rewards, verl's reward loop) await the
same coroutines without blocking their own loop. One loop per process, started on first use, restarted in a
forked child (a fork copies no threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def judge_loop() -> asyncio.AbstractEventLoop:
    """The background loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="cerm-judge", daemon=True)
            _thread.start()
        return _loop


def on_judge_loop() -> bool:
    """Whether the caller runs on the judge loop's thread (a blocking wait there would deadlock)."""
    return threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the judge loop from any thread; a concurrent future of its result."""
    return asyncio.run_coroutine_threadsafe(coro, judge_loop())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the judge loop and wait for it (the sync API). Refused on the loop's own thread."""
    if on_judge_loop():
        coro.close()
        raise RuntimeError("a blocking judge call was made on the judge's own event loop; await the async "
                           "method (ascore_batch, acriteria) instead.")
    return submit(coro).result()


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the judge loop from any event loop (directly when already on it)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and running is _loop:
        return await coro
    return await asyncio.wrap_future(submit(coro))


def _forget_after_fork() -> None:
    global _loop, _thread, _lock
    _loop, _thread, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
