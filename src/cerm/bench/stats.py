"""Percentile bootstrap CIs (plain and paired) over resampling units, seeded with ``random.Random``."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

Statistic = Callable[[Sequence[T]], Mapping[str, float]]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval (NaN bounds when it cannot be computed)."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        """The estimate as JSON: NaN becomes null."""
        return {"value": json_number(self.value), "ci_low": json_number(self.low), "ci_high": json_number(self.high)}


def json_number(x: float) -> float | None:
    """JSON has no NaN: an undefined number is written as null."""
    return None if x is None or math.isnan(x) else x


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _groups(units: Sequence[T], cluster: Callable[[T], str]) -> list[list[T]]:
    by: dict[str, list[T]] = {}
    for u in units:
        by.setdefault(cluster(u), []).append(u)
    return list(by.values())


def bootstrap(units: Sequence[T], statistic: Statistic, *, n_resamples: int = 1000, seed: int = 0,
              cluster: Callable[[T], str] | None = None, confidence: float = 0.95) -> dict[str, Interval]:
    """Percentile CIs for every key ``statistic`` returns, resampling clusters with replacement.

    ``cluster`` groups units that must be drawn together (RB2's ref/tied rows of one prompt); by
    default every unit is its own cluster. ``n_resamples=0`` gives point estimates with NaN bounds.
    """
    point = statistic(units)
    groups = _groups(units, cluster) if cluster else [[u] for u in units]
    draws: dict[str, list[float]] = {k: [] for k in point}
    rng = random.Random(seed)
    for _ in range(n_resamples if groups else 0):
        sample = [u for g in rng.choices(groups, k=len(groups)) for u in g]
        for k, v in statistic(sample).items():
            if k in draws and not math.isnan(v):
                draws[k].append(v)
    alpha = (1 - confidence) / 2
    out = {}
    for k, v in point.items():
        d = sorted(draws[k])
        # a key undefined in most resamples (a tiny subset) gets no interval rather than a skewed one
        ok = len(d) >= 0.9 * n_resamples and n_resamples > 0
        out[k] = Interval(v, _percentile(d, alpha) if ok else math.nan, _percentile(d, 1 - alpha) if ok else math.nan)
    return out


def paired_bootstrap(units_a: Mapping[str, T], units_b: Mapping[str, T], statistic: Statistic, *,
                     n_resamples: int = 1000, seed: int = 0, cluster: Callable[[str], str] | None = None,
                     confidence: float = 0.95) -> dict[str, Interval]:
    """CIs of ``statistic(B) − statistic(A)`` over the ids both runs share, resampled together."""
    ids = sorted(set(units_a) & set(units_b))
    if not ids:
        raise ValueError("the two runs share no item id; compare runs of the same benchmark items.")

    def diff(sample_ids: Sequence[str]) -> dict[str, float]:
        a = statistic([units_a[i] for i in sample_ids])
        b = statistic([units_b[i] for i in sample_ids])
        return {k: b[k] - a[k] for k in a if k in b}

    return bootstrap(ids, diff, n_resamples=n_resamples, seed=seed, cluster=cluster, confidence=confidence)
