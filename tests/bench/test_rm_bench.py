"""RM-Bench loader and metric on the fixture: 3x3 matrices, strict '>', safety pooled across files."""

from __future__ import annotations

import json

import pytest

from cerm.bench import BENCHMARKS, DataError, load_items

from .helpers import FIXTURES, metric, run_fixture


def test_rm_bench_matrix_levels_and_pooled_safety(tmp_path):
    r = run_fixture("rm-bench", tmp_path)
    # chat: prompt 8 all cells 1; prompt 9 chosen [5,6,7] vs rejected [4,6,8] -> [[1,0,0],[1,0,0],[1,1,0]]
    # mean matrix [[1,.5,.5],[1,.5,.5],[1,1,.5]]: hard .5, normal 2/3, easy 1, score 6.5/9
    assert metric(r, "chat/hard") == pytest.approx(0.5)
    assert metric(r, "chat/normal") == pytest.approx(2 / 3)
    assert metric(r, "chat/easy") == pytest.approx(1.0)
    assert metric(r, "chat") == pytest.approx(6.5 / 9)
    # safety pools 3 prompts: refuse [[1,1,0],[0,0,0],[1,1,0]] (a failed chosen loses), response all-ties
    # zeros and all-ones -> sum [[2,2,1],[1,1,1],[2,2,1]]/3 = 13/27 (mean of the two files would be 17/36)
    assert metric(r, "safety") == pytest.approx(13 / 27)
    assert metric(r, "safety/hard") == pytest.approx(4 / 9)
    assert metric(r, "safety/normal") == pytest.approx(4 / 9)
    assert metric(r, "safety/easy") == pytest.approx(5 / 9)
    key = "mean[chat+safety]"
    assert "overall" not in r.summary["metrics"]  # never "overall" without Math
    assert r.summary["headline"]["key"] == key
    assert metric(r, key) == pytest.approx((6.5 / 9 + 13 / 27) / 2)
    assert metric(r, f"{key}/hard") == pytest.approx((0.5 + 4 / 9) / 2)
    # ties: chat 1 (6=6), refuse 2 (9=9 twice), response 9 -> 12 of 45 comparisons; 1 failure of 30
    assert r.summary["tie_rate"] == pytest.approx(12 / 45)
    assert r.summary["parse_failure_rate"] == pytest.approx(1 / 30)


def test_rm_bench_one_criteria_generation_per_prompt(tmp_path, judge):
    run_fixture("rm-bench", tmp_path, judge)
    assert judge.stats.criteria_generated == 5
    assert judge.stats.evaluations_generated == 30


def test_rm_bench_subset_selects_pooled_domain(tmp_path):
    r = run_fixture("rm-bench", tmp_path, subsets=["safety"])
    assert r.summary["n_items"] == 3
    assert metric(r, "safety") == pytest.approx(13 / 27)


def test_rm_bench_bad_element_names_index_and_field(tmp_path):
    rows = json.loads((FIXTURES / "rm-bench" / "chat_filtered.json").read_text())
    rows[1]["chosen"] = rows[1]["chosen"][:2]
    bad = tmp_path / "chat_filtered.json"
    bad.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"chat_filtered\.json: element 1: field 'chosen': expected 3 entries"):
        load_items(BENCHMARKS["rm-bench"], [bad])
    bad.write_text('[{"id": 1,\n "prompt": "x",,}]')
    with pytest.raises(DataError, match=r"chat_filtered\.json:2: invalid JSON"):
        load_items(BENCHMARKS["rm-bench"], [bad])


def test_rm_bench_unknown_file_name_is_refused(tmp_path):
    bad = tmp_path / "mystery.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="unknown RM-Bench file"):
        load_items(BENCHMARKS["rm-bench"], [bad])
