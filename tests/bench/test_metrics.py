"""Pure metric functions against hand-computed cases (and brute force where one exists)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cerm.bench.metrics import (
    best_of_n_credit,
    bon_correct,
    correct_pair_accuracy,
    decisive_comparisons,
    expected_best_of_k,
    is_better,
    judgebench_correct,
    judgebench_decision,
    pairwise_accuracy,
    prompt_stats,
    rb1_credit,
    rm_bench_levels,
    rm_bench_matrix,
    section_scores,
    ties_score,
)


def test_pairwise_accuracy_ties_and_failures_are_wrong():
    assert pairwise_accuracy([8, 5, None, 7], [3, 5, 2, None]) == 0.25
    assert math.isnan(pairwise_accuracy([], []))
    with pytest.raises(ValueError):
        pairwise_accuracy([1], [])
    assert not is_better(None, None)


@pytest.mark.parametrize(("c", "r", "credit"), [(9, 2, 1.0), (2, 9, 0.0), (4, 4, 0.5), (None, 3, 0.5), (3, None, 0.5)])
def test_rb1_credit(c, r, credit):
    assert rb1_credit(c, r) == credit


def test_section_scores_weighting_and_absent_sections():
    counts = {"a": 100, "b": 300, "c": 10}
    out = section_scores({"a": 1.0, "b": 0.0}, counts, {"S": ["a", "b"], "T": ["c"]})
    assert out == {"S": pytest.approx(0.25)}  # (1*100 + 0*300)/400; T absent, not a silent 0


@pytest.mark.parametrize(("scores", "credit"), [
    ([9, 1, 2, 3], 1.0), ([8, 8, 3, 2], 0.5), ([6, 6, 6, 6], 0.25), ([2, 7, 1, 1], 0.0),
    ([None, 5, 4, 3], 0.0), ([None, None, None, None], 0.25), ([5, None, None, None], 1.0), ([5, 5, None, 5], 1 / 3),
])
def test_best_of_n_credit(scores, credit):
    assert best_of_n_credit(scores) == pytest.approx(credit)


def test_prompt_stats_uses_failed_sentinel():
    assert prompt_stats([9, 3, 2], 1) == (True, None, 6)
    assert prompt_stats([None, 9, 4], 2) == (False, 10, -5)  # the failed correct answer is -1
    with pytest.raises(ValueError):
        prompt_stats([1, 2], 2)


def test_ties_score_by_hand():
    prompts = [("ref", 1, [9, 3, 2], 1), ("tied", 1, [8, 7, 5, 1], 2), ("ref", 2, [6, 6, 1], 1),
               ("tied", 2, [None, 9, 4], 2)]
    expected = 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(1) + math.tanh(-1.5)) / 2
    assert ties_score(prompts) == pytest.approx(expected)


def test_ties_score_zero_spread_gives_saturated_tanh_and_nan_zero():
    # spread 0 with a positive margin: x/0 = inf -> tanh 1; margin 0 with spread 0: 0/0 = nan -> 0
    assert ties_score([("ref", 1, [9, 1], 1), ("tied", 1, [8, 8, 2], 2)]) == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01)
    assert ties_score([("ref", 1, [5, 5], 1), ("tied", 1, [5, 5, 5], 2)]) == pytest.approx(0.0)


def test_rm_bench_matrix_and_levels():
    m = rm_bench_matrix([[5, 6, 7], [8, 8, 8]], [[4, 6, 8], [5, 5, 5]])
    assert m == [[1.0, 0.5, 0.5], [1.0, 0.5, 0.5], [1.0, 1.0, 0.5]]
    assert rm_bench_levels(m) == pytest.approx({"hard": 0.5, "normal": 2 / 3, "easy": 1.0})
    assert rm_bench_matrix([[None, 9, 9]], [[1, 1, 9]]) == [[0, 0, 0], [1, 1, 0], [1, 1, 0]]


def test_judgebench_decision_and_counter_rule():
    assert judgebench_decision(7, 3) == "A>B"
    assert judgebench_decision(3, 7) == "B>A"
    assert judgebench_decision(5, 5) == "A=B"
    assert judgebench_decision(None, 5) is None
    assert judgebench_correct(["A>B"], "A>B")
    assert not judgebench_correct(["A=B"], "B>A")  # a tie never counts for B
    assert not judgebench_correct(["A>B", "B>A"], "A>B")  # one right, one wrong -> 0
    assert judgebench_correct(["A>B", "A=B"], "A>B")  # one right, one tie -> correct
    assert judgebench_correct(["B>A", None], "B>A")
    with pytest.raises(ValueError):
        judgebench_correct(["A>B"], "A=B")


def test_bon_correct():
    assert bon_correct(9, [8, 7])
    assert not bon_correct(9, [9, 2])
    assert not bon_correct(6, [None, 2])
    assert not bon_correct(None, [1])
    assert not bon_correct(9, [])


def _brute_force_best_of_k(scores, correct, k):
    total = 0.0
    subsets = list(itertools.combinations(range(len(scores)), k))
    for sub in subsets:
        key = [(-math.inf if scores[i] is None else scores[i]) for i in sub]
        top = max(key)
        tied = [i for i, v in zip(sub, key) if v == top]
        total += sum(correct[i] for i in tied) / len(tied)
    return total / len(subsets)


def test_expected_best_of_k_by_hand():
    assert expected_best_of_k([9, 9, 2, 5], [True, False, False, True], 2) == pytest.approx(7 / 12)
    assert expected_best_of_k([9, 9, 2, 5], [True, False, False, True], 4) == pytest.approx(0.5)
    assert expected_best_of_k([None, None], [True, False], 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        expected_best_of_k([1, 2], [True, False], 3)


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 4).map(float)), st.booleans()), min_size=1, max_size=7),
       st.data())
def test_expected_best_of_k_matches_enumeration(rows, data):
    scores = [s for s, _ in rows]
    correct = [c for _, c in rows]
    k = data.draw(st.integers(1, len(rows)))
    assert expected_best_of_k(scores, correct, k) == pytest.approx(_brute_force_best_of_k(scores, correct, k))


def test_correct_pair_accuracy():
    assert correct_pair_accuracy([9, 9, 2, 5], [True, False, False, True]) == 0.5
    assert correct_pair_accuracy([1, 2], [False, False]) is None
    assert correct_pair_accuracy([None, 2], [True, False]) == 0.0


def test_decisive_comparisons_counts_valid_ties_only():
    assert decisive_comparisons([7, 7, 7, None], [0]) == (3, 2)
    assert decisive_comparisons([None, None], [0]) == (1, 0)
