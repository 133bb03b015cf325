"""Streaming vLLM backend: vLLM's async engine (``AsyncLLM``), one engine request per prompt, sent at once.

The judge's core gives each query's requests to the engine the moment they exist (a query's N evaluations
as soon as its own criteria end), and vLLM's scheduler batches whatever is running continuously, with
automatic prefix caching on. Prompts, decoding settings and the score readout are the offline backend's
(``cerm.backends.vllm.VLLMCommon``), so the outputs are the same at greedy (tests/backends/test_vllm.py).

The engine lives on a private event loop in a background thread (vLLM binds its output handler to the loop
that starts it); ``agenerate`` and ``ascore_distributions`` can be awaited from any loop, ``generate`` and
``score_distributions`` called from any thread. Build it under ``if __name__ == "__main__":`` (the engine
spawns a process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from cerm.backends.base import DEFAULT_MODEL, Capabilities
from cerm.backends.vllm import VLLMCommon, engine_settings, generation
from cerm.readout import ReadoutRequest, ScoreDistribution
from cerm.types import Generation, Message, SamplingParams

T = TypeVar("T")


class AsyncVLLMBackend(VLLMCommon):
    """A local model served by vLLM's ``AsyncLLM`` (``--backend vllm``): requests scheduled one by one.

    Args: those of ``cerm.backends.vllm.VLLMBackend`` (the same engine settings: prefix caching on, blocks
    of 32 on CPU); ``**engine_kwargs`` go to ``vllm.AsyncEngineArgs``.
    """

    capabilities = Capabilities(streaming=True, readout=True, counts_tokens=True)

    def __init__(self, model: str = DEFAULT_MODEL, *, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 enable_prefix_caching: bool = True, max_model_len: int | None = None, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, enforce_eager: bool = False, revision: str | None = None,
                 seed: int = 0, **engine_kwargs: Any) -> None:
        path, self.model_id, engine_kwargs = engine_settings(model, revision, data_parallel_size, engine_kwargs)
        import vllm
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind

        self._vllm = vllm
        self._request_errors = (ValueError, VLLMClientError)
        self._final_only = RequestOutputKind.FINAL_ONLY
        args = AsyncEngineArgs(model=path, tensor_parallel_size=tensor_parallel_size,
                               enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len, dtype=dtype,
                               gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                               revision=revision, seed=seed, **engine_kwargs)
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cerm-vllm", daemon=True)
        self._thread.start()
        try:
            self.engine = self._submit(self._start(args)).result()
        except BaseException:
            self._stop_loop()
            raise
        self.tokenizer = self.engine.get_tokenizer()
        self.context_length: int | None = self.engine.model_config.max_model_len
        self.logprobs_mode = self.engine.model_config.logprobs_mode
        self.enable_prefix_caching = enable_prefix_caching
        self._init_counters()

    @staticmethod
    async def _start(args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(args)  # on the running loop: its output handler starts here

    # ---- the protocol -------------------------------------------------------------------------------
    async def agenerate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """One engine request per prompt, all sent at once; awaitable from any event loop."""
        return await asyncio.wrap_future(self._submit(self._generate_all(prompts, params)))

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """Blocking ``agenerate`` from any thread but the backend's own."""
        return self._wait(self._generate_all(prompts, params))

    async def ascore_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        r"""The 21-value distribution after each request's final ``\boxed{`` (``VLLMCommon.readout_rounds``) [R];
        each round's requests go to the engine together.
        """
        return await asyncio.wrap_future(self._submit(self._read(requests)))

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """Blocking ``ascore_distributions``."""
        return self._wait(self._read(requests))

    def close(self) -> None:
        """Stop the engine's process and the backend's loop; later calls raise."""
        if self._closed:
            return
        self._closed = True
        engine = getattr(self, "engine", None)
        if engine is not None:
            # the output handler first: stopped after the engine process, it logs the dead engine as an error
            asyncio.run_coroutine_threadsafe(_cancel(engine.output_handler), self._loop).result()
            engine.shutdown()
            self.engine = None  # collected now, while the interpreter is whole (vLLM's __del__ shuts down again)
        self._stop_loop()

    def __enter__(self) -> AsyncVLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- on the backend's loop ----------------------------------------------------------------------
    async def _generate_all(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        sp = self.sampling_params(params, output_kind=self._final_only)
        return list(await asyncio.gather(*(self._generate_one(m, sp) for m in prompts)))

    async def _generate_one(self, messages: list[Message], sp: Any) -> Generation:
        ids = self.prompt_ids(messages)
        refused = self.too_long(len(ids))
        if refused is not None:
            return refused
        start = time.perf_counter()
        try:
            final = await self._run({"prompt_token_ids": ids}, sp)
        except self._request_errors as e:  # a bad request fails alone
            return Generation("", "error", tokens_in=len(ids), error=f"vllm rejected the request: {e}")
        return generation(final, time.perf_counter() - start)

    async def _run(self, prompt: dict[str, Any], sp: Any) -> Any:
        final = None
        async for out in self.engine.generate(prompt, sp, uuid.uuid4().hex):
            final = out
        if final is None:
            raise RuntimeError("vLLM finished a request without an output")
        return final

    async def _read(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        rounds = self.readout_rounds(requests)
        try:
            batch = next(rounds)
            while True:
                batch = rounds.send(list(await asyncio.gather(*(self._run(p, sp) for p, sp in batch))))
        except StopIteration as done:
            return done.value

    # ---- plumbing -----------------------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeError("AsyncVLLMBackend is closed; build a new one.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking call on AsyncVLLMBackend's own loop; await agenerate instead.")
        return self._submit(coro).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _cancel(task: asyncio.Task | None) -> None:
    """Cancel ``task`` and wait until it has stopped."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
