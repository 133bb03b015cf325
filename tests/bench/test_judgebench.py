"""JudgeBench loader and metric on the fixture (expected values worked out by hand in comments)."""

from __future__ import annotations

import json

import pytest

from cerm.bench import BENCHMARKS, DataError, load_items

from .helpers import FIXTURES, metric, run_fixture


def test_judgebench_metrics_by_split_and_category(tmp_path):
    r = run_fixture("judgebench", tmp_path)
    # gpt-4o: law 8>5 right; cs 6=6 tie (wrong); reasoning 3<9 B>A right; math fail (wrong);
    # code 4<7 with A>B wrong; reasoning 7.5>7 right -> 3/6
    assert metric(r, "gpt-4o/overall") == pytest.approx(3 / 6)
    assert metric(r, "gpt-4o/Knowledge") == pytest.approx(1 / 2)
    assert metric(r, "gpt-4o/Reasoning") == pytest.approx(1.0)
    assert metric(r, "gpt-4o/Math") == 0.0
    assert metric(r, "gpt-4o/Coding") == 0.0
    assert metric(r, "claude-3-5-sonnet/overall") == 1.0  # 1<2 B>A right, 10>0 A>B right
    assert metric(r, "all/overall") == pytest.approx(5 / 8)
    assert r.summary["headline"]["key"] == "gpt-4o/overall"
    groups = r.summary["groups"]
    assert groups["gpt-4o"]["tie_rate"] == pytest.approx(1 / 6)
    assert groups["gpt-4o"]["parse_failure_rate"] == pytest.approx(1 / 12)
    assert r.summary["tie_rate"] == pytest.approx(1 / 8)


def test_judgebench_equal_scores_never_count_for_b(tmp_path):
    """Upstream scalar RMs map a tie to B>A; the fixture's tie has label B>A and must stay wrong."""
    r = run_fixture("judgebench", tmp_path, subsets=["gpt-4o/Knowledge"])
    assert metric(r, "gpt-4o/Knowledge") == pytest.approx(0.5)


def test_judgebench_reports_both_upstream_protocols(tmp_path):
    """Two games (default, unprefixed): the 6=6 tie nets to wrong. --single_game: a tie counts as B>A, and
    the fixture's tie is labelled B>A, so it is right there: they differ by that tie (half the tie rate of
    a judge whose ties split evenly between the labels)."""
    r = run_fixture("judgebench", tmp_path)
    assert metric(r, "gpt-4o/overall") == pytest.approx(3 / 6)
    assert metric(r, "single_game/gpt-4o/overall") == pytest.approx(4 / 6)
    assert metric(r, "single_game/gpt-4o/Knowledge") == pytest.approx(1.0)
    assert metric(r, "single_game/gpt-4o/Math") == 0.0  # a failed score is never correct
    assert metric(r, "single_game/all/overall") == pytest.approx(6 / 8)
    from cerm.bench.metrics import judgebench_single_game_decision

    assert [judgebench_single_game_decision(*s) for s in [(2, 1), (1, 2), (5, 5), (None, 3)]] == [
        "A>B", "B>A", "B>A", None]


def test_judgebench_bad_label_names_file_line_field(tmp_path):
    src = FIXTURES / "judgebench" / "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl"
    lines = src.read_text().splitlines()
    row = json.loads(lines[2])
    row["label"] = "A=B"
    bad = tmp_path / "jb.jsonl"
    bad.write_text("\n".join(lines[:2] + [json.dumps(row)]) + "\n")
    with pytest.raises(DataError, match=r"jb\.jsonl:3: field 'label'"):
        load_items(BENCHMARKS["judgebench"], [bad])
    row["label"] = "B>A"
    del row["response_B"]
    bad.write_text("\n".join(lines[:2] + [json.dumps(row)]) + "\n")
    with pytest.raises(DataError, match=r"jb\.jsonl:3: field 'response_B': missing"):
        load_items(BENCHMARKS["judgebench"], [bad])
