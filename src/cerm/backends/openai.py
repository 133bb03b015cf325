"""Any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp server, hosted APIs) over httpx.

Requests run on one private event loop in a background thread, whichever thread or loop calls us. That
loop owns the HTTP client, the concurrency bound and the per-server in-flight counts, so the bound holds for
the whole backend even when TRL's async reward functions, FastAPI handlers and plain threads share it, and
the sync ``generate`` works inside a running event loop without ``asyncio.run`` (prometheus-eval#69).

A pool of several base URLs is how users scale past one machine: the requests of one query go to one
server, whose prefix cache then holds their shared prefix (``cerm.backends.routing``; least-loaded on
request), a retry goes to another server when the pool has one, and a server that refuses connections sits
out for a while (balancing and failover rules are our choice).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from cerm.backends.base import Capabilities, OnDone
from cerm.backends.routing import PoolRouter, affinity_key
from cerm.readout import CONTINUATIONS, ReadoutRequest, ScoreDistribution, from_logprobs
from cerm.retry import Backoff, Retryable, parse_retry_after
from cerm.types import FinishReason, Generation, Message, ParseStatus, SamplingParams

logger = logging.getLogger(__name__)

T = TypeVar("T")

# vLLM renamed reasoning_content to reasoning (vllm-project/vllm#27752) and later dropped the old name
# (#33402); SGLang, DeepSeek and most hosted APIs still use reasoning_content, so read both.
TEXT_FIELDS = ("content", "reasoning_content", "reasoning")
# 408/409/429 and every 5xx are transient on vLLM, SGLang and hosted APIs; other 4xx will fail again (our choice)
RETRY_STATUS = {408, 409, 429}
# vLLM ("maximum context length is ...") and SGLang ("longer than the model's context length") reject an
# over-long prompt with a 400 that says this
CONTEXT_ERROR_MARKER = "context length"


class _Fatal(Exception):
    """A failed try that will fail again (bad request, auth, unknown route, malformed reply).

    ``status`` is the typed cause the judge reports: TOO_LONG for a context-length 400.
    """

    def __init__(self, message: str, status: ParseStatus = ParseStatus.BACKEND_ERROR) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Reply:
    text: str
    source_field: str
    finish_reason: FinishReason
    tokens_in: int
    tokens_out: int


class OpenAIBackend:
    """Chat completions from one or more OpenAI-compatible servers.

    Args:
        model: the model name the server serves (sent as ``model``).
        base_urls: API roots including the version prefix, as in the OpenAI SDK: ``http://host:8000/v1``.
            Requests go to ``{base_url}/chat/completions``. Several URLs form a load-balanced pool.
        api_key: sent as ``Authorization: Bearer``; None sends no header (local servers).
        concurrency_limit: requests in flight for the whole backend, across the pool. Raise it with the
            pool size so every server stays busy.
        routing: ``"affine"`` sends the requests that share a first user message (a query's criteria turn
            and its evaluations) to one server, chosen by rendezvous hashing over the servers that are up;
            ``"least-loaded"`` sends each request to the server with the fewest in flight.
        spill_above: under ``"affine"``, a request whose server has this many more in flight than the
            least-loaded one goes there instead; default ``concurrency_limit`` (a group is not split for
            balance alone).
        timeout_s: limit on one HTTP request, start to finish.
        max_retries: extra tries after a 408/409/429/5xx reply, a timeout or a connection error.
        backoff_base_s: first retry delay; it doubles per try, capped at ``backoff_max_s``, with jitter.
        backoff_max_s: longest wait between tries, also the cap on a server's ``Retry-After``.
        send_chat_template_kwargs: send ``chat_template_kwargs={"enable_thinking": false}`` (protocol: thinking
            off). A vLLM/SGLang extension; turn it off for hosted APIs that reject unknown fields.
        extra_body: extra JSON fields merged into every request (they override ours).
        seed: seeds the retry jitter only.
    """

    context_length: int | None = None
    # the server schedules requests itself; the readout needs a server with prompt log-probs (vLLM's)
    capabilities = Capabilities(streaming=True, readout=True)

    def __init__(self, model: str, base_urls: list[str] | str, api_key: str | None = None,
                 concurrency_limit: int = 16, routing: str = "affine", spill_above: int | None = None,
                 timeout_s: float = 600.0, max_retries: int = 4,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 30.0, send_chat_template_kwargs: bool = True,
                 extra_body: dict[str, Any] | None = None, seed: int = 0) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls or [])
        if not urls or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
            raise ValueError(f"base_urls ({base_urls!r}) must be one or more http(s) URLs such as "
                             "'http://localhost:8000/v1'.")
        if concurrency_limit < 1:
            raise ValueError(f"concurrency_limit ({concurrency_limit}) must be >= 1.")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s ({timeout_s}) must be > 0.")
        if max_retries < 0:
            raise ValueError(f"max_retries ({max_retries}) must be >= 0.")
        self.model = model
        # the served name, as the hf and vllm backends key caches by model id: a vLLM server and vLLM
        # in-process share cached criteria and judgments
        self.model_id = model
        self.base_urls = [u.rstrip("/") for u in urls]
        self.concurrency_limit = concurrency_limit
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.send_chat_template_kwargs = send_chat_template_kwargs
        self.extra_body = dict(extra_body or {})
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # per-try lines at debug: _set_failing logs each server's state changes instead
        self._backoff = Backoff(max_retries + 1, backoff_base_s, backoff_max_s, random.Random(seed), "openai",
                                logging.DEBUG)
        self.router = PoolRouter(self.base_urls, routing, spill_above, concurrency_limit, backoff_max_s)
        self._failing: dict[str, bool] = dict.fromkeys(self.base_urls, False)  # logged once per state change
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cerm-openai", daemon=True)
        self._thread.start()
        # created on the private loop: asyncio primitives and httpx pools belong to the loop that made them
        self._semaphore, self._client = self._submit(self._make_client()).result()

    # ---- public API -----------------------------------------------------------------------------
    def generate(self, prompts: list[list[Message]], params: SamplingParams,
                 on_done: OnDone | None = None) -> list[Generation]:
        """Blocking batch call; safe from any thread, including one running an event loop. ``on_done`` runs
        on the backend's own loop thread as each request finishes.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("OpenAIBackend.generate was called from its own loop; await agenerate instead.")
        return self._submit(self._generate_all(prompts, params, on_done)).result()

    async def agenerate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """The same batch call for async callers; the work runs on the backend's own loop."""
        return await asyncio.wrap_future(self._submit(self._generate_all(prompts, params)))

    async def ascore_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """``score_distributions`` for async callers; the work runs on the backend's own loop."""
        return await asyncio.wrap_future(self._submit(self._read_all(requests)))

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        r"""The 21-value distribution after each request's ``\boxed{``, from the server's prompt log-probs [R].

        Needs a server that returns ``prompt_logprobs`` for a continued assistant turn (vLLM's
        ``continue_final_message``); any other server gives an explicit error per request, never a greedy
        fallback. Per request: the prefix alone plus the 21 prefix+``v}`` sequences, each 1-token; the
        prefix's tokens must be the same in all 22. vLLM skips its prefix cache for prompt log-probs, so
        this costs 22 prefills of the evaluation (the in-process vllm backend avoids that).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("OpenAIBackend.score_distributions was called from its own loop.")
        return self._submit(self._read_all(requests)).result()

    async def _read_all(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        return list(await asyncio.gather(*(self._read_one(r) for r in requests)))

    async def _read_one(self, request: ReadoutRequest) -> ScoreDistribution:
        texts = [request.assistant_prefix] + [request.assistant_prefix + c for c in CONTINUATIONS]
        replies = await asyncio.gather(*(self._prompt_logprobs(request.messages, t) for t in texts))
        errors = [r for r in replies if isinstance(r, str)]
        if errors:
            return ScoreDistribution(error=errors[0])
        prefix, *fulls = [r for r in replies if not isinstance(r, str)]
        n = len(prefix)
        logps = []
        for cont, full in zip(CONTINUATIONS, fulls, strict=True):
            if [t for t, _ in full[:n]] != [t for t, _ in prefix] or len(full) <= n:
                return ScoreDistribution(error=f"appending {cont!r} changes the tokens of the prefix")
            logps.append(sum(lp for _, lp in full[n:]))
        return from_logprobs(logps)

    async def _prompt_logprobs(self, messages: list[Message], assistant: str) -> list[tuple[int, float]] | str:
        """(token id, log-prob) of every prompt token after the first, or an error message."""
        body = self._body(SamplingParams(max_new_tokens=1)) | {
            "messages": [*messages, {"role": "assistant", "content": assistant}],
            "continue_final_message": True, "add_generation_prompt": False, "prompt_logprobs": 0}
        failed: list[str] = []
        try:
            async for attempt in self._backoff.aretrying():
                with attempt:
                    logprobs: list[tuple[int, float]] = await self._try_once(body, failed, read_prompt_logprobs)
        except Retryable as e:
            return f"score readout failed after {self._backoff.tries} tries: {e}"
        except _Fatal as e:
            return f"score readout: {e}"
        return logprobs

    def check_pool(self, timeout_s: float = 10.0) -> None:
        """Fail fast before a run: every base URL must answer ``GET {url}/models`` (any HTTP status counts
        as reachable; auth and model names are checked by the first real request).

        Raises:
            ConnectionError: naming each URL that could not be reached and why.
        """
        down = self._submit(self._unreachable(timeout_s)).result()
        if down:
            raise ConnectionError("OpenAI-compatible server(s) unreachable: " + "; ".join(
                f"{url} ({why})" for url, why in down) + ". Start the server or fix --base-url (it includes "
                "the API prefix, e.g. http://host:8000/v1).")

    async def _unreachable(self, timeout_s: float) -> list[tuple[str, str]]:
        async def probe(url: str) -> str | None:
            try:
                await asyncio.wait_for(self._client.get(f"{url}/models"), timeout_s)
            except (asyncio.TimeoutError, httpx.TimeoutException):
                return f"no answer within {timeout_s:g} s"
            except httpx.TransportError as e:
                return f"{type(e).__name__}: {e}"
            return None

        results = await asyncio.gather(*(probe(u) for u in self.base_urls))
        return [(u, why) for u, why in zip(self.base_urls, results) if why is not None]

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Always None: the server's tokenizer is not available here (the server rejects overlong prompts)."""
        return None

    def close(self) -> None:
        """Close the HTTP client and stop the background loop; later calls raise."""
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- event-loop side ------------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeError("OpenAIBackend is closed; build a new one.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _make_client(self) -> tuple[asyncio.Semaphore, httpx.AsyncClient]:
        limits = httpx.Limits(max_connections=self.concurrency_limit,
                              max_keepalive_connections=self.concurrency_limit)
        return asyncio.Semaphore(self.concurrency_limit), httpx.AsyncClient(
            headers=self._headers, limits=limits, timeout=httpx.Timeout(self.timeout_s))

    async def _generate_all(self, prompts: list[list[Message]], params: SamplingParams,
                            on_done: OnDone | None = None) -> list[Generation]:
        body = self._body(params)

        async def one(i: int, messages: list[Message]) -> Generation:
            g = await self._generate_one(messages, body)
            if on_done is not None:
                on_done(i, g)
            return g

        return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts))))

    def _body(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                                "max_tokens": params.max_new_tokens}
        if params.seed is not None:
            body["seed"] = params.seed
        if self.send_chat_template_kwargs:
            body["chat_template_kwargs"] = {"enable_thinking": False}
        return body | self.extra_body

    async def _generate_one(self, messages: list[Message], body: dict[str, Any]) -> Generation:
        start = time.perf_counter()
        failed: list[str] = []  # servers whose try failed; the next try prefers another one
        try:
            # the slot is released while tenacity waits, so a throttled request does not block healthy ones
            async for attempt in self._backoff.aretrying():
                with attempt:
                    reply = await self._try_once(body | {"messages": messages}, failed)
        except Retryable as e:
            # debug: a dead server is logged once by _set_failing; the request counts as backend_error
            logger.debug("giving up after %d tries: %s", self._backoff.tries, e)
            return Generation("", "error", seconds=time.perf_counter() - start,
                              error=f"failed after {self._backoff.tries} tries: {e}")
        except _Fatal as e:
            logger.error("request failed: %s", e)
            return Generation("", "error", seconds=time.perf_counter() - start, error=str(e),
                              error_status=e.status)
        return Generation(reply.text, reply.finish_reason, reply.tokens_in, reply.tokens_out,
                          time.perf_counter() - start, source_field=reply.source_field)

    async def _try_once(self, payload: dict[str, Any], failed: list[str], parse: Any = None) -> Any:
        async with self._semaphore:
            url = self.router.pick(affinity_key(payload["messages"]), failed[-1] if failed else None)
            self.router.start(url)
            try:
                reply = await self._post(url, payload, parse)
            except Retryable as e:
                self._set_failing(url, str(e))
                failed.append(url)
                if e.is_down:
                    self.router.mark_down(url)
                raise Retryable(f"{e} [{url}]", e.retry_after_s, e.is_down) from e
            except _Fatal as e:
                raise _Fatal(f"{e} [{url}]", e.status) from e
            finally:
                self.router.finish(url)
            self._set_failing(url, None)
            return reply

    def _set_failing(self, url: str, error: str | None) -> None:
        """Log a server's transitions only (failing -> recovered and back), never once per request."""
        failing = error is not None
        if failing == self._failing[url]:
            return
        self._failing[url] = failing
        if failing:
            logger.warning("server %s is failing (%s); retrying with backoff", url, error)
        else:
            logger.warning("server %s answers again", url)

    async def _post(self, url: str, payload: dict[str, Any], parse: Any = None) -> Any:
        try:
            # wait_for bounds the whole request; httpx's own timeout only bounds each read/write
            response = await asyncio.wait_for(self._client.post(f"{url}/chat/completions", json=payload),
                                              self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException) as e:
            raise Retryable(f"timed out after {self.timeout_s:g} s") from e
        except httpx.TransportError as e:
            raise Retryable(f"connection error: {type(e).__name__}: {e}", is_down=True) from e
        status = response.status_code
        if status != 200:
            detail = f"HTTP {status}: {response.text[:300]}"
            if status in RETRY_STATUS or status >= 500:
                raise Retryable(detail, parse_retry_after(response.headers.get("retry-after")))
            if status == 400 and CONTEXT_ERROR_MARKER in response.text.lower():
                raise _Fatal(f"the prompt is too long: {detail}", ParseStatus.TOO_LONG)
            if status == 404:
                detail += " (base URLs include the API prefix, e.g. http://host:8000/v1; check the model name)"
            raise _Fatal(detail)
        try:
            return (parse or read_reply)(response.json())
        except ValueError as e:
            raise _Fatal(f"malformed reply: {e}") from e


def read_reply(data: Any) -> _Reply:
    """Text, the field that held it, finish reason and token counts from a chat-completions reply.

    An empty reply stays empty (the judge marks it ``empty``): no text is ever invented.

    Raises:
        ValueError: the reply has no ``choices[0].message``.
    """
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"no choices[0].message in {str(data)[:200]!r}") from e
    text, source_field = "", "content"
    for name in TEXT_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            text, source_field = value, name
            break
    finish_reason: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
    usage = data.get("usage") or {}
    return _Reply(text, source_field, finish_reason, int(usage.get("prompt_tokens") or 0),
                  int(usage.get("completion_tokens") or 0))


def read_prompt_logprobs(data: Any) -> list[tuple[int, float]]:
    """(token id, log-prob) per prompt token from a vLLM reply with ``prompt_logprobs=0`` (first is None).

    Raises:
        ValueError: the reply has no ``prompt_logprobs`` (the server does not support them).
    """
    entries = data.get("prompt_logprobs") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError("the server returned no prompt_logprobs; the score readout needs vLLM's server")
    out = []
    for entry in entries[1:]:
        if not isinstance(entry, dict) or not entry:
            raise ValueError(f"malformed prompt_logprobs entry {str(entry)[:80]!r}")
        # prompt_logprobs=0 returns just the prompt token; with more, the prompt token is the one listed first
        token, info = next(iter(entry.items()))
        out.append((int(token), float(info["logprob"])))
    return out

