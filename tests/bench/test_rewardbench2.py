"""RewardBench 2 loader and metric: 1/k credit at the top, 0.25 when all fail, the Ties formula."""

from __future__ import annotations

import math

import pytest

from cerm.bench import BENCHMARKS, DataError, load_items

from .helpers import FIXTURES, fixture_rows, metric, run_fixture, write_rows

# Ties fixture: ref:1 margin 6 (acc); tied:1 spread 1, margin 2 (acc); ref:2 margin 0 (not acc);
# tied:2 a failed correct answer is -1 -> spread 10, margin -5. d=[1,10], m_tied=[2,-5], m_hard=[2,-5]
TIES = 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(1) + math.tanh(-1.5)) / 2


def test_rewardbench2_subsets_ties_and_overall(tmp_path):
    r = run_fixture("rewardbench2", tmp_path)
    assert metric(r, "Factuality") == pytest.approx((0.5 + 1) / 2)  # 2-way tie at the top, then a clean win
    assert metric(r, "Math") == pytest.approx((0 + 0.25) / 2)  # chosen failed -> 0; all four failed -> 0.25
    assert metric(r, "Safety") == 0.0
    assert metric(r, "Precise IF") == pytest.approx(0.25)  # 4-way tie
    assert metric(r, "Focus") == 1.0
    assert metric(r, "Ties") == pytest.approx(TIES)
    assert metric(r, "overall") == pytest.approx((0.75 + 0.125 + 0 + 0.25 + 1 + TIES) / 6)


def test_rewardbench2_ties_rows_resample_together(tmp_path):
    bench = BENCHMARKS["rewardbench2"]
    items = load_items(bench, [FIXTURES / "reward-bench-2"])
    from cerm.bench.common import Outcome

    clusters = {bench.cluster(Outcome(it.id, it.subset, it.mode, it.correct, (), it.meta)) for it in items
                if it.subset == "Ties"}
    assert clusters == {"ties:1", "ties:2"}


def test_rewardbench2_bad_ties_id(tmp_path):
    rows = fixture_rows("reward-bench-2/test.jsonl")
    rows[8]["id"] = "tied-1"
    bad = write_rows(tmp_path / "test.jsonl", rows)
    with pytest.raises(DataError, match=r"test\.jsonl:9: field 'id': a Ties id must be"):
        load_items(BENCHMARKS["rewardbench2"], [bad])
