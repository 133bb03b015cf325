"""The pairwise rule every consumer of scores shares: strict ``>``, a tie or a missing score is wrong.

Benchmarks (``cerm.bench.metrics``) and RL training (``cerm.train.rl.metrics``) both report pairwise
accuracy and may not import each other, so the one definition lives in the core. A score is a float or
``None`` (the judge failed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Score = float | None


def is_better(a: Score, b: Score) -> bool:
    """Strict ``a > b``; a tie or a missing score is not better."""
    return a is not None and b is not None and a > b


def pairwise_accuracy(chosen: Sequence[Score], rejected: Sequence[Score]) -> float:
    """Share of pairs where chosen scores strictly higher. Ties and missing scores count as wrong.

    Raises:
        ValueError: the two sequences differ in length. An empty pair list gives NaN, never 0.
    """
    if len(chosen) != len(rejected):
        raise ValueError(f"chosen ({len(chosen)}) and rejected ({len(rejected)}) differ in length.")
    if not chosen:
        return math.nan
    return sum(is_better(c, r) for c, r in zip(chosen, rejected)) / len(chosen)
