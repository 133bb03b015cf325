"""Criteria resolution: from the cache, or generated once, single-flight across every caller.

One query's criteria depend on the query alone, so they are generated once and shared: within the process
every caller of a missing key awaits the same generation (``CriteriaResolver.start``, also what
``Judge.prefetch`` calls), and across the processes sharing a store the first takes a lease while the others
wait for the cache (a lease that expires hands the generation to a waiter). Each list is stored the moment
it is generated, so a killed run regenerates only what was in flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, replace

from cerm.backends.base import Backend
from cerm.cache import CriteriaCache, CriteriaRecord, content_key, criteria_from_record, new_holder_id
from cerm.config import JudgeConfig
from cerm.context import ContextPolicy
from cerm.engine import Engine
from cerm.parsing import parse_criteria
from cerm.prompts import PROMPT_VERSION, criteria_messages
from cerm.stats import JudgeStats
from cerm.types import Criteria, Generation, ParseStatus

logger = logging.getLogger(__name__)

# how often a caller waiting on another process's lease looks at the cache again
LEASE_POLL_S = 0.02


@dataclass(frozen=True)
class Slot:
    """One criteria generation: query, sample index, and the response index in the ablation."""

    query_text: str
    sample_index: int
    response_index: int | None = None


class CriteriaResolver:
    """The criteria of a judge (model + config): cache, in-process single flight, cross-process lease."""

    def __init__(self, backend: Backend, config: JudgeConfig, cache: CriteriaCache, engine: Engine,
                 stats: JudgeStats, policy: ContextPolicy) -> None:
        self.backend = backend
        self.config = config
        self.cache = cache
        self.engine = engine
        self.stats = stats
        self.policy = policy
        self._owner = new_holder_id()  # this resolver's name on criteria leases: host, pid, process start
        self._inflight: dict[str, asyncio.Task[Criteria]] = {}  # judge loop only

    def key(self, slot: Slot) -> str:
        """The cache key of ``slot``'s criteria."""
        decoding = self.config.criteria_params(slot.sample_index)
        return content_key(kind="criteria", model=self.backend.model_id, prompt_version=PROMPT_VERSION,
                           decoding=decoding.__dict__, query=slot.query_text, sample_index=slot.sample_index,
                           response_index=slot.response_index)

    def cached(self, key: str) -> Criteria | None:
        """The cached criteria under ``key`` (counted as a cache hit), or None."""
        record = self.cache.get(key)
        if record is None:
            return None
        self.stats.add(criteria_cache_hits=1)
        return self.from_record(record)

    @staticmethod
    def from_record(record: CriteriaRecord) -> Criteria:
        """A ``Criteria`` from a stored record, its items parsed for display."""
        parsed = parse_criteria(record.text)
        return criteria_from_record(record, parsed.items, parsed.warning)

    def put_user(self, slot: Slot, text: str) -> Criteria:
        """Store user-written (or edited) criteria for ``slot``: every later call uses them."""
        key = self.key(slot)
        self.cache.put(CriteriaRecord(
            key=key, model=self.backend.model_id, prompt_version=PROMPT_VERSION,
            decoding=self.config.criteria_params(slot.sample_index).__dict__, query=slot.query_text,
            sample_index=slot.sample_index, text=text, is_edited=True))
        return replace(self.from_record(self.cache.get(key)), source="user")  # type: ignore[arg-type]

    # ---- on the judge loop --------------------------------------------------------------------------
    def start(self, slot: Slot, key: str | None = None) -> asyncio.Task[Criteria]:
        """The generation of ``slot``'s missing criteria: joined if one is running, else started."""
        key = key or self.key(slot)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._produce(key, slot))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return task

    def _forget(self, key: str, task: asyncio.Task[Criteria]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def get_many(self, slots: list[Slot]) -> dict[Slot, Criteria]:
        """Each distinct slot's criteria: the cached ones read at once (no task), the others awaited together
        from the one generation of their key.
        """
        found: dict[Slot, Criteria] = {}
        waiting: dict[Slot, asyncio.Future[Criteria]] = {}
        for slot in dict.fromkeys(slots):
            key = self.key(slot)
            cached = None if key in self._inflight else self.cached(key)
            if cached is not None:
                found[slot] = cached
            else:
                waiting[slot] = asyncio.shield(self.start(slot, key))
        if waiting:
            found.update(zip(waiting, await asyncio.gather(*waiting.values())))
        return found

    async def get(self, slot: Slot) -> Criteria:
        """``slot``'s criteria: cached, or awaited from the one generation of its key."""
        key = self.key(slot)
        if key not in self._inflight:
            found = self.cached(key)
            if found is not None:
                return found
        # shielded: a caller that gives up (timeout, client gone) never cancels the shared generation
        return await asyncio.shield(self.start(slot, key))

    async def _produce(self, key: str, slot: Slot) -> Criteria:
        """Generate ``key`` once across the processes sharing the store [R]: take the lease, or wait for the
        holder to store it. The store renews our lease while we work and hands us one whose holder is gone (at
        once on its host, else when it stops renewing); a live holder is waited for at most
        ``criteria_lease_s``, then we generate the criteria ourselves.
        """
        deadline = time.monotonic() + self.config.criteria_lease_s  # the wait bound, not the lease's life
        waited = False
        while True:
            record = self.cache.get(key)
            if record is not None:  # stored meanwhile (by another process, or just before we started)
                self.stats.add(criteria_cache_hits=1, criteria_lease_waits=int(waited))
                return self.from_record(record)
            if self.cache.lease(key, self._owner):
                try:
                    record = self.cache.get(key)  # a holder may have stored it and released just now
                    if record is not None:
                        self.stats.add(criteria_cache_hits=1, criteria_lease_waits=int(waited))
                        return self.from_record(record)
                    return await self._generate(key, slot)
                finally:
                    self.cache.release(key, self._owner)
            if time.monotonic() > deadline:  # a holder that hangs: stop waiting, generate it ourselves
                return await self._generate(key, slot)
            waited = True
            await asyncio.sleep(LEASE_POLL_S)

    async def _generate(self, key: str, slot: Slot) -> Criteria:
        params = self.config.criteria_params(slot.sample_index)
        prompt = criteria_messages(slot.query_text)
        if self.policy.too_long(prompt):
            gen = Generation("", "error", error_status=ParseStatus.TOO_LONG,
                             error=f"the prompt exceeds the model context ({self.backend.context_length} tokens)")
        else:
            def persist(_: int, g: Generation) -> None:
                # stored the moment it exists, on whichever thread finished it: a kill loses only what was
                # in flight; never a failure (the next call retries it)
                if g.finish_reason != "error":
                    self.cache.put(self._record(key, slot, g))

            gen = (await self.engine.generate([prompt], params, on_done=persist))[0]
        return self._criteria(key, gen)

    def _record(self, key: str, slot: Slot, gen: Generation) -> CriteriaRecord:
        return CriteriaRecord(
            key=key, model=self.backend.model_id, prompt_version=PROMPT_VERSION,
            decoding=self.config.criteria_params(slot.sample_index).__dict__, query=slot.query_text,
            sample_index=slot.sample_index, text=gen.text, finish_reason=gen.finish_reason,
            tokens_in=gen.tokens_in, tokens_out=gen.tokens_out, seconds=gen.seconds)

    def _criteria(self, key: str, gen: Generation) -> Criteria:
        self.stats.add(tokens_out=gen.tokens_out)
        if gen.finish_reason == "error":
            self.stats.add(criteria_failed=1)
            return Criteria(text=gen.text, key=key, source="generated",
                            parse_warning=gen.error or "criteria generation failed", finish_reason="error",
                            tokens_in=gen.tokens_in, seconds=gen.seconds, error_status=gen.error_status)
        self.stats.add(criteria_generated=1)
        parsed = parse_criteria(gen.text)
        if parsed.warning:
            logger.warning("criteria %s: %s (display only; scoring continues)", key[:12], parsed.warning)
        return Criteria(text=gen.text, items=parsed.items, key=key, source="generated",
                        parse_warning=parsed.warning, finish_reason=gen.finish_reason,
                        tokens_in=gen.tokens_in, tokens_out=gen.tokens_out, seconds=gen.seconds)
