"""cerm as a verl reward: the implementation behind ``cerm/reward/verl.py`` (the file verl loads).

verl (0.9: the reward loop) calls ``compute_score(data_source, solution_str, ground_truth, extra_info,
**kwargs)`` once per sample under every reward-loop manager (naive, dapo, gdpo, rate_limited, remote), or
``compute_score_async`` (detected as a coroutine; not under ``remote``, which runs functions in Ray actors).
``solution_str`` is the decoded response only; the query must travel in ``extra_info["question"]``
(docs/architecture.md §4.2). Concurrent calls share judge batches, and the criteria are generated once per prompt
(the server's or the in-process judge's cache).

Settings come from ``reward.custom_reward_function.reward_kwargs`` (verl merges them into every call):

- ``cerm_url``: a ``cerm serve`` replica (recommended: it owns the criteria cache and batches across
  verl's workers); or, without it, an in-process judge built from ``cerm_backend`` (default ``hf``),
  ``cerm_model``, ``cerm_cache`` (SQLite file shared by processes), ``cerm_criteria_max_new_tokens``,
  ``cerm_eval_max_new_tokens``. With ``reward.reward_model.enable`` verl serves the judge itself and
  passes ``reward_router_address``; cerm then talks to that server through the openai backend, with the
  model name the server reports at ``/v1/models`` unless ``cerm_model`` is set.
- ``cerm_token``, ``cerm_timeout_s``, ``cerm_retries`` (on 429/5xx, with backoff): for ``cerm_url``.
- ``cerm_scale`` ("unit" or "raw"), ``cerm_failure_reward`` (default 0.0 [R]), ``cerm_strip_think``,
  ``cerm_query_key`` (default "question").
- ``cerm_score`` ("greedy" or "expected"): "expected" rewards the expected score over the 21 values at the
  box, a continuous reward [R] (in-process judge only; a server is started with ``cerm serve --score expected``).

Each call returns ``{"score": reward, "cerm_parse_fail": 0.0 | 1.0}``; verl logs the extra key.

A backend failure (server down, judge crashed) raises ``VerlRewardAbort`` and the run stops: no reward
is made up. It derives from ``BaseException`` on purpose: verl's ``rate_limited`` manager catches every
``Exception`` from the reward function and writes reward 0.0 for it (verl 0.9.1, reward_manager/limited.py),
which would train on made-up rewards; verl offers no way to mark a sample invalid.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Literal

from cerm.backends.base import DEFAULT_MODEL
from cerm.reward.scoring import BackendFailure, RewardConfig, group_ids, reward_rule, strip_think
from cerm.types import Query, ScoreMode


class VerlRewardAbort(BaseException):
    """The judge's backend failed: stop the verl run (a ``BaseException``, see the module docstring)."""


@dataclass(frozen=True)
class VerlSettings:
    """The ``cerm_*`` reward kwargs, checked."""

    url: str | None = None
    token: str | None = None
    timeout_s: float = 600.0
    retries: int = 4
    backend: str = "hf"
    model: str | None = None  # None: the router's served model, else DEFAULT_MODEL
    cache: str | None = None
    criteria_max_new_tokens: int | None = None  # None: the model's own budget (cerm.config.config_for_model)
    eval_max_new_tokens: int | None = None
    router_address: str | None = None
    scale: Literal["unit", "raw"] = "unit"
    failure_reward: float = 0.0
    strip_think: bool = True
    query_key: str = "question"
    score: Literal["greedy", "expected"] = "greedy"  # "expected": the continuous readout at the box [R]

    def __post_init__(self) -> None:
        if self.scale not in ("unit", "raw"):
            raise ValueError(f"cerm_scale {self.scale!r} must be 'unit' or 'raw' (verl scores one sample at a time).")
        if self.score not in ("greedy", "expected"):
            raise ValueError(f"cerm_score {self.score!r} must be 'greedy' or 'expected'.")
        if self.score == "expected" and self.url:
            raise ValueError("cerm_score='expected' needs the in-process judge; for a server start it with "
                             "`cerm serve --score expected` (its /get_reward is then expected).")

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> VerlSettings:
        """The settings from verl's merged call kwargs (unknown ``cerm_*`` keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in kwargs if k.startswith("cerm_") and k[5:] not in names)
        if unknown:
            raise ValueError(f"unknown cerm reward_kwargs {unknown}; known: {sorted('cerm_' + n for n in names)}.")
        values = {k[5:]: v for k, v in kwargs.items() if k.startswith("cerm_")}
        if kwargs.get("reward_router_address"):
            values["router_address"] = kwargs["reward_router_address"]
        return cls(**values)


@dataclass(frozen=True)
class Verdict:
    """A judgment as the reward rule reads it (from the in-process judge or a ``cerm serve`` reply)."""

    score: float | None
    status: str
    error: str | None = None


class _LocalScorer:
    """An in-process judge behind a dynamic batcher, so concurrent verl calls share backend batches."""

    def __init__(self, s: VerlSettings) -> None:
        from cerm.backends.base import get_backend
        from cerm.cache import Store
        from cerm.judge import Judge, config_for_model
        from cerm.reward.batcher import DynamicBatcher

        if s.router_address:
            url = f"http://{s.router_address}/v1"
            backend = get_backend("openai", s.model or served_model(url), base_urls=[url], api_key=None)
        else:
            backend = get_backend(s.backend, s.model or DEFAULT_MODEL)
        # the per-model budgets, as the CLI gets them (the embedded model: 192/160, not CE-RM-4B's 4096/8192)
        config = config_for_model(s.model or DEFAULT_MODEL, criteria_max_new_tokens=s.criteria_max_new_tokens,
                                  eval_max_new_tokens=s.eval_max_new_tokens, expected_score=s.score == "expected")
        judge = Judge(backend, config, Store(s.cache))
        self.batcher = DynamicBatcher(judge)
        self.judge = judge
        self.mode = judge.config.score_mode

    def _submit(self, groups: dict[int, tuple[Query, list[str]]]):
        from cerm.reward.batcher import BatchItem

        return self.batcher.submit([BatchItem(q, r) for q, r in groups.values()])

    def score(self, groups: dict[int, tuple[Query, list[str]]]) -> list[list[Verdict]]:
        return _verdicts(self._submit(groups).result(), self.mode)

    async def ascore(self, groups: dict[int, tuple[Query, list[str]]]) -> list[list[Verdict]]:
        return _verdicts(await asyncio.wrap_future(self._submit(groups)), self.mode)


def served_model(base_url: str, timeout_s: float = 30.0) -> str:
    """The one model an OpenAI-compatible server serves (``GET /v1/models``); verl's GRM router serves the
    model of ``reward.reward_model.model_path`` under whatever name its engine reports.
    """
    import httpx

    try:
        reply = httpx.get(f"{base_url}/models", timeout=timeout_s)
        reply.raise_for_status()
        ids = [m["id"] for m in reply.json()["data"]]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
        raise RuntimeError(f"cannot read the served model from {base_url}/models ({type(e).__name__}: {e}); "
                           "set reward_kwargs.cerm_model.") from e
    if len(ids) != 1:
        raise RuntimeError(f"{base_url}/models lists {len(ids)} models {ids}; choose one with "
                           "reward_kwargs.cerm_model.")
    return ids[0]


def _verdicts(scored: list, mode: ScoreMode = "greedy") -> list[list[Verdict]]:
    return [[Verdict(j.value(mode), j.status.value, j.error) for j in item.judgments] for item in scored]


class _RemoteScorer:
    """A ``cerm serve`` replica; one ``/v1/score`` request per prompt, sent concurrently."""

    def __init__(self, s: VerlSettings) -> None:
        from cerm.reward.client import CermClient

        self.client = CermClient(s.url, token=s.token, timeout_s=s.timeout_s,  # type: ignore[arg-type]
                                 retries=s.retries)
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cerm-verl")

    def score(self, groups: dict[int, tuple[Query, list[str]]]) -> list[list[Verdict]]:
        replies = list(self.pool.map(lambda qr: self.client.score(*qr), groups.values()))
        return [[Verdict(j.score, j.status, j.error) for j in r.judgments] for r in replies]

    async def ascore(self, groups: dict[int, tuple[Query, list[str]]]) -> list[list[Verdict]]:
        replies = await asyncio.gather(*(self.client.ascore(q, r) for q, r in groups.values()))
        return [[Verdict(j.score, j.status, j.error) for j in r.judgments] for r in replies]


# verl calls a bare function once per sample, so the judge (or client) must stay resident in the
# process rather than be rebuilt per call (cf. modelscope/ms-swift#5585); one per distinct settings.
_SCORERS: dict[VerlSettings, _LocalScorer | _RemoteScorer] = {}
_SCORERS_LOCK = threading.Lock()


def _scorer(s: VerlSettings) -> _LocalScorer | _RemoteScorer:
    with _SCORERS_LOCK:
        if s not in _SCORERS:
            _SCORERS[s] = _RemoteScorer(s) if s.url else _LocalScorer(s)
        return _SCORERS[s]


def _query(extra_info: dict[str, Any] | None, s: VerlSettings) -> Query:
    if not extra_info or s.query_key not in extra_info:
        raise ValueError(f"verl passes no prompt to the reward function: put the user query in "
                         f"extra_info[{s.query_key!r}] when building the parquet (examples/verl/prepare_data.py).")
    query = extra_info[s.query_key]
    if isinstance(query, str):
        return query
    # parquet round-trips message lists as arrays of dicts; CE-RM never sees a system message
    messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in query if m["role"] != "system"]
    if not messages:
        raise ValueError(f"extra_info[{s.query_key!r}] holds no user message.")
    return messages[0]["content"] if len(messages) == 1 else messages  # type: ignore[return-value]


def _plan(solution_strs: Sequence[str], extra_infos: Sequence[dict | None], s: VerlSettings
          ) -> tuple[list[int], dict[int, tuple[Query, list[str]]]]:
    queries = [_query(e, s) for e in extra_infos]
    from cerm.prompts import render_query

    ids = group_ids([render_query(q) for q in queries])
    groups: dict[int, tuple[Query, list[str]]] = {}
    for g, sol in zip(ids, solution_strs, strict=True):
        groups.setdefault(g, (queries[g], []))[1].append(strip_think(sol) if s.strip_think else sol)
    return ids, groups


def _results(ids: list[int], groups: dict, verdicts: list[list[Verdict]], s: VerlSettings) -> list[dict[str, Any]]:
    by_group = {g: iter(v) for g, v in zip(groups, verdicts, strict=True)}
    flat = [next(by_group[g]) for g in ids]
    config = RewardConfig(scale=s.scale, failure_reward=s.failure_reward)
    try:
        rewards = reward_rule(flat, ids, config)
    except BackendFailure as e:
        raise VerlRewardAbort(f"cerm reward: {e}; stopping instead of training on made-up rewards.") from e
    return [{"score": r, "cerm_parse_fail": float(v.score is None)} for r, v in zip(rewards, flat, strict=True)]


async def _ascore(scorer: _LocalScorer | _RemoteScorer, groups: dict) -> list[list[Verdict]]:
    try:
        return await scorer.ascore(groups)
    except Exception as e:
        raise VerlRewardAbort(f"cerm reward: the judge failed ({type(e).__name__}: {e}).") from e


def _score(scorer: _LocalScorer | _RemoteScorer, groups: dict) -> list[list[Verdict]]:
    try:
        return scorer.score(groups)
    except Exception as e:
        raise VerlRewardAbort(f"cerm reward: the judge failed ({type(e).__name__}: {e}).") from e


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """Verl's per-sample reward function (every reward-loop manager)."""
    s = VerlSettings.from_kwargs(kwargs)
    ids, groups = _plan([solution_str], [extra_info], s)
    return _results(ids, groups, _score(_scorer(s), groups), s)[0]


async def compute_score_async(data_source: str, solution_str: str, ground_truth: Any,
                              extra_info: dict | None = None, **kwargs: Any) -> dict[str, Any]:
    """Verl's async per-sample reward function; concurrent calls share judge batches."""
    s = VerlSettings.from_kwargs(kwargs)
    ids, groups = _plan([solution_str], [extra_info], s)
    return _results(ids, groups, await _ascore(_scorer(s), groups), s)[0]
