"""What judging a set of benchmark items will cost, before it runs: model calls and generated tokens.

Calls are counted exactly for a cold judge cache, the way ``Judge.score_batch`` and the runner's chunks
make them: one criteria generation per distinct query (per response in the ablation) and sample, one
evaluation per (query, response) and sample; a query or (query, response) already judged in an earlier
chunk is a cache hit, one repeated inside a chunk is generated twice. Items of a chunk cut short by a kill
are in the cache too, so on a resume the count is an upper bound.

Tokens come from the budgets: each call generates at most its budget (``bound``, exact for a model that
always fills it), and on average ``E[min(budget, L)]`` where L is the model's natural length, known from
(a) items of this run already judged (``measured``), else (b) a sample measured once for a known model
(``cerm.bench.token_priors``), else (c) nothing: then only the bound is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cerm.bench.common import BenchItem
from cerm.bench.token_priors import PRIORS, LengthSample
from cerm.judge import JudgeConfig
from cerm.prompts import render_query

# below this many measured calls of a kind, a run's own lengths are too few to replace the prior [R]
MIN_MEASURED = 8


@dataclass(frozen=True)
class Calls:
    """Model calls (generations) of one kind each; ``total`` = criteria + evaluations."""

    criteria: int = 0
    evaluations: int = 0

    @property
    def total(self) -> int:
        """Every call of the plan."""
        return self.criteria + self.evaluations

    def __add__(self, other: Calls) -> Calls:
        return Calls(self.criteria + other.criteria, self.evaluations + other.evaluations)


def count_calls(items: Sequence[BenchItem], config: JudgeConfig, chunk_size: int) -> Calls:
    """Generations needed to judge ``items`` from a cold cache in chunks of ``chunk_size`` (workers = 1)."""
    seen_queries: set[tuple[str, int | None]] = set()
    seen_pairs: set[tuple[str, str]] = set()
    criteria = evaluations = 0
    for start in range(0, len(items), chunk_size):
        chunk = items[start:start + chunk_size]
        queries: set[tuple[str, int | None]] = set()
        pairs: list[tuple[str, str]] = []
        for it in chunk:
            text = render_query(it.prompt)
            for r, response in enumerate(it.candidates):
                queries.add((text, None if config.unified_criteria else r))
                pairs.append((text, response))
        criteria += len(queries - seen_queries) * config.criteria_samples
        evaluations += sum(p not in seen_pairs for p in pairs) * config.criteria_samples * config.samples
        seen_queries |= queries
        seen_pairs.update(pairs)
    return Calls(criteria, evaluations)


@dataclass(frozen=True)
class TokenModel:
    """Expected generated tokens per call of each kind, and where the figures come from."""

    criteria: float | None
    evaluation: float | None
    basis: str  # "measured on N items of this run", "prior: ...", or why there is none

    def expected(self, calls: Calls) -> float | None:
        """The tokens ``calls`` should generate under this prior, or None without one."""
        if self.criteria is None or self.evaluation is None:
            return None
        return calls.criteria * self.criteria + calls.evaluations * self.evaluation


def bound_tokens(calls: Calls, config: JudgeConfig) -> int:
    """Tokens if every call fills its budget: the most the calls can generate."""
    return calls.criteria * config.criteria_max_new_tokens + calls.evaluations * config.eval_max_new_tokens


def expected_under_budget(sample: LengthSample, budget: int) -> float:
    """``E[min(budget, L)]`` over a measured sample of natural lengths L (censored at ``sample.cap``).

    Above the cap the censored calls are assumed to fill the extra budget too, so the value is an upper
    estimate there; at or below the cap it is the sample's exact mean.
    """
    if not sample.lengths:
        raise ValueError("a length sample needs at least one length.")
    mean = sum(min(budget, x) for x in sample.lengths) / len(sample.lengths)
    if budget > sample.cap:
        mean += (budget - sample.cap) * sum(x >= sample.cap for x in sample.lengths) / len(sample.lengths)
    return mean


def prior_model(model: str, config: JudgeConfig) -> TokenModel | None:
    """The token model of a model measured once (``cerm.bench.token_priors``), None for any other."""
    prior = PRIORS.get(model)
    if prior is None:
        return None
    return TokenModel(expected_under_budget(prior.criteria, config.criteria_max_new_tokens),
                      expected_under_budget(prior.evaluation, config.eval_max_new_tokens),
                      f"prior: {prior.source}")


def measured_lengths(records: Iterable[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
    """Generated tokens per criteria call and per evaluation call in finished records.

    Every criteria entry is one generation (records repeat a shared one's cost, so each key counts once);
    a candidate's ``tokens_out`` sums its samples, so it is split evenly over them.
    """
    criteria: dict[str, int] = {}
    evaluations: list[int] = []
    for rec in records:
        for c in rec.get("criteria", []):
            criteria.setdefault(str(c.get("key")), int(c.get("tokens_out") or 0))
        k = max(1, int(rec.get("samples") or 1))
        evaluations.extend(round(int(c.get("tokens_out") or 0) / k) for c in rec["candidates"])
    return list(criteria.values()), evaluations


def token_model(model: str, config: JudgeConfig, criteria_lengths: Sequence[int] = (),
                evaluation_lengths: Sequence[int] = ()) -> TokenModel:
    """Measured lengths when there are enough of both kinds, else the model's prior, else whatever was
    measured (a few calls beat none), else the bound only.
    """
    measured = (TokenModel(sum(criteria_lengths) / len(criteria_lengths),
                           sum(evaluation_lengths) / len(evaluation_lengths),
                           f"measured on this run ({len(criteria_lengths)} criteria and "
                           f"{len(evaluation_lengths)} evaluation calls)")
                if criteria_lengths and evaluation_lengths else None)
    if measured is not None and min(len(criteria_lengths), len(evaluation_lengths)) >= MIN_MEASURED:
        return measured
    prior = prior_model(model, config)
    if prior is not None:
        return prior
    if measured is not None:
        return measured
    return TokenModel(None, None, f"no length measurement for {model!r} yet: the bound only, until the first "
                                  "items are judged")
