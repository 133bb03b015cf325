"""The judge's running counters (``JudgeStats``): what was generated, read from the caches, and how it ended."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cerm.types import ParseStatus


@dataclass
class JudgeStats:
    """Running counters; ``parse_failure_rate`` is over every evaluation sample produced.

    A criteria call that failed (backend down) is ``criteria_failed``, never ``criteria_generated``.
    """

    criteria_generated: int = 0
    criteria_failed: int = 0
    criteria_cache_hits: int = 0
    criteria_lease_waits: int = 0  # cache hits on criteria another caller was generating (single flight)
    evaluations_generated: int = 0
    judgment_cache_hits: int = 0
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    tokens_out: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        """Add to the named counters."""
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def count_status(self, status: ParseStatus) -> None:
        """Count one final evaluation status."""
        with self._lock:
            self.statuses[status.value] += 1

    @property
    def parse_failure_rate(self) -> float:
        """Share of evaluation samples without a score: neither ``ok`` nor ``completed`` (closed by our
        closing text and read there), as the benchmark summary counts them.
        """
        total = sum(self.statuses.values())
        scored = self.statuses.get(ParseStatus.OK.value, 0) + self.statuses.get(ParseStatus.COMPLETED.value, 0)
        return 0.0 if total == 0 else 1 - scored / total

    def outcome(self) -> str:
        """The final statuses in words: "6 ok, 2 completed by the closing text, 1 failed (1 no_box)"."""
        ok = self.statuses.get(ParseStatus.OK.value, 0)
        completed = self.statuses.get(ParseStatus.COMPLETED.value, 0)
        failed = {k: n for k, n in sorted(self.statuses.items())
                  if k not in (ParseStatus.OK.value, ParseStatus.COMPLETED.value)}
        parts = [f"{ok} ok"] + ([f"{completed} completed by the closing text"] if completed else [])
        parts.append(f"{sum(failed.values())} failed" + (
            f" ({', '.join(f'{n} {k}' for k, n in failed.items())})" if failed else ""))
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict."""
        with self._lock:
            return {
                "criteria_generated": self.criteria_generated, "criteria_failed": self.criteria_failed,
                "criteria_cache_hits": self.criteria_cache_hits, "criteria_lease_waits": self.criteria_lease_waits,
                "evaluations_generated": self.evaluations_generated,
                "judgment_cache_hits": self.judgment_cache_hits, "retries": self.retries,
                "tokens_out": self.tokens_out, "statuses": dict(self.statuses),
                "parse_failure_rate": self.parse_failure_rate,
            }
