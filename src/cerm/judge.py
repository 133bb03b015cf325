"""The CE-RM judge: criteria once per query, then one evaluation turn per response.

``Judge`` only orchestrates: it renders prompts, consults the caches, sends batches to a backend and
parses. It does not load data, compute benchmark metrics or serve HTTP.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cerm.backends.base import Backend, score_reader
from cerm.cache import (
    CriteriaCache,
    CriteriaRecord,
    JudgmentCache,
    Store,
    content_key,
    criteria_from_record,
    new_holder_id,
)
from cerm.injection import injection_flags
from cerm.parsing import ParserMode, parse_criteria, parse_judgment
from cerm.prompts import PROMPT_VERSION, criteria_messages, evaluation_messages, render_query
from cerm.readout import ReadAt, Readout, ReadoutRequest, ScoreDistribution, box_prefix, closing_prefix
from cerm.types import (
    CRITERIA_MAX_NEW_TOKENS,
    EVAL_MAX_NEW_TOKENS,
    SAMPLE_TEMPERATURE,
    SAMPLE_TOP_P,
    BestOfNResult,
    Comparison,
    Criteria,
    Generation,
    Judgment,
    ParseStatus,
    Query,
    SamplingParams,
    ScoredItem,
    ScoreMode,
    TiePolicy,
    mean_std,
)

logger = logging.getLogger(__name__)

# a prompt must leave at least this many tokens for the evaluation, or it is "too long" [R]
MIN_EVAL_TOKENS = 512
_CLOSABLE = {ParseStatus.TRUNCATED, ParseStatus.NO_BOX}
_RETRYABLE = {ParseStatus.EMPTY, ParseStatus.NO_BOX, ParseStatus.UNPARSEABLE, ParseStatus.OUT_OF_RANGE,
              ParseStatus.TRUNCATED}


@dataclass(frozen=True)
class JudgeConfig:
    """How the judge decodes and aggregates. Defaults follow the protocol: greedy, 4096/8192 tokens."""

    criteria_max_new_tokens: int = CRITERIA_MAX_NEW_TOKENS
    eval_max_new_tokens: int = EVAL_MAX_NEW_TOKENS
    samples: int = 1  # k evaluations per response; k > 1 samples them (test-time scaling)
    criteria_samples: int = 1  # k_c criteria sets per query; k_c > 1 samples them
    sample_temperature: float = SAMPLE_TEMPERATURE
    sample_top_p: float = SAMPLE_TOP_P
    unified_criteria: bool = True  # False = the paper's "w/o unified criteria" ablation
    parser: ParserMode = "hardened"
    retries: int = 0  # re-sample a failed evaluation up to this many extra times (off for greedy runs)
    retry_temperature: float = SAMPLE_TEMPERATURE
    seed: int = 0
    overlong: Literal["error", "truncate"] = "error"
    tie_break_samples: int = 4  # evaluations per tied response under tie_policy="mean"
    cache_judgments: bool = True
    # [R] read the 21-value score distribution at the final box (Judgment.expected_score); needs a backend
    # with score_distributions (hf, vllm, llamacpp, vLLM's server)
    expected_score: bool = False
    # [R] an evaluation without a readable box (truncated, no_box) gets our closing text and is read there:
    # status "completed", never "ok" (docs/protocol.md §10)
    close_unfinished: bool = False
    # how long another process may take to generate criteria this one waits for (then it generates them
    # itself); ours [R]: above a criteria generation's worst case, below the reward clients' timeouts
    criteria_lease_s: float = 150.0

    def __post_init__(self) -> None:
        for name in ("criteria_max_new_tokens", "eval_max_new_tokens", "samples", "criteria_samples",
                     "tie_break_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1.")
        if self.retries < 0:
            raise ValueError(f"retries ({self.retries}) must be >= 0.")
        if self.retries and self.retry_temperature <= 0:
            raise ValueError("retries re-sample, so retry_temperature must be > 0; set retries=0 for greedy-only.")
        if (self.samples > 1 or self.criteria_samples > 1) and self.sample_temperature <= 0:
            raise ValueError("samples > 1 needs sample_temperature > 0, or every sample is the same greedy text.")
        if self.parser not in ("hardened", "reference"):
            raise ValueError(f"parser {self.parser!r} must be 'hardened' or 'reference'.")
        if self.overlong not in ("error", "truncate"):
            raise ValueError(f"overlong {self.overlong!r} must be 'error' or 'truncate'.")

    def criteria_params(self, sample_index: int) -> SamplingParams:
        """Decoding of criteria sample ``sample_index``: greedy for one sample, else seeded sampling."""
        if self.criteria_samples == 1:
            return SamplingParams(0.0, 1.0, self.criteria_max_new_tokens, None)
        return SamplingParams(self.sample_temperature, self.sample_top_p, self.criteria_max_new_tokens,
                              self.seed + sample_index)

    def eval_params(self, sample_index: int, attempt: int = 0) -> SamplingParams:
        """Decoding of evaluation sample ``sample_index``; ``attempt > 0`` is a retry at ``retry_temperature``."""
        if attempt:
            return SamplingParams(self.retry_temperature, self.sample_top_p, self.eval_max_new_tokens,
                                  self.seed + 1000 * attempt + sample_index)
        if self.samples == 1:
            return SamplingParams(0.0, 1.0, self.eval_max_new_tokens, None)
        return SamplingParams(self.sample_temperature, self.sample_top_p, self.eval_max_new_tokens,
                              self.seed + sample_index)


# [R] Per-model overrides of JudgeConfig's defaults. Those are the protocol's budgets for CE-RM-4B on a GPU;
# the embedded SmolLM2-135M on a CPU would spend minutes per call on them (and judges at chance anyway).
MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "embedded": {"criteria_max_new_tokens": 192, "eval_max_new_tokens": 160},
}


def config_for_model(model: str, **explicit: Any) -> JudgeConfig:
    """JudgeConfig for ``model``: explicit values (``None`` = unset) over its overrides over the defaults."""
    values = {**MODEL_OVERRIDES.get(model, {}), **{k: v for k, v in explicit.items() if v is not None}}
    return JudgeConfig(**values)


def default_for(model: str, name: str) -> Any:
    """The value ``config_for_model(model)`` gives field ``name`` (for help texts and examples)."""
    return MODEL_OVERRIDES.get(model, {}).get(name, JudgeConfig.__dataclass_fields__[name].default)


@dataclass
class JudgeStats:
    """Running counters; ``parse_failure_rate`` is over every evaluation sample produced."""

    criteria_generated: int = 0
    criteria_cache_hits: int = 0
    criteria_lease_waits: int = 0  # cache hits on criteria another process was generating (single flight)
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
        return {
            "criteria_generated": self.criteria_generated, "criteria_cache_hits": self.criteria_cache_hits,
            "criteria_lease_waits": self.criteria_lease_waits,
            "evaluations_generated": self.evaluations_generated, "judgment_cache_hits": self.judgment_cache_hits,
            "retries": self.retries, "tokens_out": self.tokens_out, "statuses": dict(self.statuses),
            "parse_failure_rate": self.parse_failure_rate,
        }


@dataclass(frozen=True)
class _Slot:
    """One criteria generation: query, sample index, and the response index in the ablation."""

    query_text: str
    sample_index: int
    response_index: int | None


class Judge:
    """Criteria-first pointwise judge over any ``Backend``.

    Args:
        backend: the model.
        config: decoding and aggregation settings.
        store: SQLite store for the criteria and judgment caches; in-memory when omitted.
    """

    def __init__(self, backend: Backend, config: JudgeConfig | None = None, store: Store | None = None) -> None:
        self.backend = backend
        self.config = config or JudgeConfig()
        self.store = store if store is not None else Store(None)
        self.criteria_cache = CriteriaCache(self.store)
        self.judgment_cache = JudgmentCache(self.store)
        self.stats = JudgeStats()
        if self.config.expected_score or self.config.close_unfinished:
            score_reader(backend)  # fail before any generation, not after a batch of evaluations
        self._owner = new_holder_id()  # this judge's name on criteria leases: host, pid, process start

    # ---- criteria -------------------------------------------------------------------------------
    def criteria_key(self, query: Query, sample_index: int = 0, response_index: int | None = None) -> str:
        """The cache key of the criteria for ``query`` (and sample, and response in the ablation)."""
        return self._criteria_key(_Slot(render_query(query), sample_index, response_index))

    def _criteria_key(self, slot: _Slot) -> str:
        decoding = self.config.criteria_params(slot.sample_index)
        return content_key(kind="criteria", model=self.backend.model_id, prompt_version=PROMPT_VERSION,
                           decoding=decoding.__dict__, query=slot.query_text, sample_index=slot.sample_index,
                           response_index=slot.response_index)

    def criteria(self, query: Query, *, sample_index: int = 0) -> Criteria:
        """The criteria for ``query``: from the cache, or generated once and cached."""
        return self._resolve_criteria([_Slot(_checked_query(query), sample_index, None)])[0]

    def set_criteria(self, query: Query, text: str, *, sample_index: int = 0) -> Criteria:
        """Store user-written (or edited) criteria so that every later call for ``query`` uses them."""
        slot = _Slot(_checked_query(query), sample_index, None)
        key = self._criteria_key(slot)
        self.criteria_cache.put(CriteriaRecord(
            key=key, model=self.backend.model_id, prompt_version=PROMPT_VERSION,
            decoding=self.config.criteria_params(sample_index).__dict__, query=slot.query_text,
            sample_index=sample_index, text=text, is_edited=True))
        return replace(self._from_record(self.criteria_cache.get(key)), source="user")  # type: ignore[arg-type]

    def _from_record(self, record: CriteriaRecord) -> Criteria:
        parsed = parse_criteria(record.text)
        return criteria_from_record(record, parsed.items, parsed.warning)

    def _resolve_criteria(self, slots: list[_Slot]) -> list[Criteria]:
        by_slot = {s: self._criteria_key(s) for s in set(slots)}  # a merged batch repeats its queries
        keys = [by_slot[s] for s in slots]
        found: dict[str, Criteria] = {}
        missing: dict[str, _Slot] = {}
        for key, slot in zip(keys, slots):
            if key in found or key in missing:
                continue
            record = self.criteria_cache.get(key)
            if record is not None:
                found[key] = self._from_record(record)
                self.stats.add(criteria_cache_hits=1)
            else:
                missing[key] = slot
        found.update(self._generate_single_flight(missing))
        return [found[k] for k in keys]

    def _generate_single_flight(self, missing: dict[str, _Slot]) -> dict[str, Criteria]:
        """Generate missing criteria once across the processes sharing the store: a key leased by another
        process is waited for in the cache. The store renews our leases while we work and hands us one whose
        holder is gone (at once on its host, else when it stops renewing); a live holder is waited for at
        most ``criteria_lease_s``, then we generate the criteria ourselves.
        """
        done: dict[str, Criteria] = {}
        waiting = dict(missing)
        deadline = time.monotonic() + self.config.criteria_lease_s  # the wait bound, not the lease's life
        while waiting:
            mine = {k: v for k, v in waiting.items() if self.criteria_cache.lease(k, self._owner)}
            try:
                for key in list(mine):  # a holder may have stored them and released its lease just now
                    if self._take_cached(key, done):
                        del mine[key], waiting[key]
                done.update(self._generate_criteria(mine))
            finally:
                for k in mine:
                    self.criteria_cache.release(k, self._owner)
            waiting = {k: v for k, v in waiting.items() if k not in mine and not self._take_cached(k, done)}
            if waiting:
                if time.monotonic() > deadline:  # a holder that hangs: stop waiting, generate it ourselves
                    done.update(self._generate_criteria(waiting))
                    break
                time.sleep(0.02)
        return done

    def _take_cached(self, key: str, done: dict[str, Criteria]) -> bool:
        """Criteria another process generated while this one waited: a cache hit, counted as a lease wait."""
        record = self.criteria_cache.get(key)
        if record is None:
            return False
        done[key] = self._from_record(record)
        self.stats.add(criteria_cache_hits=1, criteria_lease_waits=1)
        return True

    def _generate_criteria(self, missing: dict[str, _Slot]) -> dict[str, Criteria]:
        found: dict[str, Criteria] = {}
        by_sample: dict[int, list[str]] = {}
        for key, slot in missing.items():
            by_sample.setdefault(slot.sample_index, []).append(key)
        for sample_index, group in by_sample.items():
            params = self.config.criteria_params(sample_index)
            prompts = [criteria_messages(missing[k].query_text) for k in group]
            gens = self._generate_checked(prompts, params, [self._too_long(p) for p in prompts])
            for key, gen in zip(group, gens):
                found[key] = self._store_criteria(key, missing[key], params, gen)
        return found

    def _store_criteria(self, key: str, slot: _Slot, params: SamplingParams, gen: Generation) -> Criteria:
        self.stats.add(criteria_generated=1, tokens_out=gen.tokens_out)
        parsed = parse_criteria(gen.text)
        if parsed.warning and gen.finish_reason != "error":
            logger.warning("criteria %s: %s (display only; scoring continues)", key[:12], parsed.warning)
        criteria = Criteria(text=gen.text, items=parsed.items, key=key, source="generated",
                            parse_warning=parsed.warning, finish_reason=gen.finish_reason,
                            tokens_in=gen.tokens_in, tokens_out=gen.tokens_out, seconds=gen.seconds)
        if gen.finish_reason == "error":
            # never cache a failure: the next call retries the generation
            return replace(criteria, parse_warning=gen.error or "criteria generation failed",
                           error_status=gen.error_status)
        self.criteria_cache.put(CriteriaRecord(
            key=key, model=self.backend.model_id, prompt_version=PROMPT_VERSION, decoding=params.__dict__,
            query=slot.query_text, sample_index=slot.sample_index, text=gen.text,
            finish_reason=gen.finish_reason, tokens_in=gen.tokens_in, tokens_out=gen.tokens_out,
            seconds=gen.seconds))
        return criteria

    # ---- scoring --------------------------------------------------------------------------------
    def score(self, query: Query, responses: Sequence[str], *, criteria: Criteria | str | None = None
              ) -> list[Judgment]:
        """Judge each response against one shared criteria set; one ``Judgment`` per response."""
        return list(self.score_batch([(query, responses)], criteria=[criteria])[0].judgments)

    def score_batch(self, items: Sequence[tuple[Query, Sequence[str]]], *,
                    criteria: Sequence[Criteria | str | None] | None = None) -> list[ScoredItem]:
        """Judge many (query, responses) items in as few backend calls as possible.

        Items with the same query share one criteria generation (also across items). Every evaluation
        sample of one sampling setting goes to the backend as one batch.
        """
        cfg = self.config
        supplied = list(criteria) if criteria is not None else [None] * len(items)
        if len(supplied) != len(items):
            raise ValueError(f"criteria has {len(supplied)} entries but items has {len(items)}.")
        query_texts = [_checked_query(q) for q, _ in items]
        for i, (_, responses) in enumerate(items):
            if isinstance(responses, str) or not all(isinstance(r, str) for r in responses):
                raise TypeError(f"item {i}: responses must be a list of strings.")
        # 1. criteria: every slot, deduplicated by key, generated in one batch per sample index
        item_criteria: list[list[list[Criteria]]] = []  # [item][response][criteria sample]
        slots: list[_Slot] = []
        for qt, (_, responses), user in zip(query_texts, items, supplied):
            if user is None:
                for r in range(len(responses)):
                    for c in range(cfg.criteria_samples):
                        slots.append(_Slot(qt, c, None if cfg.unified_criteria else r))
        resolved = iter(self._resolve_criteria(slots))
        for _qt, (_, responses), user in zip(query_texts, items, supplied):
            if user is not None:
                fixed = user if isinstance(user, Criteria) else _user_criteria(user)
                item_criteria.append([[fixed] for _ in responses])
            else:
                item_criteria.append([[next(resolved) for _ in range(cfg.criteria_samples)] for _ in responses])
        # 2. evaluations
        tasks = [(i, r, crit, s) for i, (_, responses) in enumerate(items) for r in range(len(responses))
                 for crit in item_criteria[i][r] for s in range(cfg.samples)]
        results = self._evaluate([(query_texts[i], crit, items[i][1][r], s) for i, r, crit, s in tasks])
        grouped: dict[tuple[int, int], list[Judgment]] = {}
        for (i, r, _, _), j in zip(tasks, results):
            grouped.setdefault((i, r), []).append(j)
        out = []
        flags: dict[str, tuple[str, ...]] = {}  # the response alone decides its flags
        for i, (_, responses) in enumerate(items):
            used = {c.key or c.text: c for per_r in item_criteria[i] for c in per_r}
            judgments = []
            for r, response in enumerate(responses):
                if response not in flags:
                    flags[response] = injection_flags(response)
                judgments.append(replace(_aggregate(grouped[(i, r)]), injection_flags=flags[response]))
            out.append(ScoredItem(tuple(used.values()), tuple(judgments)))
        return out

    def _evaluate(self, tasks: list[tuple[str, Criteria, str, int]]) -> list[Judgment]:
        cfg = self.config
        results: list[Judgment | None] = [None] * len(tasks)
        keys: list[str] = []
        pending: dict[int, list[int]] = {}  # sample index -> task indices to generate
        for t, (qt, crit, response, s) in enumerate(tasks):
            key = content_key(kind="judgment", model=self.backend.model_id, prompt_version=PROMPT_VERSION,
                              parser=cfg.parser, decoding=cfg.eval_params(s).__dict__, retries=cfg.retries,
                              overlong=cfg.overlong, query=qt, criteria=crit.text, response=response,
                              sample_index=s, **self._readout_key()) if cfg.cache_judgments else ""
            keys.append(key)
            if crit.finish_reason == "error":
                results[t] = Judgment(None, crit.error_status, criteria_key=crit.key,
                                      error=crit.parse_warning)
                continue
            cached = self.judgment_cache.get(key) if cfg.cache_judgments else None
            if cached is not None:
                self.stats.add(judgment_cache_hits=1)
                results[t] = cached
            else:
                pending.setdefault(s, []).append(t)
        for s, idxs in pending.items():
            persist = None
            if cfg.cache_judgments:
                def persist(k: int, j: Judgment, idxs: list[int] = idxs) -> None:
                    self.judgment_cache.put(keys[idxs[k]], j)
            for t, judgment in zip(idxs, self._generate_evaluations([tasks[t] for t in idxs], s, persist)):
                results[t] = judgment
                if cfg.cache_judgments and judgment.status is not ParseStatus.BACKEND_ERROR:
                    self.judgment_cache.put(keys[t], judgment)
        return results  # type: ignore[return-value]

    def _generate_evaluations(self, tasks: list[tuple[str, Criteria, str, int]], s: int,
                              persist: Callable[[int, Judgment], None] | None = None) -> list[Judgment]:
        prompts, truncated, too_long = [], [], []
        for qt, crit, response, _ in tasks:
            messages, was_cut, is_too_long = self._fit(qt, crit.text, response)
            prompts.append(messages)
            truncated.append(was_cut)
            too_long.append(is_too_long)

        def on_done(t: int, g: Generation) -> None:
            # cache each finished call at once (a kill loses only what was in flight); never a backend
            # error, nor a failure that a retry below may still replace; with the score readout on, a
            # judgment is stored only once it carries its readout (after the batch)
            if persist is None or g.finish_reason == "error" or self._readout_key():
                return
            j = self._parsed(g, tasks[t][1].key, truncated[t])
            if not (self.config.retries and j.status in _RETRYABLE):
                persist(t, j)

        reading = self.config.expected_score or self.config.close_unfinished
        gens = self._generate_checked(prompts, self.config.eval_params(s), too_long, on_done,
                                      self._read_at(0) if reading else None)
        judgments = [self._judgment(g, crit.key, cut) for g, (_, crit, _, _), cut in zip(gens, tasks, truncated)]
        readouts = [g.readout for g in gens]
        for attempt in range(1, self.config.retries + 1):
            redo = [t for t, j in enumerate(judgments) if j.status in _RETRYABLE]
            if not redo:
                break
            self.stats.add(retries=len(redo))
            regen = self._generate_checked([prompts[t] for t in redo], self.config.eval_params(s, attempt),
                                           [too_long[t] for t in redo], None,
                                           self._read_at(attempt) if reading else None)
            for t, g in zip(redo, regen):
                j = self._judgment(g, tasks[t][1].key, truncated[t])
                judgments[t] = replace(j, attempts=attempt + 1, tokens_out=j.tokens_out + judgments[t].tokens_out,
                                       seconds=j.seconds + judgments[t].seconds)
                readouts[t] = g.readout
        if reading:
            judgments = self._read_scores(prompts, judgments, readouts)
        for j in judgments:
            self.stats.count_status(j.status)
        return judgments

    def _readout_key(self) -> dict[str, bool]:
        cfg = self.config
        return {name: True for name in ("expected_score", "close_unfinished") if getattr(cfg, name)}

    def _readout_prefix(self, j: Judgment) -> str | None:
        r"""Where to read ``j``'s score distribution: after its final ``\boxed{`` (expected scores) or after our
        closing text (an unfinished verdict, ``close_unfinished``); None = not read.
        """
        if j.status is ParseStatus.OK and self.config.expected_score:
            return box_prefix(j.text)
        if j.status in _CLOSABLE and self.config.close_unfinished:
            return closing_prefix(j.text)
        return None

    def _read_at(self, attempt: int) -> ReadAt:
        """``read_at`` for the backend at evaluation ``attempt``: a judgment that will be retried is not read."""
        def read_at(g: Generation) -> str | None:
            j = self._parsed(g, "", False)
            if attempt < self.config.retries and j.status in _RETRYABLE:
                return None
            return self._readout_prefix(j)
        return read_at

    def _read_scores(self, prompts: list, judgments: list[Judgment], readouts: Sequence[Readout | None]
                     ) -> list[Judgment]:
        """Attach the score distribution at the final box; close unfinished verdicts when asked [R].

        A distribution the backend read during generation at the same place (``readouts[t]``) is used as
        is; the others are read now, re-reading prompt + evaluation.
        """
        reader = score_reader(self.backend)  # raises when the backend cannot: no silent greedy fallback
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
            found.update(zip(requests, reader.score_distributions(list(requests.values())), strict=True))
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

    # ---- context-length policy ------------------------------------------------------------------
    def _fit(self, query_text: str, criteria_text: str, response: str) -> tuple[list, bool, bool]:
        """Evaluation messages for one response under the context policy [R].

        Returns (messages, was_cut, is_too_long). With overlong="error" a prompt that leaves fewer than
        ``MIN_EVAL_TOKENS`` free is too long (an explicit ``too_long`` status); with "truncate" the response
        is cut from the end until it fits and the judgment says so (``is_response_truncated``).
        """
        messages = evaluation_messages(query_text, criteria_text, response)
        limit = self._prompt_limit()
        n = self.backend.count_tokens(messages) if limit is not None else None
        if limit is None or n is None or n <= limit:
            return messages, False, False
        if self.config.overlong == "error":
            return messages, False, True
        base = self.backend.count_tokens(evaluation_messages(query_text, criteria_text, "")) or 0
        if base > limit:
            return messages, False, True
        keep = len(response)
        while keep > 0 and n > limit:
            # shrink in proportion to the overshoot, by at least 5% per step
            keep = min(int(keep * (limit - base) / max(n - base, 1)), int(keep * 0.95))
            messages = evaluation_messages(query_text, criteria_text, response[:keep])
            n = self.backend.count_tokens(messages) or 0
        return messages, True, False

    def _prompt_limit(self) -> int | None:
        ctx = self.backend.context_length
        return None if ctx is None else ctx - min(self.config.eval_max_new_tokens, MIN_EVAL_TOKENS)

    def _too_long(self, messages: list) -> bool:
        limit = self._prompt_limit()
        if limit is None:
            return False
        n = self.backend.count_tokens(messages)
        return n is not None and n > limit

    def _generate_checked(self, prompts: list, params: SamplingParams, too_long: list[bool],
                          on_done: Callable[[int, Generation], None] | None = None,
                          read_at: ReadAt | None = None) -> list[Generation]:
        """Send the prompts that fit; the others get an explicit too-long failure, never a silent cut.

        ``on_done(prompt index, generation)`` runs as each call finishes on backends that report so
        (``cerm.backends.base``); on the others, once per call. ``read_at`` goes to a backend that reads
        score distributions during generation (hf); the others' are read afterwards (``_read_scores``).
        """
        error = f"the prompt exceeds the model context ({self.backend.context_length} tokens)"
        out: list[Generation | None] = [Generation("", "error", error=error, error_status=ParseStatus.TOO_LONG)
                                        if t else None for t in too_long]
        send = [i for i, t in enumerate(too_long) if not t]
        if send:
            batch = [prompts[i] for i in send]
            extra: dict[str, Any] = {}
            if on_done is not None and _takes(self.backend, "on_done"):
                extra["on_done"] = lambda k, g: on_done(send[k], g)
            if read_at is not None and _takes(self.backend, "read_at"):
                extra["read_at"] = read_at
            gens = self.backend.generate(batch, params, **extra)
            for i, g in zip(send, gens):
                out[i] = g
        return out  # type: ignore[return-value]

    # ---- decisions ------------------------------------------------------------------------------
    def compare(self, query: Query, a: str, b: str) -> Comparison:
        """Judge ``a`` and ``b`` under one criteria set; a strict ``>`` decides, equal scores tie."""
        item = self.score_batch([(query, [a, b])])[0]
        ja, jb = item.judgments
        if ja.score is None or jb.score is None:
            winner = None
        else:
            winner = "a" if ja.score > jb.score else "b" if jb.score > ja.score else "tie"
        return Comparison(winner, ja, jb, item.criteria[0])  # type: ignore[arg-type]

    def best_of_n(self, query: Query, responses: Sequence[str], *, tie_policy: TiePolicy = "none",
                  score_mode: ScoreMode = "greedy") -> BestOfNResult:
        """Pick the best response by ``score_mode`` ("greedy" score or "expected" score [R]).

        Ties at the top follow ``tie_policy``: "none" picks nothing, "first" the lowest index, "random" a
        seeded draw, "mean" re-judges the tied responses with ``tie_break_samples`` sampled evaluations and
        takes the best mean, "expected" takes the best expected score (needs ``expected_score=True``).
        """
        if not responses:
            raise ValueError("best_of_n needs at least one response.")
        self._check_pick(tie_policy, score_mode)
        return self.pick_best(query, responses, self.score_batch([(query, responses)])[0], tie_policy=tie_policy,
                              score_mode=score_mode)

    def _check_pick(self, tie_policy: TiePolicy, score_mode: ScoreMode) -> None:
        if tie_policy not in ("none", "first", "random", "mean", "expected"):
            raise ValueError(f"tie_policy {tie_policy!r} must be one of none, first, random, mean, expected.")
        if "expected" in (tie_policy, score_mode) and not self.config.expected_score:
            raise ValueError("expected scores need JudgeConfig(expected_score=True) (--score expected).")

    def pick_best(self, query: Query, responses: Sequence[str], item: ScoredItem, *,
                  tie_policy: TiePolicy = "none", score_mode: ScoreMode = "greedy") -> BestOfNResult:
        """``best_of_n`` on an item already scored by ``score_batch``.

        No response is judged again, except the tied ones under ``tie_policy="mean"``.
        """
        self._check_pick(tie_policy, score_mode)
        if len(item.judgments) != len(responses):
            raise ValueError(f"item has {len(item.judgments)} judgments for {len(responses)} responses.")
        judgments = item.judgments
        valid = [(v, i) for i, j in enumerate(judgments) if (v := j.value(score_mode)) is not None]
        if not valid:
            return BestOfNResult(None, judgments, item.criteria[0], (), tie_policy)
        top = max(s for s, _ in valid)
        tied = tuple(i for s, i in valid if s == top)
        if len(tied) == 1:
            return BestOfNResult(tied[0], judgments, item.criteria[0], tied, tie_policy)
        if tie_policy == "none":
            index = None
        elif tie_policy == "first":
            index = tied[0]
        elif tie_policy == "random":
            index = random.Random(content_key(seed=self.config.seed, query=render_query(query))).choice(tied)
        elif tie_policy == "mean":
            index = self._break_by_mean(query, [responses[i] for i in tied], item.criteria[0], tied)
        else:
            index = _best_unique([(judgments[i].expected_score, i) for i in tied])
        return BestOfNResult(index, judgments, item.criteria[0], tied, tie_policy)

    def _break_by_mean(self, query: Query, responses: list[str], criteria: Criteria, tied: tuple[int, ...]
                       ) -> int | None:
        sampler = Judge(self.backend, replace(self.config, samples=self.config.tie_break_samples,
                                              sample_temperature=self.config.sample_temperature or SAMPLE_TEMPERATURE),
                        self.store)
        sampler.stats = self.stats
        means = [j.score for j in sampler.score(query, responses, criteria=criteria)]
        valid = [(m, i) for m, i in zip(means, tied) if m is not None]
        if not valid:
            return None
        best = max(m for m, _ in valid)
        return next(i for m, i in valid if m == best)


def _best_unique(values: list[tuple[float | None, int]]) -> int | None:
    """The index with the single highest value; None when values are missing or the top is still tied."""
    valid = [(v, i) for v, i in values if v is not None]
    if not valid:
        return None
    top = max(v for v, _ in valid)
    best = [i for v, i in valid if v == top]
    return best[0] if len(best) == 1 else None
def _takes(backend: Backend, keyword: str) -> bool:
    """The backend's ``generate`` takes the optional ``keyword`` (``on_done``, ``read_at``: cerm.backends.base)."""
    try:
        return keyword in inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return False


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
