"""``cerm.metrics``: the pairwise rule bench and RL share (strict >, ties and failures wrong), by hand."""

from __future__ import annotations

import math

import pytest

from cerm.metrics import is_better, pairwise_accuracy


@pytest.mark.parametrize(("a", "b", "better"), [(8.0, 7.5, True), (7.5, 7.5, False), (None, 1.0, False),
                                                 (3.0, None, False), (0.0, 10.0, False)])
def test_is_better_is_strict_and_never_ranks_a_failure(a, b, better):
    assert is_better(a, b) is better


def test_pairwise_accuracy_by_hand():
    assert pairwise_accuracy([9, 5, None, 7], [1, 5, 2, 8]) == 0.25  # win, tie, failure, loss
    assert math.isnan(pairwise_accuracy([], []))
    with pytest.raises(ValueError, match=r"chosen \(1\) and rejected \(2\) differ in length"):
        pairwise_accuracy([1.0], [1.0, 2.0])


def test_bench_and_rl_use_the_one_definition():
    import cerm.bench.metrics as bench
    import cerm.train.rl.metrics as rl

    assert bench.pairwise_accuracy is rl.pairwise_accuracy is pairwise_accuracy and bench.is_better is is_better
