"""Evaluation: one turn per (response, criteria, sample) against the shared criteria, then parse, retry and
the score readout; every finished judgment is cached as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cerm.backends.base import Backend
from cerm.cache import JudgmentCache, content_key
from cerm.config import JudgeConfig
from cerm.context import ContextPolicy
from cerm.engine import Engine
from cerm.parsing import parse_judgment
from cerm.prompts import PROMPT_VERSION
from cerm.readout import ReadAt, Readout, ReadoutRequest, ScoreDistribution, box_prefix, closing_prefix
from cerm.stats import JudgeStats
from cerm.types import Criteria, Generation, Judgment, ParseStatus

logger = logging.getLogger(__name__)

_CLOSABLE = {ParseStatus.TRUNCATED, ParseStatus.NO_BOX}
_RETRYABLE = {ParseStatus.EMPTY, ParseStatus.NO_BOX, ParseStatus.UNPARSEABLE, ParseStatus.OUT_OF_RANGE,
              ParseStatus.TRUNCATED}


@dataclass(frozen=True)
class EvalTask:
    """One evaluation sample: the query, the criteria it is judged against, the response, the sample index."""

    query_text: str
    criteria: Criteria
    response: str
    sample_index: int


class Evaluator:
    """Evaluations for one judge (model + config) over its engine and judgment cache."""

    def __init__(self, backend: Backend, config: JudgeConfig, engine: Engine, cache: JudgmentCache,
                 stats: JudgeStats, policy: ContextPolicy) -> None:
        self.backend = backend
        self.config = config
        self.engine = engine
        self.cache = cache
        self.stats = stats
        self.policy = policy
        # one read_at per attempt, built once: the collector merges only requests with the same one
        self._read_at = [self._make_read_at(a) for a in range(config.retries + 1)] if config.reads_scores else None

    def key(self, task: EvalTask) -> str:
        """The judgment cache key of ``task`` (everything that decides its text and its score)."""
        cfg = self.config
        readout = {name: True for name in ("expected_score", "close_unfinished") if getattr(cfg, name)}
        return content_key(kind="judgment", model=self.backend.model_id, prompt_version=PROMPT_VERSION,
                           parser=cfg.parser, decoding=cfg.eval_params(task.sample_index).__dict__,
                           retries=cfg.retries, overlong=cfg.overlong, query=task.query_text,
                           criteria=task.criteria.text, response=task.response, sample_index=task.sample_index,
                           **readout)

    async def evaluate(self, tasks: Sequence[EvalTask]) -> list[Judgment]:
        """One judgment per task, in order: cached, failed with its criteria, or generated now."""
        cfg = self.config
        results: list[Judgment | None] = [None] * len(tasks)
        keys = [self.key(t) if cfg.cache_judgments else "" for t in tasks]
        pending: dict[int, list[int]] = {}  # sample index -> task indices to generate
        for i, task in enumerate(tasks):
            if task.criteria.finish_reason == "error":
                results[i] = Judgment(None, task.criteria.error_status, criteria_key=task.criteria.key,
                                      error=task.criteria.parse_warning)
                continue
            cached = self.cache.get(keys[i]) if cfg.cache_judgments else None
            if cached is not None:
                self.stats.add(judgment_cache_hits=1)
                results[i] = cached
            else:
                pending.setdefault(task.sample_index, []).append(i)
        groups = list(pending.values())
        generated = await asyncio.gather(*(self._generate([tasks[i] for i in idxs], [keys[i] for i in idxs])
                                           for idxs in groups))
        for idxs, judgments in zip(groups, generated):
            for i, judgment in zip(idxs, judgments):
                results[i] = judgment
                if cfg.cache_judgments and judgment.status is not ParseStatus.BACKEND_ERROR:
                    self.cache.put(keys[i], judgment)
        return results  # type: ignore[return-value]

    async def _generate(self, tasks: list[EvalTask], keys: list[str]) -> list[Judgment]:
        """Generate one sample index's evaluations, retry the failed ones, then read the scores."""
        cfg = self.config
        s = tasks[0].sample_index
        prompts, truncated, too_long = [], [], []
        for t in tasks:
            messages, was_cut, is_too_long = self.policy.fit(t.query_text, t.criteria.text, t.response)
            prompts.append(messages)
            truncated.append(was_cut)
            too_long.append(is_too_long)

        def persist(k: int, g: Generation) -> None:
            # cache each finished call at once (a kill loses only what was in flight); never a backend error,
            # nor a failure a retry below may still replace; with the readout on, a judgment is stored only
            # once it carries its readout (after the call)
            if not cfg.cache_judgments or g.finish_reason == "error" or cfg.reads_scores:
                return
            j = self._parsed(g, tasks[k].criteria.key, truncated[k])
            if not (cfg.retries and j.status in _RETRYABLE):
                self.cache.put(keys[k], j)

        gens = await self._send(prompts, too_long, 0, s, persist)
        judgments = [self._judgment(g, t.criteria.key, cut) for g, t, cut in zip(gens, tasks, truncated)]
        readouts = [g.readout for g in gens]
        for attempt in range(1, cfg.retries + 1):
            redo = [k for k, j in enumerate(judgments) if j.status in _RETRYABLE]
            if not redo:
                break
            self.stats.add(retries=len(redo))
            regen = await self._send([prompts[k] for k in redo], [too_long[k] for k in redo], attempt, s, None)
            for k, g in zip(redo, regen):
                j = self._judgment(g, tasks[k].criteria.key, truncated[k])
                judgments[k] = replace(j, attempts=attempt + 1, tokens_out=j.tokens_out + judgments[k].tokens_out,
                                       seconds=j.seconds + judgments[k].seconds)
                readouts[k] = g.readout
        if cfg.reads_scores:
            judgments = await self._read_scores(prompts, judgments, readouts)
        for j in judgments:
            self.stats.count_status(j.status)
        return judgments

    async def _send(self, prompts: list, too_long: list[bool], attempt: int, sample_index: int,
                    on_done: Any) -> list[Generation]:
        """Send the prompts that fit; the others get an explicit too-long failure, never a silent cut."""
        error = f"the prompt exceeds the model context ({self.backend.context_length} tokens)"
        out: list[Generation | None] = [Generation("", "error", error=error, error_status=ParseStatus.TOO_LONG)
                                        if t else None for t in too_long]
        send = [i for i, t in enumerate(too_long) if not t]
        if send:
            done = None if on_done is None else (lambda k, g: on_done(send[k], g))
            gens = await self.engine.generate([prompts[i] for i in send], self.config.eval_params(sample_index, attempt),
                                              on_done=done,
                                              read_at=self._read_at[attempt] if self._read_at else None)
            for i, g in zip(send, gens):
                out[i] = g
        return out  # type: ignore[return-value]

    # ---- the score readout [R] ------------------------------------------------------------------------
    def _readout_prefix(self, j: Judgment) -> str | None:
        r"""Where to read ``j``'s score distribution: after its final ``\boxed{`` (expected scores) or after our
        closing text (an unfinished verdict, ``close_unfinished``); None = not read.
        """
        if j.status is ParseStatus.OK and self.config.expected_score:
            return box_prefix(j.text)
        if j.status in _CLOSABLE and self.config.close_unfinished:
            return closing_prefix(j.text)
        return None

    def _make_read_at(self, attempt: int) -> ReadAt:
        """``read_at`` for the backend at evaluation ``attempt``: a judgment that will be retried is not read."""
        def read_at(g: Generation) -> str | None:
            j = self._parsed(g, "", False)
            if attempt < self.config.retries and j.status in _RETRYABLE:
                return None
            return self._readout_prefix(j)
        return read_at

    async def _read_scores(self, prompts: list, judgments: list[Judgment], readouts: Sequence[Readout | None]
                           ) -> list[Judgment]:
        """Attach the score distribution at the final box; close unfinished verdicts when asked [R].

        A distribution the backend read during generation at the same place (``readouts[t]``) is used as
        is; the others are read now, re-reading prompt + evaluation.
        """
        found: dict[int, ScoreDistribution] = {}
        requests: dict[int, ReadoutRequest] = {}
        for t, (j, done) in enumerate(zip(judgments, readouts, strict=True)):
            prefix = self._readout_prefix(j)
            if prefix is None:
                continue
            if done is not None and done.assistant_prefix == prefix:
                found[t] = done.distribution
            else:
                requests[t] = ReadoutRequest(prompts[t], prefix)
        if requests:
            found.update(zip(requests, await self.engine.read(list(requests.values())), strict=True))
        out = list(judgments)
        for t, dist in sorted(found.items()):
            j = judgments[t]
            if not dist.ok:
                logger.warning("score readout failed: %s", dist.error)
                out[t] = replace(j, error=f"readout: {dist.error}")
                continue
            read: dict[str, Any] = dict(expected_score=dist.expected, score_probs=dist.probs, score_entropy=dist.entropy)
            if j.status is ParseStatus.OK:
                out[t] = replace(j, **read)
            else:
                out[t] = replace(j, score=dist.mode, status=ParseStatus.COMPLETED,
                                 error=f"closed: the evaluation ended {j.status.value}", **read)
        return out

    # ---- parsing ------------------------------------------------------------------------------------
    def _judgment(self, gen: Generation, criteria_key: str, is_cut: bool) -> Judgment:
        self.stats.add(evaluations_generated=1, tokens_out=gen.tokens_out)
        return self._parsed(gen, criteria_key, is_cut)

    def _parsed(self, gen: Generation, criteria_key: str, is_cut: bool) -> Judgment:
        if gen.finish_reason == "error":
            return Judgment(None, gen.error_status, text=gen.text, criteria_key=criteria_key, error=gen.error,
                            tokens_in=gen.tokens_in, seconds=gen.seconds)
        p = parse_judgment(gen.text, gen.finish_reason, self.config.parser)
        return Judgment(p.score, p.status, p.criterion_scores, p.other_points_score, p.is_off_grid, gen.text,
                        criteria_key, gen.tokens_in, gen.tokens_out, gen.seconds,
                        is_response_truncated=is_cut)
