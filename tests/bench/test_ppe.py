"""PPE loaders and metrics: decisive preference pairs, correctness pair accuracy and best-of-K."""

from __future__ import annotations

import pytest

from cerm.bench import BENCHMARKS, DataError, load_items

from .helpers import fixture_rows, metric, run_fixture, write_rows


def test_ppe_preference_and_correctness(tmp_path):
    r = run_fixture("ppe", tmp_path)
    assert r.summary["n_items"] == 5  # the tie-winner preference row is dropped
    assert metric(r, "human-preference") == pytest.approx(2 / 3)  # 8>3 right, 5=5 wrong, 2<9 (model_b) right
    # c1: labels [T,F,F,T], scores [9,9,2,5]: pairs (9,9) tie, (9,2), (5,9) wrong, (5,2) -> 2/4; c2 has no pair
    assert metric(r, "correctness/MMLU-Pro/accuracy") == pytest.approx(0.5)
    # best-of-2 over the 6 pairs of c1: {1,2} tie at 9 -> .5, {1,3} 1, {1,4} 1, {2,3} 0, {2,4} 0, {3,4} 1
    assert metric(r, "correctness/MMLU-Pro/best_of_2") == pytest.approx((3.5 / 6 + 0) / 2)
    assert metric(r, "correctness/MMLU-Pro/best_of_4") == pytest.approx((0.5 + 0) / 2)
    assert "correctness/MMLU-Pro/best_of_8" not in r.summary["metrics"]
    assert r.summary["headline"]["key"] == "correctness/mean[1 sets]"


def test_ppe_correctness_columns_must_match_scores(tmp_path):
    rows = fixture_rows("ppe/MMLU-Pro-Best-of-K.jsonl")
    del rows[1]["response_3"]
    bad = write_rows(tmp_path / "MMLU-Pro-Best-of-K.jsonl", rows)
    with pytest.raises(DataError, match=r"MMLU-Pro-Best-of-K\.jsonl:2: field 'response_3'"):
        load_items(BENCHMARKS["ppe"], [bad])


def test_ppe_unknown_winner_is_an_error(tmp_path):
    rows = fixture_rows("ppe/human_preference.jsonl")
    rows[0]["winner"] = "model_c"
    bad = write_rows(tmp_path / "pref.jsonl", rows)
    with pytest.raises(DataError, match=r"pref\.jsonl:1: field 'winner'"):
        load_items(BENCHMARKS["ppe"], [bad])
