"""The suite's pure parts: call counting, token estimates, the ledger, the paper's cells, the judge check."""

from __future__ import annotations

import json
import re

import pytest
from support import ROOT

from cerm.bench.common import BenchItem
from cerm.bench.cost import (
    MIN_MEASURED,
    Calls,
    bound_tokens,
    count_calls,
    expected_under_budget,
    measured_lengths,
    token_model,
)
from cerm.bench.paper import PAPER, PAPER_BENCHMARKS, comparability
from cerm.bench.suite import (
    SuiteError,
    append_ledger,
    check_judge,
    judge_fingerprint,
    ledger_totals,
    write_json,
)
from cerm.bench.token_priors import PRIORS, LengthSample
from cerm.judge import JudgeConfig


def _item(i: str, query, candidates) -> BenchItem:
    return BenchItem(i, "t", "s", query, tuple(candidates), (0,), tuple(f"c{k}" for k in range(len(candidates))),
                     "ratings")


ITEMS = [_item("a", "q1", ["x", "y"]), _item("b", "q1", ["x", "z"]), _item("c", "q2", ["x", "y", "w"]),
         _item("d", [{"role": "user", "content": "q2"}], ["w"])]


@pytest.mark.parametrize(("chunk", "config", "expected"), [
    # one chunk: queries deduplicated (q1, q2; the single-message chat renders as "q2"), pairs generated as sent
    (10, JudgeConfig(), Calls(2, 8)),
    # chunks [a, b] [c, d]: (q1, x) repeats inside chunk 1 (generated twice), (q2, w) of d was judged in c's chunk
    (2, JudgeConfig(), Calls(2, 8)),
    # one item per chunk: every repeat is a cache hit: (q1,x) (q1,y) (q1,z) (q2,x) (q2,y) (q2,w)
    (1, JudgeConfig(), Calls(2, 6)),
    (1, JudgeConfig(samples=3, criteria_samples=2), Calls(4, 36)),
    # the ablation: criteria per (query, response index): q1 x {0, 1}, q2 x {0, 1, 2}
    (1, JudgeConfig(unified_criteria=False), Calls(5, 6)),
])
def test_count_calls_follows_the_judge_and_the_chunks(chunk, config, expected):
    assert count_calls(ITEMS, config, chunk) == expected


def test_bound_and_expected_tokens():
    cfg = JudgeConfig(criteria_max_new_tokens=100, eval_max_new_tokens=50)
    assert bound_tokens(Calls(2, 8), cfg) == 2 * 100 + 8 * 50
    sample = LengthSample((10, 40, 80, 80), cap=80)  # two calls filled the cap
    assert expected_under_budget(sample, 80) == (10 + 40 + 80 + 80) / 4
    assert expected_under_budget(sample, 20) == (10 + 20 + 20 + 20) / 4
    # above the cap the censored half is assumed to keep filling: + (120 - 80) * 2/4
    assert expected_under_budget(sample, 120) == (10 + 40 + 80 + 80) / 4 + 20


def test_token_model_prefers_measured_then_prior_then_bound():
    cfg = JudgeConfig()
    assert token_model("unknown-model", cfg).criteria is None  # bound only
    few = token_model("unknown-model", cfg, [100], [40, 60])
    assert (few.criteria, few.evaluation) == (100, 50) and "measured" in few.basis
    many = token_model("embedded", cfg, [7] * MIN_MEASURED, [9] * MIN_MEASURED)
    assert (many.criteria, many.evaluation) == (7, 9)
    if "embedded" in PRIORS:  # too few measurements: the measured prior wins over them
        assert token_model("embedded", cfg, [7], [9]).basis.startswith("prior:")
        assert token_model("embedded", cfg).expected(Calls(1, 1)) is not None


def test_measured_lengths_count_a_shared_criteria_once_and_split_samples():
    recs = [{"samples": 2, "criteria": [{"key": "k1", "tokens_out": 30}], "candidates": [{"tokens_out": 20}]},
            {"samples": 2, "criteria": [{"key": "k1", "tokens_out": 30}], "candidates": [{"tokens_out": 8}]}]
    assert measured_lengths(recs) == ([30], [10, 4])


def test_ledger_sums_the_last_line_of_each_session(tmp_path):
    append_ledger(tmp_path, "s1", "rm-bench", 5.0, 2, 100, 7)
    append_ledger(tmp_path, "s1", "rm-bench", 9.0, 4, 180, 14)  # s1 killed after this chunk
    append_ledger(tmp_path, "s2", "rm-bench", 3.0, 6, 50, 4, finished=True)
    append_ledger(tmp_path, "s2", "judgebench", 1.0, 2, 10, 3, finished=True)
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write('{"session": "s3", "bench')  # a line cut by a kill
    totals = ledger_totals(tmp_path)
    assert totals["rm-bench"] == {"wall_s": 12.0, "tokens_out": 230, "calls": 18, "sessions": 2}
    assert totals["judgebench"]["sessions"] == 1


def test_paper_values_are_the_documented_ones():
    """Every value in cerm.bench.paper appears in docs/benchmarks.md §8 with its tag."""
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    section = doc[doc.index("## 8. Reference numbers"):]
    assert "[T]" in section
    for name in PAPER_BENCHMARKS:
        p = PAPER[name]
        assert p.tag == "T" and p.value is not None and re.search(rf"\b{p.value}\b", section), name


def test_comparability_names_every_difference():
    p = PAPER["rm-bench"]
    same = {"headline": {"key": "overall"}, "selection": {"limit": None}, "n_items": 1327, "score_mode": "greedy",
            "scorer": {"model": "PKU-ONELab/CE-RM-4B"}}
    assert comparability(p, same, 1327) == []
    local = {**same, "headline": {"key": "mean[chat+code+safety]"}, "selection": {"limit": 20}, "n_items": 20,
             "score_mode": "expected", "scorer": {"model": "SmolLM2-135M"}}
    reasons = comparability(p, local, 798)
    assert len(reasons) == 4 and "a sample of 20 of 798 items" in reasons and "another judge (SmolLM2-135M)" in reasons
    assert any("'mean[chat+code+safety]'" in r for r in reasons) and any("expected" in r for r in reasons)


def test_a_suite_of_another_judge_is_refused_naming_the_difference(tmp_path):
    fp = judge_fingerprint("hf", "embedded", JudgeConfig(eval_max_new_tokens=160))
    check_judge(tmp_path, fp)  # no suite yet: nothing to check
    write_json(tmp_path / "suite.json", {"judge": fp})
    check_judge(tmp_path, json.loads(json.dumps(fp)))
    with pytest.raises(SuiteError, match=r"eval_max_new_tokens: 160 -> 64"):
        check_judge(tmp_path, judge_fingerprint("hf", "embedded", JudgeConfig(eval_max_new_tokens=64)))
