"""A small client for ``cerm serve`` (``/v1/score``, ``/v1/criteria``), sync and async, used by the verl adapter.

429 (queue full) and 5xx answers are retried with exponential backoff (honouring Retry-After); after
the last try the error is raised, never turned into a score.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx

from cerm.retry import Backoff, Retryable, parse_retry_after
from cerm.reward.server.schemas import CriteriaAccepted, ScoreResponse
from cerm.types import Query

_RETRYABLE = {429, 500, 502, 503, 504}


@contextmanager
def _connection_errors_retry() -> Iterator[None]:
    """A connection that failed may work on the next try: the error becomes a ``Retryable``."""
    try:
        yield
    except httpx.TransportError as e:
        raise Retryable(f"{type(e).__name__}: {e}") from e


class RemoteError(RuntimeError):
    """The reward server refused or failed a request after every retry."""


class CermClient:
    """Talk to one ``cerm serve`` replica.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        token: the bearer token, if the server requires one.
        timeout_s: per-request timeout; the server answers 504 first if its own limit is lower.
        retries: extra tries on 429/5xx and connection errors.
        backoff_s: the first retry delay; it doubles per try (``cerm.retry.Backoff``).
        max_backoff_s: the longest wait, also the cap on the server's Retry-After.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 600.0, retries: int = 4,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        # no jitter: one client retries one request at a time; the server's Retry-After wins when sent
        self._backoff = Backoff(retries + 1, backoff_s, max_s=max_backoff_s, label=f"cerm server {self.url}")
        self._client = httpx.Client(timeout=timeout_s, headers=self.headers)

    def score(self, query: Query, responses: list[str]) -> ScoreResponse:
        """Score ``responses`` to ``query`` under one criteria set; raises ``RemoteError`` after the last try."""
        payload = {"query": query, "responses": responses, "include_text": False}
        try:
            for attempt in self._backoff.retrying():
                with attempt, _connection_errors_retry():
                    return self._read(self._client.post(f"{self.url}/v1/score", json=payload))
        except Retryable as e:
            raise self._gave_up(e) from e
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def ascore(self, query: Query, responses: list[str]) -> ScoreResponse:
        """``score`` for async callers (its own HTTP client per call, so any event loop works)."""
        payload = {"query": query, "responses": responses, "include_text": False}
        # one client per call: callers (verl's reward loop) may run on different event loops
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as client:
            try:
                async for attempt in self._backoff.aretrying():
                    with attempt, _connection_errors_retry():
                        return self._read(await client.post(f"{self.url}/v1/score", json=payload))
            except Retryable as e:
                raise self._gave_up(e) from e
        raise AssertionError("unreachable: tenacity either returns or raises")

    def prefetch(self, queries: Sequence[Query]) -> list[str]:
        """Send prompts ahead (``POST /v1/criteria``): the server generates their criteria in the background,
        single-flight with every request. Returns their criteria keys at once (202); raises ``RemoteError``
        after the last try.
        """
        payload = {"prompts": list(queries)}
        try:
            for attempt in self._backoff.retrying():
                with attempt, _connection_errors_retry():
                    reply = self._client.post(f"{self.url}/v1/criteria", json=payload)
                    return CriteriaAccepted.model_validate_json(self._checked(reply, "/v1/criteria", 202)).keys
        except Retryable as e:
            raise self._gave_up(e, "/v1/criteria") from e
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _read(self, r: httpx.Response) -> ScoreResponse:
        return ScoreResponse.model_validate_json(self._checked(r, "/v1/score", 200))

    def _checked(self, r: httpx.Response, route: str, ok: int) -> bytes:
        if r.status_code == ok:
            return r.content
        error = f"HTTP {r.status_code}: {r.text[:500]}"
        if r.status_code not in _RETRYABLE:
            raise RemoteError(f"{self.url}{route} refused the request: {error}")
        raise Retryable(error, parse_retry_after(r.headers.get("retry-after")))

    def _gave_up(self, error: Retryable, route: str = "/v1/score") -> RemoteError:
        return RemoteError(f"{self.url}{route} failed after {self._backoff.tries} tries: {error}")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()
