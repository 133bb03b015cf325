"""How the judge's requests reach a backend, one request at a time.

The judge's core asks for generations per query, the moment a query is ready (its criteria exist). An engine
that schedules requests itself (``Capabilities.streaming``: vLLM's async engine, an OpenAI-compatible server)
gets each request at once and batches continuously (``StreamingEngine``). An engine that takes whole batches
(hf, llama.cpp, the offline vLLM ``LLM``, fake) gets what is ready merged into one blocking ``generate`` call
on a worker thread (``CollectingEngine``): while a call runs, new requests wait and go together in the next.

Both call ``on_done(index, generation)`` once per generation as soon as it exists (the judge persists it
there, so a kill loses only what was in flight).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from cerm.backends.base import Backend, capabilities
from cerm.readout import ReadAt, ReadoutRequest, ScoreDistribution
from cerm.types import Generation, Message, SamplingParams

OnDone = Callable[[int, Generation], None]


class Engine(Protocol):
    """The judge's view of a backend: awaitable generations and score readouts, requests as they come."""

    async def generate(self, prompts: list[list[Message]], params: SamplingParams, *,
                       on_done: OnDone | None = None, read_at: ReadAt | None = None) -> list[Generation]:
        """One generation per prompt; ``read_at`` reaches a backend that reads during generation (hf)."""
        ...

    async def read(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """One score distribution per request (the backend declares the readout)."""
        ...


def _weak(backend: Any) -> Callable[[], Any]:
    """A weak reference to ``backend`` (engines are kept per backend and must not keep it alive)."""
    try:
        return weakref.ref(backend)
    except TypeError:  # not weak-referenceable: held as long as the judge holds the engine
        return lambda: backend


def _live(ref: Callable[[], Any]) -> Any:
    backend = ref()
    if backend is None:
        raise RuntimeError("the backend was released while requests were pending.")
    return backend


class StreamingEngine:
    """A backend with its own scheduler: every prompt is its own request, sent at once."""

    def __init__(self, backend: Any) -> None:
        self._ref = _weak(backend)

    async def generate(self, prompts: list[list[Message]], params: SamplingParams, *,
                       on_done: OnDone | None = None, read_at: ReadAt | None = None) -> list[Generation]:
        """Every prompt as its own request, all at once; ``read_at`` is unused (the readout comes after)."""
        async def one(i: int, messages: list[Message]) -> Generation:
            g = (await _live(self._ref).agenerate([messages], params))[0]
            if on_done is not None:
                on_done(i, g)
            return g

        return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts))))

    async def read(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """The readout, awaited (``ascore_distributions``) or on a thread (a blocking reader)."""
        backend = _live(self._ref)
        reader = getattr(backend, "ascore_distributions", None)
        if reader is not None:
            return list(await reader(requests))
        return await asyncio.to_thread(backend.score_distributions, requests)


@dataclass
class _Job:
    """One caller's request for the collector: prompts (or readouts) and the future of their results."""

    kind: str  # "generate" | "read"
    items: list[Any]
    future: asyncio.Future
    params: SamplingParams | None = None
    read_at: ReadAt | None = None
    on_done: OnDone | None = None
    key: tuple = field(init=False)

    def __post_init__(self) -> None:
        # jobs merge into one backend call when they decode alike (read_at: one per judge config and attempt)
        self.key = (self.kind, self.params, id(self.read_at) if self.read_at is not None else None)


class CollectingEngine:
    """A backend that takes whole batches: what is ready goes together into one ``generate`` on one thread.

    The backend is only ever called from the collector's single worker thread, so engines that are not
    thread-safe (llama.cpp) are safe. The collector holds its backend weakly: a backend nobody else holds
    is released, and the worker thread with it.
    """

    def __init__(self, backend: Any) -> None:
        self._ref = _weak(backend)
        self._caps = capabilities(backend)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cerm-engine")
        self._pending: list[_Job] = []
        self._draining = False

    async def generate(self, prompts: list[list[Message]], params: SamplingParams, *,
                       on_done: OnDone | None = None, read_at: ReadAt | None = None) -> list[Generation]:
        """The prompts as one job, merged with what else is ready into the next backend call."""
        if not prompts:
            return []
        return await self._enqueue(_Job("generate", list(prompts), asyncio.get_running_loop().create_future(),
                                        params, read_at if self._caps.reads_during_generation else None,
                                        on_done))

    async def read(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """The readouts as one job, merged with the other readouts that are ready."""
        if not requests:
            return []
        return await self._enqueue(_Job("read", list(requests), asyncio.get_running_loop().create_future()))

    async def _enqueue(self, job: _Job) -> Any:
        self._pending.append(job)
        if not self._draining:
            self._draining = True
            # a task, not a call: the callers made ready in this same loop turn still get to add their jobs
            asyncio.get_running_loop().create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                jobs, self._pending = self._pending, []
                groups: dict[tuple, list[_Job]] = {}
                for job in jobs:
                    groups.setdefault(job.key, []).append(job)
                for group in groups.values():
                    try:
                        results = await loop.run_in_executor(self._executor, self._call, group)
                    except asyncio.CancelledError:
                        raise
                    except BaseException as e:  # noqa: BLE001 - the backend raised: every caller of the call sees it
                        for job in group:
                            if not job.future.done():
                                job.future.set_exception(e)
                        continue
                    for job, result in zip(group, results):
                        if not job.future.done():  # cancelled meanwhile (a caller gone)
                            job.future.set_result(result)
        finally:
            self._draining = False

    def _call(self, group: list[_Job]) -> list[list[Any]]:
        """On the worker thread: one backend call for the merged jobs, results split back per job."""
        backend = _live(self._ref)
        owners = [(job, k) for job in group for k in range(len(job.items))]
        merged = [item for job in group for item in job.items]
        if group[0].kind == "read":
            flat: list[Any] = backend.score_distributions(merged)
        else:
            reported: set[int] = set()

            def done(i: int, g: Generation) -> None:
                reported.add(i)
                job, k = owners[i]
                if job.on_done is not None:
                    job.on_done(k, g)

            extra: dict[str, Any] = {}
            if self._caps.reports_each:
                extra["on_done"] = done
            if group[0].read_at is not None:
                extra["read_at"] = group[0].read_at
            flat = backend.generate(merged, group[0].params, **extra)
            for i, g in enumerate(flat):  # what the backend did not report as it went (or at all)
                if i not in reported:
                    done(i, g)
        if len(flat) != len(merged):
            raise RuntimeError(f"{type(backend).__name__} returned {len(flat)} results for {len(merged)} requests.")
        out, pos = [], 0
        for job in group:
            out.append(flat[pos:pos + len(job.items)])
            pos += len(job.items)
        return out


_ENGINES: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()


def engine_for(backend: Backend) -> Engine:
    """The one engine of ``backend`` in this process (judges over one backend share its collector)."""
    try:
        engine = _ENGINES.get(backend)
    except TypeError:  # not weak-referenceable or unhashable: an engine of its own
        return _make(backend)
    if engine is None:
        engine = _ENGINES[backend] = _make(backend)
    return engine


def _make(backend: Backend) -> Engine:
    return StreamingEngine(backend) if capabilities(backend).streaming else CollectingEngine(backend)
