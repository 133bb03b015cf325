"""``summary.json``: official metrics with bootstrap CIs, tie and parse-failure rates, and cost.

Layout::

    {"benchmark", "title", "notes", "n_items", "n_candidates",
     "headline": {"key", "value", "ci_low", "ci_high"},
     "metrics": {key: {"value", "ci_low", "ci_high"}},          # the benchmark's official numbers
     "tie_rate", "parse_failure_rate", "statuses": {status: n},
     "groups": {subset or subset prefix: {"n_items", "n_candidates", "parse_failures", "parse_failure_rate",
                                          "comparisons", "ties", "tie_rate"}},
     "cost": {"tokens_in_per_item", "tokens_out_per_item", "seconds_per_item", "tokens_out_total"},
     "item_ids": [...]}                                          # the run's items, in benchmark order

The runner adds scorer, data, selection, seed, warnings, prompt_version, run_stats and timing.
The tie rate is over correct-vs-incorrect candidate comparisons with two valid, equal scores [R].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from cerm.bench.common import Benchmark, Outcome, subset_prefixes
from cerm.bench.metrics import decisive_comparisons
from cerm.bench.stats import bootstrap, json_number


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def group_rates(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """Tie and parse-failure counts for every subset prefix and for "all"."""
    acc: dict[str, Counter[str]] = {}
    for o in outcomes:
        n_pairs, n_ties = decisive_comparisons(o.scores, o.correct)
        failures = sum(s is None for s in o.scores)
        for g in ["all", *subset_prefixes(o.subset)]:
            c = acc.setdefault(g, Counter())
            c.update(n_items=1, n_candidates=len(o.scores), parse_failures=failures, comparisons=n_pairs,
                     ties=n_ties)
    return {g: {"n_items": c["n_items"], "n_candidates": c["n_candidates"], "parse_failures": c["parse_failures"],
                "parse_failure_rate": _rate(c["parse_failures"], c["n_candidates"]),
                "comparisons": c["comparisons"], "ties": c["ties"], "tie_rate": _rate(c["ties"], c["comparisons"])}
            for g, c in sorted(acc.items(), key=lambda kv: (kv[0] != "all", kv[0]))}


def summarize(bench: Benchmark, outcomes: Sequence[Outcome], records: Sequence[dict[str, Any]], *,
              n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Everything in ``summary.json`` that follows from the scores (deterministic for a seed)."""
    intervals = bootstrap(outcomes, bench.aggregate, n_resamples=n_resamples, seed=seed, cluster=bench.cluster)
    metrics = {k: iv.as_dict() for k, iv in intervals.items()}
    head = bench.headline({k: iv.value for k, iv in intervals.items()})
    groups = group_rates(outcomes)
    statuses = Counter(c["status"] for r in records for c in r["candidates"])
    n = len(records)
    tokens_in = sum(c["tokens_in"] for r in records for c in r["candidates"]) + sum(
        c["tokens_in"] for r in records for c in r.get("criteria", []))
    tokens_out = sum(c["tokens_out"] for r in records for c in r["candidates"]) + sum(
        c["tokens_out"] for r in records for c in r.get("criteria", []))
    seconds = sum(c["seconds"] for r in records for c in r["candidates"]) + sum(
        c["seconds"] for r in records for c in r.get("criteria", []))
    everything = groups.get("all", {})
    return {
        "benchmark": bench.name, "title": bench.title, "notes": list(bench.notes), "n_items": n,
        "n_candidates": sum(len(r["candidates"]) for r in records),
        "headline": {"key": head, **metrics.get(head, {"value": None, "ci_low": None, "ci_high": None})},
        "metrics": metrics, "bootstrap": {"resamples": n_resamples, "confidence": 0.95, "seed": seed},
        "tie_rate": everything.get("tie_rate"), "parse_failure_rate": everything.get("parse_failure_rate"),
        "statuses": dict(sorted(statuses.items())), "groups": groups,
        "cost": {"tokens_in_per_item": json_number(tokens_in / n) if n else None,
                 "tokens_out_per_item": json_number(tokens_out / n) if n else None,
                 "seconds_per_item": json_number(seconds / n) if n else None, "tokens_out_total": tokens_out},
        "item_ids": [r["id"] for r in records],
    }
