"""Outputs of a run: the items.jsonl schema, summary.json, report.md with plots, and `bench compare`."""

from __future__ import annotations

import json

import pytest

from cerm.bench.baselines import LengthScorer
from cerm.bench.compare import compare_runs
from cerm.bench.records import RECORD_VERSION

from .helpers import metric, run_fixture


def test_items_jsonl_schema(tmp_path):
    run_fixture("rm-bench", tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    rec = rows[0]
    assert rec["record_version"] == RECORD_VERSION and rec["benchmark"] == "rm-bench"
    assert (rec["id"], rec["subset"], rec["mode"], rec["correct"]) == ("chat:8", "chat", "ratings", [0, 1, 2])
    assert [c["role"] for c in rec["candidates"]] == [
        "chosen[concise]", "chosen[detailed_plain]", "chosen[detailed_markdown]",
        "rejected[concise]", "rejected[detailed_plain]", "rejected[detailed_markdown]"]
    c = rec["candidates"][0]
    assert c["is_correct"] and c["status"] == "ok" and c["score"] == 8.0 and c["criterion_scores"] == [4, 3, 5]
    assert c["criteria_key"] == rec["criteria"][0]["key"] and len(c["criteria_key"]) == 64
    assert c["tokens_in"] > 0 and c["tokens_out"] > 0
    failed = [c for r in rows for c in r["candidates"] if c["score"] is None]
    assert len(failed) == 1 and failed[0]["status"] == "no_box"  # the fixture's one parse failure


def test_summary_and_report(tmp_path):
    r = run_fixture("judgebench", tmp_path, bootstrap=200)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s == json.loads(json.dumps(r.summary))
    assert s["headline"]["key"] == "gpt-4o/overall" and s["headline"]["value"] == pytest.approx(0.5)
    m = s["metrics"]["gpt-4o/overall"]
    assert m["ci_low"] <= m["value"] <= m["ci_high"]
    # a 2-pair split is absent from some resamples: no interval rather than a skewed one
    assert s["metrics"]["claude-3-5-sonnet/overall"]["ci_low"] is None
    assert s["bootstrap"] == {"resamples": 200, "confidence": 0.95, "seed": 0}
    assert s["statuses"] == {"no_box": 1, "ok": 15}
    assert s["cost"]["tokens_out_per_item"] > 0 and s["cost"]["tokens_out_total"] > 0
    assert s["run_stats"]["criteria_generated"] == 8 and s["run_stats"]["items_scored"] == 8
    assert s["groups"]["gpt-4o/Math"]["parse_failures"] == 1
    report = (tmp_path / "report.md").read_text()
    assert "| fake:scores (greedy) [SCRIPTED fake backend, not a judge] | gpt-4o/overall | 50.0 |" in report
    assert "| gpt-4o/Knowledge | 50.0 |" in report
    assert "Protocol: upstream's default two games" in report  # the benchmark's notes travel with the numbers
    for png in ("scores", "tie_rate", "accuracy"):
        assert (tmp_path / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_rows_in_report(tmp_path):
    base = run_fixture("judgebench", tmp_path / "length", LengthScorer())
    from cerm.bench import BENCHMARKS, RunConfig, load_items, resolve_sources, run_benchmark

    from .helpers import FIXTURES, make_judge

    bench = BENCHMARKS["judgebench"]
    items = load_items(bench, resolve_sources(bench, None, FIXTURES))
    run_benchmark(bench, items, make_judge(), RunConfig(tmp_path / "judge", bootstrap=0),
                  baseline_rows=[base.summary])
    report = (tmp_path / "judge" / "report.md").read_text()
    assert "| length | gpt-4o/overall |" in report


def test_length_baseline_through_the_harness(tmp_path):
    r = run_fixture("judgebench", tmp_path, LengthScorer())
    from .helpers import FIXTURES

    rows = [json.loads(line) for f in sorted((FIXTURES / "judgebench").glob("*gpt-4o*.jsonl"))
            for line in f.read_text().splitlines()]
    lengths = [(len(row["response_A"]), len(row["response_B"])) for row in rows]
    right = sum((a > b and row["label"] == "A>B") or (b > a and row["label"] == "B>A")
                for (a, b), row in zip(lengths, rows))
    assert metric(r, "gpt-4o/overall") == pytest.approx(right / len(rows))
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [c["score"] for c in items[0]["candidates"]] == [float(x) for x in lengths[0]]
    assert r.summary["scorer"] == {"kind": "baseline", "name": "length", "unit": "characters"}
    assert r.summary["parse_failure_rate"] == 0.0


def test_compare_runs_paired(tmp_path):
    a = run_fixture("judgebench", tmp_path / "a")
    b = run_fixture("judgebench", tmp_path / "b", LengthScorer())
    result = compare_runs(tmp_path / "a", tmp_path / "b", n_resamples=200)
    assert result.n_shared == 8 and result.n_only_a == result.n_only_b == 0
    diffs = {d.metric: d for d in result.diffs}
    for key in ("all/overall", "gpt-4o/overall"):
        d = diffs[key]
        assert d.value_a == pytest.approx(metric(a, key)) and d.value_b == pytest.approx(metric(b, key))
        assert d.diff == pytest.approx(metric(b, key) - metric(a, key))
    d = diffs["gpt-4o/overall"]
    assert d.ci_low <= d.diff <= d.ci_high
    same = compare_runs(tmp_path / "a", tmp_path / "a", n_resamples=50)
    assert all(d.diff == 0 and d.ci_low == d.ci_high == 0 for d in same.diffs if d.ci_low is not None)


def test_compare_on_partial_overlap_and_mismatch(tmp_path):
    run_fixture("judgebench", tmp_path / "all")
    run_fixture("judgebench", tmp_path / "some", subsets=["gpt-4o"])
    result = compare_runs(tmp_path / "all", tmp_path / "some", n_resamples=0)
    assert (result.n_shared, result.n_only_a, result.n_only_b) == (6, 2, 0)
    assert all(d.diff == 0 for d in result.diffs)  # same judge on the shared items
    run_fixture("rmb", tmp_path / "rmb")
    with pytest.raises(ValueError, match="compare runs of one benchmark"):
        compare_runs(tmp_path / "all", tmp_path / "rmb")
    with pytest.raises(FileNotFoundError, match="summary.json not found"):
        compare_runs(tmp_path / "all", tmp_path / "nope")


def test_score_histogram_says_when_nothing_parsed_and_labels_baseline_units(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from cerm.bench import report

    closed = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (closed.append(fig), real_close(fig)))
    summary = {"title": "T", "scorer": {"kind": "baseline", "name": "length", "unit": "characters"},
               "groups": {"all": {"tie_rate": 0.0}}, "metrics": {"all": {"value": 0.5, "ci_low": None, "ci_high": None}}}
    records = [{"candidates": [{"score": None, "is_correct": True}, {"score": None, "is_correct": False}]}]
    report._plots(tmp_path, summary, records)
    ax = closed[0].axes[0]
    assert ax.get_xlabel() == "score (characters)"
    assert any("no valid score among 2 candidates" in t.get_text() for t in ax.texts)
