"""Retry with exponential backoff: one policy for every HTTP caller (the OpenAI backend, the reward client).

Built on tenacity. ``Backoff.retrying()`` (sync) and ``Backoff.aretrying()`` (async) share one wait rule,
one stop rule and one log line. A try that may succeed later raises ``Retryable``; any other exception
stops at once and propagates unchanged. After the last try the last ``Retryable`` is re-raised, so the
caller decides what a final failure becomes (an error ``Generation``, a ``RemoteError``), never a score.
"""

from __future__ import annotations

import email.utils
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

logger = logging.getLogger(__name__)


class Retryable(Exception):
    """A failed try that may succeed later.

    Args:
        message: what went wrong, for the log and the final error.
        retry_after_s: the server's ``Retry-After``, if it sent one; it replaces the computed delay.
        is_down: the server could not be reached at all (a pool may skip it for a while).
    """

    def __init__(self, message: str, retry_after_s: float | None = None, is_down: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.is_down = is_down


@dataclass(frozen=True)
class Backoff:
    """How often and how long to retry.

    Args:
        tries: total tries, the first included (1 = never retry).
        base_s: the first delay; it doubles per try, capped at ``max_s``.
        max_s: the longest wait, also the cap on a server's ``Retry-After``.
        rng: a seeded generator for jitter (each delay drawn in [ceiling/2, ceiling]); None = no jitter.
        label: names the caller in the log line.
        log_level: level of the per-try line; a caller that logs server state changes itself (the OpenAI
            pool) passes ``logging.DEBUG`` so a dead server is not one warning per request.
    """

    tries: int
    base_s: float = 1.0
    max_s: float = 30.0
    rng: random.Random | None = None
    label: str = "request"
    log_level: int = logging.WARNING

    def __post_init__(self) -> None:
        if self.tries < 1:
            raise ValueError(f"tries ({self.tries}) must be >= 1.")

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_s)
        ceiling = min(self.max_s, self.base_s * 2**attempt)
        # jitter spreads out retries that failed together
        return ceiling * (0.5 + self.rng.random() / 2) if self.rng is not None else ceiling

    def retrying(self) -> Retrying:
        """A tenacity ``Retrying`` for blocking code: ``for attempt in b.retrying(): with attempt: ...``."""
        return Retrying(**self._policy())

    def aretrying(self) -> AsyncRetrying:
        """The same policy for async code: ``async for attempt in b.aretrying(): with attempt: ...``."""
        return AsyncRetrying(**self._policy())

    def _policy(self) -> dict[str, Any]:
        return {"stop": stop_after_attempt(self.tries), "wait": self._wait, "before_sleep": self._log,
                "retry": retry_if_exception_type(Retryable), "reraise": True}

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return self.delay_s(state.attempt_number - 1, getattr(error, "retry_after_s", None))

    def _log(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.log(self.log_level, "%s: try %d/%d failed (%s); retrying in %.2f s", self.label,
                   state.attempt_number, self.tries, error, wait)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()
