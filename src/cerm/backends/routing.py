"""Which server of an ``openai`` pool gets a request: prefix-affine by default, least-loaded on request.

A CE-RM query's criteria turn and its N evaluations share their first message (the criteria prompt), and
each evaluation repeats the criteria turn's prompt and output as its prefix (~60% of its tokens). Sent to
one server, that prefix is computed once and then read from the server's prefix cache; spread over K
servers (least-loaded), it is computed up to K times. So a request's *affinity key* is the digest of its
first user message, and its preferred server is the rendezvous (highest-random-weight) choice of that key
over the servers that are up: when one goes down only its own keys move, nobody else's (no reshuffle).

A preferred server holding ``spill_above`` more requests in flight than the least-loaded one sends the
request to the least-loaded server instead, so an unlucky hash cannot pile everything on one server while
another idles. The bound is on the imbalance, as SGLang's cache-aware router balances, and by default it is
the whole concurrency limit: a GRPO group arrives as N requests at once, and a tighter bound splits groups for
balance alone. Measured (perf/pool_routing.py, two vLLM-CPU servers, 8 prompts x 8): with a bound at the
fair share (8 of 16) 16-17 requests spilled per batch and least-loaded computed only 1.10x the prompt tokens
of affine; with the default, 1.38x, and 36/36 requests per server. Lower it for servers that saturate at
few requests. The routing changes where a request runs, never what it returns: the servers serve the same
model (key, bound and hash are ours [R]).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from cerm.types import Message

ROUTINGS = ("affine", "least-loaded")


def affinity_key(messages: Sequence[Message]) -> bytes | None:
    """The digest of the first user message (the shared prefix of a query's requests); None without one."""
    first = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    return hashlib.blake2b(first.encode(), digest_size=16).digest() if isinstance(first, str) else None


def rendezvous(key: bytes, urls: Sequence[str]) -> str:
    """The server with the highest hash of (key, url): stable while that server is up, whoever else joins
    or leaves.
    """
    return max(urls, key=lambda u: hashlib.blake2b(key + u.encode(), digest_size=8).digest())


class PoolRouter:
    """Per-server in-flight counts, down times and request counts; picks the server for each try.

    Not thread-safe: the openai backend calls it from its one event loop only.
    """

    def __init__(self, urls: Sequence[str], routing: str = "affine", spill_above: int | None = None,
                 concurrency_limit: int = 16, down_for_s: float = 30.0) -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"routing ({routing!r}) must be one of: {', '.join(ROUTINGS)}.")
        if spill_above is not None and spill_above < 1:
            raise ValueError(f"spill_above ({spill_above}) must be >= 1.")
        self.urls = list(urls)
        self.routing = routing
        self.spill_above = spill_above or concurrency_limit
        self.down_for_s = down_for_s
        self.in_flight = dict.fromkeys(self.urls, 0)
        self.requests = dict.fromkeys(self.urls, 0)  # tries sent to each server
        self.spilled = 0  # tries that left their preferred server because it was spill_above ahead
        self._down_until = dict.fromkeys(self.urls, 0.0)  # monotonic time a dead server is skipped until
        self._turn = 0  # rotates ties between equally loaded servers

    def pick(self, key: bytes | None, avoid: str | None = None) -> str:
        """The server for one try: ``key``'s preferred server unless it holds ``spill_above`` more in flight
        than the least-loaded one, else the least loaded; never ``avoid`` (the server that just failed this
        request) while another is up.
        """
        now = time.monotonic()
        up = [u for u in self.urls if self._down_until[u] <= now] or self.urls
        candidates = [u for u in up if u != avoid] or up
        self._turn += 1
        order = candidates[self._turn % len(candidates):] + candidates[:self._turn % len(candidates)]
        least = min(order, key=self.in_flight.__getitem__)
        if self.routing == "affine" and key is not None:
            preferred = rendezvous(key, candidates)
            if self.in_flight[preferred] - self.in_flight[least] < self.spill_above:
                return preferred
            self.spilled += 1
        return least

    def start(self, url: str) -> None:
        """A try to ``url`` begins."""
        self.in_flight[url] += 1
        self.requests[url] += 1

    def finish(self, url: str) -> None:
        """A try to ``url`` ended, however it ended."""
        self.in_flight[url] -= 1

    def mark_down(self, url: str) -> None:
        """``url`` refused a connection: it sits out ``down_for_s``, then one request probes it again."""
        if len(self.urls) > 1:
            self._down_until[url] = time.monotonic() + self.down_for_s
