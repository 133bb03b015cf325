"""Paired comparison of two runs of one benchmark (``cerm bench compare RUN_A RUN_B``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cerm.bench.runner import load_outcomes
from cerm.bench.stats import bootstrap, json_number, paired_bootstrap


@dataclass(frozen=True)
class MetricDiff:
    """One metric in both runs, over the items they share, and B − A with a paired-bootstrap CI."""

    metric: str
    value_a: float | None
    value_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class ComparisonResult:
    """Both runs on their shared items: how many, each metric's difference, and the runs' scorers."""

    benchmark: str
    scorer_a: str
    scorer_b: str
    n_shared: int
    n_only_a: int
    n_only_b: int
    diffs: tuple[MetricDiff, ...]


def compare_runs(run_a: Path, run_b: Path, *, n_resamples: int = 1000, seed: int = 0) -> ComparisonResult:
    """Recompute both runs' metrics on their shared items; resample those items jointly for the CIs."""
    from cerm.bench import BENCHMARKS

    sa, oa = load_outcomes(run_a)
    sb, ob = load_outcomes(run_b)
    if sa["benchmark"] != sb["benchmark"]:
        raise ValueError(f"{run_a} is {sa['benchmark']} but {run_b} is {sb['benchmark']}; compare runs of one "
                         "benchmark.")
    bench = BENCHMARKS[sa["benchmark"]]
    by_a = {o.id: o for o in oa}
    by_b = {o.id: o for o in ob}
    shared = [i for i in by_a if i in by_b]
    if not shared:
        raise ValueError(f"{run_a} and {run_b} share no item id; they ran on different data or subsets.")
    clusters = {i: bench.cluster(by_a[i]) for i in shared}
    diffs = paired_bootstrap(by_a, by_b, bench.aggregate, n_resamples=n_resamples, seed=seed,
                             cluster=clusters.__getitem__)
    a_vals = bootstrap([by_a[i] for i in shared], bench.aggregate, n_resamples=0)
    b_vals = bootstrap([by_b[i] for i in shared], bench.aggregate, n_resamples=0)
    rows = tuple(MetricDiff(k, json_number(a_vals[k].value), json_number(b_vals[k].value), json_number(d.value),
                            json_number(d.low), json_number(d.high))
                 for k, d in diffs.items())
    from cerm.bench.report import scorer_label

    return ComparisonResult(bench.name, scorer_label(sa), scorer_label(sb), len(shared),
                            len(by_a) - len(shared), len(by_b) - len(shared), rows)
