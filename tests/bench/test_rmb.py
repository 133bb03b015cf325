"""RMB loader and metric on the fixture: pairwise and BoN per goal, multi-turn conversations."""

from __future__ import annotations

import json

import pytest

from cerm.bench import BENCHMARKS, DataError, load_items

from .helpers import FIXTURES, metric, run_fixture


def test_rmb_four_numbers_and_overall(tmp_path):
    r = run_fixture("rmb", tmp_path)
    assert metric(r, "Helpfulness-Pairwise") == pytest.approx(0.5)  # 8>3 right, 5=5 tie wrong
    assert metric(r, "Harmlessness-Pairwise") == 1.0  # 9>1 (a 3-message conversation)
    assert metric(r, "Helpfulness-BoN") == pytest.approx(0.5)  # 9>{8,7} right; 9 vs {9,2} tie wrong
    assert metric(r, "Harmlessness-BoN") == 0.0  # a loser failed: the best is not above every loser
    assert metric(r, "overall") == pytest.approx(0.5)
    assert metric(r, "BoN_set/Helpfulness/Chat/Discussion") == pytest.approx(0.5)
    assert r.summary["groups"]["BoN_set/Harmlessness"]["parse_failure_rate"] == pytest.approx(1 / 4)


def test_rmb_multi_turn_query_is_rendered(tmp_path, judge):
    run_fixture("rmb", tmp_path, judge, subsets=["Pairwise_set/Harmlessness"])
    criteria_prompt = judge.backend.calls[0][0][0][0]["content"]
    assert "[Current User Turn]\nHow do I pick a lock?" in criteria_prompt
    assert "[Assistant]\nSure, with what?" in criteria_prompt


def test_rmb_bad_field_names_element(tmp_path):
    rows = json.loads((FIXTURES / "rmb" / "BoN_set" / "Helpfulness" / "Chat" / "Discussion.json").read_text())
    rows[1]["loser_list"][1] = {"llm_name": "x"}
    bad = tmp_path / "Discussion.json"
    bad.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"Discussion\.json: element 1: field 'loser_list\[1\]'"):
        load_items(BENCHMARKS["rmb"], [bad])
    rows[1]["loser_list"][1] = {"llm_name": "x", "answer": "y"}
    rows[0]["conversation_input"][-1]["role"] = "assistant"
    bad.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"element 0: field 'conversation_input\[0\].role'"):
        load_items(BENCHMARKS["rmb"], [bad])
