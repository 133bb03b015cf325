"""The CE-RM judge: criteria once per query, then one evaluation turn per response.

``Judge`` only orchestrates, on one async core: a query's evaluations start the moment its own criteria
exist (at once when they are cached), on the engine of its backend (``cerm.engine``). The sync methods
(``score``, ``score_batch``, ``best_of_n``, ``criteria``) wait for the same coroutines on the process's judge
loop (``cerm.aio``); the async ones (``ascore_batch``, ``acriteria``) await them from any event loop, and
``prefetch`` starts criteria in the background. The parts live in rooms of their own: ``config`` (settings
and per-model budgets), ``criteria`` (resolution and single flight), ``evaluation`` (turns, retries, readout),
``context`` (the context-length policy), ``selection`` (decisions), ``stats`` (counters).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import cerm.aio as aio
from cerm.backends.base import Backend, score_reader
from cerm.cache import CriteriaCache, JudgmentCache, Store, content_key
from cerm.config import MODEL_OVERRIDES, JudgeConfig, config_for_model, default_for
from cerm.context import MIN_EVAL_TOKENS, ContextPolicy
from cerm.criteria import CriteriaResolver, Slot
from cerm.engine import CollectingEngine, Engine, engine_for
from cerm.evaluation import EvalTask, Evaluator
from cerm.injection import injection_flags
from cerm.parsing import parse_criteria
from cerm.prompts import render_query
from cerm.selection import best_first, best_unique, check_pick, top_tied, winner
from cerm.stats import JudgeStats
from cerm.types import (
    SAMPLE_TEMPERATURE,
    BestOfNResult,
    Comparison,
    Criteria,
    Judgment,
    ParseStatus,
    Query,
    ScoredItem,
    ScoreMode,
    TiePolicy,
    mean_std,
)

__all__ = ["MIN_EVAL_TOKENS", "MODEL_OVERRIDES", "Judge", "JudgeConfig", "JudgeStats", "config_for_model",
           "default_for"]

Item = tuple[Query, Sequence[str]]
Supplied = Criteria | str | None


class Judge:
    """Criteria-first pointwise judge over any ``Backend``.

    Args:
        backend: the model.
        config: decoding and aggregation settings.
        store: the store of the criteria and judgment caches (SQLite file); in-memory when omitted.
    """

    def __init__(self, backend: Backend, config: JudgeConfig | None = None, store: Store | None = None) -> None:
        self.backend = backend
        self.config = config or JudgeConfig()
        self.store = store if store is not None else Store(None)
        self.criteria_cache = CriteriaCache(self.store)
        self.judgment_cache = JudgmentCache(self.store)
        self.stats = JudgeStats()
        if self.config.reads_scores:
            score_reader(backend)  # fail before any generation, not after a batch of evaluations
        self._engine: Engine = engine_for(backend)
        self._wire()

    def _wire(self) -> None:
        policy = ContextPolicy(self.backend, self.config)
        self._criteria = CriteriaResolver(self.backend, self.config, self.criteria_cache, self._engine,
                                          self.stats, policy)
        self._evaluator = Evaluator(self.backend, self.config, self._engine, self.judgment_cache, self.stats,
                                    policy)

    def with_config(self, config: JudgeConfig) -> Judge:
        """A judge with other settings over the same backend, engine, store and counters."""
        other = Judge.__new__(Judge)
        other.__dict__.update(self.__dict__)
        other.config = config
        if config.reads_scores:
            score_reader(self.backend)
        other._wire()
        return other

    # ---- criteria -------------------------------------------------------------------------------
    def criteria_key(self, query: Query, sample_index: int = 0, response_index: int | None = None) -> str:
        """The cache key of the criteria for ``query`` (and sample, and response in the ablation)."""
        return self._criteria.key(Slot(render_query(query), sample_index, response_index))

    def criteria(self, query: Query, *, sample_index: int = 0) -> Criteria:
        """The criteria for ``query``: from the cache, or generated once and cached."""
        return aio.run(self._criteria.get(Slot(_checked_query(query), sample_index)))

    async def acriteria(self, query: Query, *, sample_index: int = 0) -> Criteria:
        """``criteria`` for async callers, from any event loop."""
        return await aio.run_async(self._criteria.get(Slot(_checked_query(query), sample_index)))

    def set_criteria(self, query: Query, text: str, *, sample_index: int = 0) -> Criteria:
        """Store user-written (or edited) criteria so that every later call for ``query`` uses them."""
        return self._criteria.put_user(Slot(_checked_query(query), sample_index), text)

    def prefetch(self, queries: Sequence[Query]) -> concurrent.futures.Future[list[Criteria]]:
        """Start generating the criteria of ``queries`` in the background and return at once.

        Criteria depend on the query alone, so an RL loop calls this with a step's prompts before their
        rollouts exist; the reward's critical path is then the evaluations. Single-flight with every other
        caller (a ``score`` of the same query awaits this generation). The future (ignore it, or wait)
        resolves to one ``Criteria`` per query; a failed generation is not cached and is retried by the next
        caller.
        """
        if not self.config.unified_criteria:
            raise ValueError("prefetch needs unified criteria: in the ablation each response has its own.")
        texts = [_checked_query(q) for q in queries]
        return aio.submit(self._prefetch(texts))

    async def _prefetch(self, texts: list[str]) -> list[Criteria]:
        found = await self._criteria.get_many([Slot(t, c) for t in texts for c in range(self.config.criteria_samples)])
        return [found[Slot(t, 0)] for t in texts]

    # ---- scoring --------------------------------------------------------------------------------
    def score(self, query: Query, responses: Sequence[str], *, criteria: Supplied = None) -> list[Judgment]:
        """Judge each response against one shared criteria set; one ``Judgment`` per response."""
        return list(self.score_batch([(query, responses)], criteria=[criteria])[0].judgments)

    async def ascore(self, query: Query, responses: Sequence[str], *, criteria: Supplied = None) -> list[Judgment]:
        """``score`` for async callers, from any event loop."""
        return list((await self.ascore_batch([(query, responses)], criteria=[criteria]))[0].judgments)

    def score_batch(self, items: Sequence[Item], *, criteria: Sequence[Supplied] | None = None
                    ) -> list[ScoredItem]:
        """Judge many (query, responses) items; one ``ScoredItem`` per item, in order.

        Items with the same query share one criteria generation (also across items and concurrent calls).
        Each item's evaluations start as soon as its criteria exist on an engine that schedules requests
        itself; an engine that takes whole batches gets every criteria turn of the call, then every
        evaluation, as one batch each.
        """
        return aio.run(self._score_batch(*self._checked(items, criteria)))

    async def ascore_batch(self, items: Sequence[Item], *, criteria: Sequence[Supplied] | None = None
                           ) -> list[ScoredItem]:
        """``score_batch`` for async callers, from any event loop (a server's, TRL's, verl's)."""
        return await aio.run_async(self._score_batch(*self._checked(items, criteria)))

    @staticmethod
    def _checked(items: Sequence[Item], criteria: Sequence[Supplied] | None
                 ) -> tuple[list[tuple[str, list[str]]], list[Supplied]]:
        supplied: list[Supplied] = list(criteria) if criteria is not None else [None] * len(items)
        if len(supplied) != len(items):
            raise ValueError(f"criteria has {len(supplied)} entries but items has {len(items)}.")
        checked = []
        for i, (query, responses) in enumerate(items):
            if isinstance(responses, str) or not all(isinstance(r, str) for r in responses):
                raise TypeError(f"item {i}: responses must be a list of strings.")
            checked.append((_checked_query(query), list(responses)))
        return checked, supplied

    def _slots(self, query_text: str, n: int) -> list[list[Slot]]:
        """Per response, its criteria slots: shared by all responses, or one per response (the ablation)."""
        cfg = self.config
        return [[Slot(query_text, c, None if cfg.unified_criteria else r) for c in range(cfg.criteria_samples)]
                for r in range(n)]

    async def _score_batch(self, items: list[tuple[str, list[str]]], supplied: list[Supplied]) -> list[ScoredItem]:
        if isinstance(self._engine, CollectingEngine):
            # one worker thread: the best schedule is the largest batches, every criteria turn then every
            # evaluation of the call (what is ready across concurrent calls still merges in the collector)
            crits = await self._criteria_of(items, supplied)
            tasks = [self._tasks(q, r, c) for (q, r), c in zip(items, crits)]
            flat = await self._evaluator.evaluate([t for ts in tasks for t in ts])
            out, pos = [], 0
            for (_, responses), c, ts in zip(items, crits, tasks):
                out.append(self._item(responses, c, flat[pos:pos + len(ts)]))
                pos += len(ts)
            return out
        return list(await asyncio.gather(*(self._score_item(q, r, u) for (q, r), u in zip(items, supplied))))

    async def _score_item(self, query_text: str, responses: list[str], user: Supplied) -> ScoredItem:
        """One item on a streaming engine: its evaluations go out the moment its own criteria exist."""
        [crits] = await self._criteria_of([(query_text, responses)], [user])
        tasks = self._tasks(query_text, responses, crits)
        return self._item(responses, crits, await self._evaluator.evaluate(tasks))

    async def _criteria_of(self, items: list[tuple[str, list[str]]], supplied: list[Supplied]
                           ) -> list[list[list[Criteria]]]:
        """Per item, per response, its criteria: the user's, or resolved for all items in one call."""
        slots = [None if u is not None else self._slots(q, len(r)) for (q, r), u in zip(items, supplied)]
        found = await self._criteria.get_many([s for per in slots if per for per_r in per for s in per_r])
        return [self._fixed(u, r) if u is not None else [[found[s] for s in per_r] for per_r in per or ()]
                for (_, r), u, per in zip(items, supplied, slots)]

    @staticmethod
    def _fixed(user: Criteria | str, responses: list[str]) -> list[list[Criteria]]:
        """User-supplied criteria, the same for every response."""
        fixed = user if isinstance(user, Criteria) else _user_criteria(user)
        return [[fixed] for _ in responses]

    def _tasks(self, query_text: str, responses: list[str], crits: list[list[Criteria]]) -> list[EvalTask]:
        return [EvalTask(query_text, c, response, s) for response, per_r in zip(responses, crits)
                for c in per_r for s in range(self.config.samples)]

    def _item(self, responses: list[str], crits: list[list[Criteria]], judgments: list[Judgment]) -> ScoredItem:
        """Aggregate the samples of each response and attach its injection flags."""
        per_response = len(judgments) // max(len(responses), 1)
        used = {c.key or c.text: c for per_r in crits for c in per_r}
        flags: dict[str, tuple[str, ...]] = {}  # the response alone decides its flags
        out = []
        for r, response in enumerate(responses):
            if response not in flags:
                flags[response] = injection_flags(response)
            samples = judgments[r * per_response:(r + 1) * per_response]
            out.append(replace(_aggregate(samples), injection_flags=flags[response]))
        return ScoredItem(tuple(used.values()), tuple(out))

    # ---- decisions ------------------------------------------------------------------------------
    def compare(self, query: Query, a: str, b: str) -> Comparison:
        """Judge ``a`` and ``b`` under one criteria set; a strict ``>`` decides, equal scores tie."""
        item = self.score_batch([(query, [a, b])])[0]
        ja, jb = item.judgments
        mode = self.config.score_mode
        return Comparison(winner(ja.value(mode), jb.value(mode)), ja, jb, item.criteria[0])

    def best_of_n(self, query: Query, responses: Sequence[str], *, tie_policy: TiePolicy = "none",
                  score_mode: ScoreMode | None = None) -> BestOfNResult:
        """Pick the best response by ``score_mode`` (default: the judge's, ``JudgeConfig.score_mode``).

        Ties at the top follow ``tie_policy``: "none" picks nothing, "first" the lowest index, "random" a
        seeded draw, "mean" re-judges the tied responses with ``tie_break_samples`` sampled evaluations and
        takes the best mean, "expected" takes the best expected score (needs ``expected_score=True``).
        """
        if not responses:
            raise ValueError("best_of_n needs at least one response.")
        mode = score_mode or self.config.score_mode
        check_pick(tie_policy, mode, self.config.expected_score)
        return self.pick_best(query, responses, self.score_batch([(query, responses)])[0], tie_policy=tie_policy,
                              score_mode=mode)

    def pick_best(self, query: Query, responses: Sequence[str], item: ScoredItem, *,
                  tie_policy: TiePolicy = "none", score_mode: ScoreMode | None = None) -> BestOfNResult:
        """``best_of_n`` on an item already scored by ``score_batch``.

        No response is judged again, except the tied ones under ``tie_policy="mean"``.
        """
        mode = score_mode or self.config.score_mode
        check_pick(tie_policy, mode, self.config.expected_score)
        if len(item.judgments) != len(responses):
            raise ValueError(f"item has {len(item.judgments)} judgments for {len(responses)} responses.")
        judgments, criteria = item.judgments, item.criteria[0]
        tied = top_tied(judgments, mode)
        if len(tied) <= 1:
            return BestOfNResult(tied[0] if tied else None, judgments, criteria, tied, tie_policy)
        if tie_policy == "none":
            index = None
        elif tie_policy == "first":
            index = tied[0]
        elif tie_policy == "random":
            index = random.Random(content_key(seed=self.config.seed, query=render_query(query))).choice(tied)
        elif tie_policy == "mean":
            index = self._break_by_mean(query, [responses[i] for i in tied], criteria, tied)
        else:
            index = best_unique([(judgments[i].expected_score, i) for i in tied])
        return BestOfNResult(index, judgments, criteria, tied, tie_policy)

    def _break_by_mean(self, query: Query, responses: list[str], criteria: Criteria, tied: tuple[int, ...]
                       ) -> int | None:
        cfg = self.config
        sampler = self.with_config(replace(cfg, samples=cfg.tie_break_samples,
                                           sample_temperature=cfg.sample_temperature or SAMPLE_TEMPERATURE))
        means = [j.score for j in sampler.score(query, responses, criteria=criteria)]
        return best_first(list(zip(means, tied)))


def _checked_query(query: Query) -> str:
    text = render_query(query)
    if not text.strip():
        raise ValueError("query is empty; give the user's question or instruction.")
    return text


def _user_criteria(text: str) -> Criteria:
    parsed = parse_criteria(text)
    return Criteria(text=text, items=parsed.items, key=content_key(kind="user-criteria", text=text),
                    source="user", parse_warning=parsed.warning)


def _aggregate(samples: list[Judgment]) -> Judgment:
    """One judgment per response: the sample itself, or the mean and spread of the valid samples."""
    if len(samples) == 1:
        return samples[0]
    valid = [j.score for j in samples if j.score is not None]
    first = next((j for j in samples if j.score is not None), samples[0])
    common: dict[str, Any] = dict(tokens_in=sum(j.tokens_in for j in samples), tokens_out=sum(j.tokens_out for j in samples),
                                  seconds=sum(j.seconds for j in samples), attempts=sum(j.attempts for j in samples),
                                  samples=tuple(samples))
    expected = [j.expected_score for j in samples if j.expected_score is not None]
    common["expected_score"] = sum(expected) / len(expected) if expected else None
    if not valid:
        return replace(first, **common)
    mean, std = mean_std(valid)
    return replace(first, score=mean, status=ParseStatus.OK, score_std=std,
                   is_off_grid=(mean * 2) != int(mean * 2), **common)
