"""The data ``cerm view`` is built from: verdicts, gaps, score spans, flags, item views, reading run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cerm.backends.fake import CANNED_CRITERIA, canned_evaluation
from cerm.bench.common import BenchItem
from cerm.bench.records import item_record
from cerm.parsing import parse_criteria, parse_judgment
from cerm.types import Criteria, Judgment, ParseStatus, ScoredItem
from cerm.view.loaders import ViewError, load, read_jsonl
from cerm.view.model import (
    box_spans,
    compare_rows,
    distribution,
    flags,
    index_row,
    item_from_bench,
    item_from_probe,
    item_from_score,
    query_preview,
    score_gap,
    verdict,
)


@pytest.mark.parametrize("scores, correct, expected", [
    ([8, 5], [0], "correct"), ([5, 8], [0], "wrong"), ([5, 5], [0], "tie"), ([None, 5], [0], "failed"),
    ([7, 6, 5, 4, 5, 6], [0, 1, 2], "mixed"),  # RM-Bench 3x3: 5 vs 6 loses, 7 vs 4 wins
    ([9, 8, 7, 1, 2, 3], [0, 1, 2], "correct"), ([9, 1, 9], [0], "mixed"), ([9, 9, 2], [0], "mixed"),
    ([3, 4], [], "unlabelled"), ([3, 4], [0, 1], "unlabelled"),
])
def test_verdict(scores, correct, expected):
    assert verdict(scores, correct) == expected


def test_score_gap_is_mean_correct_minus_mean_other_or_the_spread_without_labels():
    assert score_gap([8, 5], [0]) == 3
    assert score_gap([9, 7, 4, None], [0, 1]) == 4  # 8 - 4; the failed one is left out
    assert score_gap([None, 5], [0]) is None
    assert score_gap([3, 9, 6], []) == 6
    assert score_gap([3], []) is None


def test_box_spans_classify_criterion_other_and_overall_boxes():
    text = ("Accuracy: fine. $\\boxed{4}$\nClarity: ok. $\\boxed{3.5}$\nOther Points: verbose. $\\boxed{-1}$\n"
            "Overall: good. $\\boxed{7}$")
    spans = box_spans(text)
    assert [(s["kind"], s["n"], s["value"]) for s in spans] == [
        ("criterion", 0, "4"), ("criterion", 1, "3.5"), ("other", None, "-1"), ("overall", None, "7")]
    assert [text[s["start"]:s["end"]] for s in spans] == ["\\boxed{4}", "\\boxed{3.5}", "\\boxed{-1}", "\\boxed{7}"]
    # the spans agree with what the parser scored
    parsed = parse_judgment(text)
    assert parsed.criterion_scores == (4, 3.5) and parsed.other_points_score == -1 and parsed.score == 7


def test_box_spans_of_text_without_boxes_or_with_an_unclosed_box():
    assert box_spans("") == [] and box_spans("no score here") == []
    spans = box_spans("ok $\\boxed{4}$ then \\boxed{7")
    assert spans[-1]["kind"] == "overall" and spans[-1]["value"] is None and spans[-1]["end"] == len(
        "ok $\\boxed{4}$ then \\boxed{7")


def test_flags_read_a_list_a_mapping_true_is_fields_and_flag_lists():
    assert flags({"flags": ["injection"], "is_off_grid": True, "is_response_truncated": False,
                  "is_correct": True}) == ["injection", "off_grid"]
    assert flags({"flags": {"off_grid": True, "injection": False}}) == ["off_grid"]
    assert flags({"is_off_grid": False, "injection_flags": ["ignore-previous", "score-demand"]}) == [
        "injection:ignore-previous", "injection:score-demand"]
    assert flags({}) == []


def test_distribution_reads_the_21_grid_probabilities_of_the_readout():
    probs = [0.0] * 21
    probs[14], probs[16] = 0.25, 0.75  # 7 and 8
    assert distribution({"score_probs": probs, "expected_score": 7.75}) == [[7.0, 0.25], [8.0, 0.75]]
    assert distribution({"score_probs": []}) == []


def test_distribution_accepts_a_mapping_or_pairs_and_ignores_junk():
    assert distribution({"score_distribution": {"7": 0.25, "6.5": 0.75}}) == [[6.5, 0.75], [7.0, 0.25]]
    assert distribution({"distribution": [[8, 0.5], {"score": 9, "p": 0.5}, "junk", ["x", 1]]}) == [
        [8.0, 0.5], [9.0, 0.5]]
    assert distribution({"score": 3}) == []


def _bench_record() -> dict:
    item = BenchItem(id="chat:1", benchmark="rm-bench", subset="chat", prompt="What is 2+2? </script>",
                     candidates=("4", "5"), correct=(0,), roles=("chosen", "rejected"), mode="pairwise")
    crit = Criteria(text=CANNED_CRITERIA, items=parse_criteria(CANNED_CRITERIA).items, key="k1", tokens_out=60)
    judgments = tuple(Judgment(s, ParseStatus.OK, (4, 3, 5), text=canned_evaluation(s), criteria_key="k1",
                               tokens_in=600, tokens_out=40, seconds=1.5) for s in (8.0, 6.5))
    return json.loads(json.dumps(item_record(item, ScoredItem((crit,), judgments))))


def test_item_from_a_bench_record_keeps_texts_scores_and_costs():
    view = item_from_bench(_bench_record())
    assert view["query"] == "What is 2+2? </script>" and view["verdict"] == "correct" and view["gap"] == 1.5
    assert [c["term"] for c in view["criteria"][0]["items"]] == ["Correctness", "Helpfulness", "Clarity"]
    assert view["criteria"][0]["text"] == CANNED_CRITERIA
    a, b = view["candidates"]
    assert (a["role"], a["is_correct"], a["response"], a["score"], b["score"]) == ("chosen", True, "4", 8.0, 6.5)
    assert a["evaluation"] == canned_evaluation(8.0) and [s["kind"] for s in a["spans"]][-1] == "overall"
    assert (a["tokens_in"], a["tokens_out"], a["seconds"], a["status"]) == (600, 40, 1.5, "ok")


def test_item_from_an_older_bench_record_without_texts():
    rec = _bench_record()
    del rec["prompt"]
    for c in rec["criteria"]:
        del c["text"], c["items"]
    for c in rec["candidates"]:
        del c["response"], c["text"]
    view = item_from_bench(rec)
    assert view["query"] is None and view["criteria"][0]["items"] == [] and view["candidates"][0]["spans"] == []
    assert view["verdict"] == "correct"  # scores are all it needs


def test_new_judgment_fields_are_read_when_present():
    rec = _bench_record()
    rec["candidates"][0].update(expected_score=7.6, score_distribution={"8": 0.6, "7": 0.4}, flags=["off_grid"])
    a = item_from_bench(rec)["candidates"][0]
    assert a["expected_score"] == 7.6 and a["distribution"] == [[7.0, 0.4], [8.0, 0.6]] and a["flags"] == ["off_grid"]


def test_item_from_score_and_bon_lines():
    line = {"id": 3, "query": [{"role": "user", "content": "hi"}], "responses": ["a", "b"],
            "criteria": {"key": "k", "text": CANNED_CRITERIA, "items": [{"term": "T", "description": "D"}]},
            "judgments": [{"score": 7, "status": "ok", "evaluation": canned_evaluation(7)},
                          {"score": None, "status": "no_box", "evaluation": "nothing"}]}
    view = item_from_score(line)
    assert view["mode"] == "score" and view["verdict"] == "failed" and view["gap"] is None
    assert [c["response"] for c in view["candidates"]] == ["a", "b"] and view["criteria"][0]["items"][0]["term"] == "T"
    bon = item_from_score({**line, "chosen_index": 0, "tied": [0], "judgments": [line["judgments"][0]] * 2})
    assert bon["verdict"] == "chosen" and bon["candidates"][0]["role"] == "chosen"
    tie = item_from_score({**line, "chosen_index": None, "tied": [0, 1], "judgments": [line["judgments"][0]] * 2})
    assert tie["verdict"] == "tie" and [c["role"] for c in tie["candidates"]] == ["tied", "tied"]
    text_key = item_from_score({**line, "judgments": [{"score": 7, "status": "ok", "text": canned_evaluation(7)}]})
    assert text_key["candidates"][0]["evaluation"] == canned_evaluation(7)  # the judgment text under "text"
    old = item_from_score({"id": 1, "judgments": [{"score": 2, "status": "ok"}]})  # before `responses`
    assert old["candidates"][0]["response"] is None and old["verdict"] == "unlabelled"


def test_item_from_probe_records_new_and_old():
    old = {"probe": "length", "id": "x", "original_score": 6, "variant_score": 8, "original_status": "ok",
           "variant_status": "ok", "original_chars": 10, "variant_chars": 30}
    view = item_from_probe(old)
    assert (view["id"], view["subset"], view["verdict"], view["gap"]) == ("length:x", "length", "up", 2)
    new = {**old, "prompt": "q", "original": "o", "variant": "v", "criteria": [{"text": CANNED_CRITERIA}],
           "judgments": [{"score": 6, "status": "ok", "evaluation": canned_evaluation(6)},
                         {"score": None, "status": "no_box", "evaluation": ""}]}
    view = item_from_probe(new)
    assert view["verdict"] == "failed" and [c["response"] for c in view["candidates"]] == ["o", "v"]


def test_index_row_and_query_preview():
    row = index_row(item_from_bench(_bench_record()), 7)
    assert row == {"n": 7, "id": "chat:1", "subset": "chat", "verdict": "correct", "gap": 1.5, "statuses": ["ok"],
                   "scores": [8.0, 6.5], "flags": [], "q": "What is 2+2? </script>"}
    chat = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
            {"role": "user", "content": "last  one\n" + "z" * 300}]
    assert query_preview(chat).startswith("last one z") and len(query_preview(chat)) == 160


def test_compare_rows_list_shared_items_whose_verdict_changed():
    a = [item_from_bench(_bench_record())]
    rec_b = _bench_record()
    rec_b["candidates"][1]["score"] = 9.0
    b = [item_from_bench({**_bench_record(), "id": "only-b"}), item_from_bench(rec_b)]
    rows, tally = compare_rows(a, b)
    assert tally == {"shared": 1, "changed": 1, "only_a": 0, "only_b": 1}
    assert rows[0] | {} == {"id": "chat:1", "subset": "chat", "n_a": 0, "n_b": 1, "verdict_a": "correct",
                            "verdict_b": "wrong", "scores_a": [8.0, 6.5], "scores_b": [8.0, 9.0]}
    assert compare_rows(a, a)[0] == []


def _write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    return path


def test_read_jsonl_skips_a_cut_last_line_and_never_rewrites_the_file(tmp_path):
    rec = json.dumps(_bench_record())
    path = _write(tmp_path / "items.jsonl", [rec, rec[:40]], end="")
    before = path.read_bytes()
    recs, notes = read_jsonl(path, ("id",), "x")
    assert len(recs) == 1 and "partial last line" in notes[0] and path.read_bytes() == before


def test_read_jsonl_names_file_line_and_field(tmp_path):
    with pytest.raises(ViewError, match=r"items.jsonl:2: invalid JSON"):
        read_jsonl(_write(tmp_path / "items.jsonl", ['{"id": 1}', "{oops", '{"id": 2}']), ("id",), "x")
    with pytest.raises(ViewError, match=r"items.jsonl:1: field 'candidates': missing; not a cerm bench record"):
        load(_write(tmp_path / "items.jsonl", ['{"id": "a", "subset": "s", "mode": "pairwise", "correct": [0]}']).parent)


def test_load_tells_what_a_path_is(tmp_path):
    with pytest.raises(ViewError, match="no such file"):
        load(tmp_path / "missing")
    with pytest.raises(ViewError, match="no items.jsonl"):
        load(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "items.jsonl", [json.dumps(_bench_record())])
    view = load(run)  # an unfinished run: no summary.json yet
    assert view.kind == "bench" and len(view.items) == 1 and any("summary.json is missing" in n for n in view.notes)
