"""Reward-model benchmarks with their official metrics: one module per benchmark, one registry dict.

>>> from cerm.bench import BENCHMARKS, RunConfig, run_benchmark
>>> bench = BENCHMARKS["judgebench"]

Heavy imports (matplotlib, sentence-transformers, datasets) happen inside the functions that need them.
May import: the core and the backend seam; never ``reward``, ``train`` or ``cli``.
"""

from cerm.bench import judgebench, ppe, rewardbench, rewardbench2, rm_bench, rmb
from cerm.bench.common import (
    BenchItem,
    Benchmark,
    DataError,
    Outcome,
    load_items,
    resolve_sources,
    select_items,
)
from cerm.bench.runner import RunConfig, RunResult, load_outcomes, run_benchmark

BENCHMARKS: dict[str, Benchmark] = {
    "judgebench": judgebench.BENCHMARK,
    "rm-bench": rm_bench.BENCHMARK,
    "rmb": rmb.BENCHMARK,
    "rewardbench": rewardbench.BENCHMARK,
    "rewardbench2": rewardbench2.BENCHMARK,
    "ppe": ppe.BENCHMARK,
}

__all__ = [
    "BENCHMARKS", "Benchmark", "BenchItem", "DataError", "Outcome", "RunConfig", "RunResult", "load_items",
    "load_outcomes", "resolve_sources", "run_benchmark", "select_items",
]
