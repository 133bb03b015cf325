"""Bootstrap CIs: seeded, bracketing the estimate, clustered and paired."""

from __future__ import annotations

import math

import pytest

from cerm.bench.metrics import mean
from cerm.bench.stats import bootstrap, paired_bootstrap


def _mean_stat(xs):
    return {"mean": mean(list(xs))}


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    data = [0, 1] * 50
    a = bootstrap(data, _mean_stat, n_resamples=300, seed=1)["mean"]
    b = bootstrap(data, _mean_stat, n_resamples=300, seed=1)["mean"]
    c = bootstrap(data, _mean_stat, n_resamples=300, seed=2)["mean"]
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low < 0.5 < a.high
    assert a.high - a.low == pytest.approx(2 * 1.96 * 0.05, rel=0.25)  # the normal-theory width


def test_bootstrap_zero_resamples_gives_point_only():
    iv = bootstrap([1.0, 2.0], _mean_stat, n_resamples=0)["mean"]
    assert iv.value == 1.5 and math.isnan(iv.low) and iv.as_dict()["ci_low"] is None


def test_clustered_bootstrap_keeps_groups_together():
    data = [("a", 1.0), ("a", 1.0), ("b", 0.0), ("b", 0.0)]
    seen = set()

    def stat(xs):
        ones = sum(v for _, v in xs)
        seen.add(ones % 2)  # a cluster always brings both of its rows
        return {"mean": mean([v for _, v in xs])}

    bootstrap(data, stat, n_resamples=50, seed=0, cluster=lambda u: u[0])
    assert seen == {0}


def test_paired_bootstrap_identical_runs_have_zero_difference():
    a = {str(i): float(i % 2) for i in range(40)}
    iv = paired_bootstrap(a, dict(a), _mean_stat, n_resamples=100)["mean"]
    assert (iv.value, iv.low, iv.high) == (0.0, 0.0, 0.0)
    b = {k: 1.0 for k in a}
    iv = paired_bootstrap(a, b, _mean_stat, n_resamples=100)["mean"]
    assert iv.value == pytest.approx(0.5) and iv.low > 0.3
    with pytest.raises(ValueError, match="share no item"):
        paired_bootstrap(a, {"x": 1.0}, _mean_stat)
