"""A small client for ``cerm serve`` (``/v1/score``), sync and async, used by the verl adapter.

429 (queue full) and 5xx answers are retried with exponential backoff (honouring Retry-After); after
the last try the error is raised, never turned into a score.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from cerm.reward.schemas import ScoreResponse
from cerm.types import Query

logger = logging.getLogger(__name__)

_RETRYABLE = {429, 500, 502, 503, 504}


class RemoteError(RuntimeError):
    """The reward server refused or failed a request after every retry."""


class CermClient:
    """Talk to one ``cerm serve`` replica.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        token: the bearer token, if the server requires one.
        timeout_s: per-request timeout; the server answers 504 first if its own limit is lower.
        retries: extra tries on 429/5xx and connection errors.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 600.0, retries: int = 4,
                 backoff_s: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = httpx.Client(timeout=timeout_s, headers=self.headers)

    def score(self, query: Query, responses: list[str]) -> ScoreResponse:
        payload = {"query": query, "responses": responses, "include_text": False}
        for attempt in range(self.retries + 1):
            try:
                r = self._client.post(f"{self.url}/v1/score", json=payload)
            except httpx.TransportError as e:
                error: str = f"{type(e).__name__}: {e}"
                wait = self._wait(attempt, None)
            else:
                if r.status_code == 200:
                    return ScoreResponse.model_validate_json(r.content)
                error, wait = self._failure(r, attempt)
            if attempt < self.retries:
                time.sleep(wait)
        raise RemoteError(f"{self.url}/v1/score failed after {self.retries + 1} tries: {error}")

    async def ascore(self, query: Query, responses: list[str]) -> ScoreResponse:
        payload = {"query": query, "responses": responses, "include_text": False}
        # one client per call: callers (verl's reward loop) may run on different event loops
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as client:
            for attempt in range(self.retries + 1):
                try:
                    r = await client.post(f"{self.url}/v1/score", json=payload)
                except httpx.TransportError as e:
                    error: str = f"{type(e).__name__}: {e}"
                    wait = self._wait(attempt, None)
                else:
                    if r.status_code == 200:
                        return ScoreResponse.model_validate_json(r.content)
                    error, wait = self._failure(r, attempt)
                if attempt < self.retries:
                    await asyncio.sleep(wait)
        raise RemoteError(f"{self.url}/v1/score failed after {self.retries + 1} tries: {error}")

    def _failure(self, r: httpx.Response, attempt: int) -> tuple[str, float]:
        error = f"HTTP {r.status_code}: {r.text[:500]}"
        if r.status_code not in _RETRYABLE:
            raise RemoteError(f"{self.url}/v1/score refused the request: {error}")
        logger.warning("cerm server %s answered %s (try %d); retrying", self.url, r.status_code, attempt + 1)
        return error, self._wait(attempt, r.headers.get("retry-after"))

    def _wait(self, attempt: int, retry_after: Any) -> float:
        base = self.backoff_s * 2**attempt
        return max(base, float(retry_after)) if retry_after and str(retry_after).isdigit() else base

    def close(self) -> None:
        self._client.close()
