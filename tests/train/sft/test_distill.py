"""`cerm distill`: teacher traces -> SFT rows, the label-agreement filter, resume, and a real local teacher."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
from cerm.judge import Judge, JudgeConfig
from cerm.prompts import PROMPT_VERSION, criteria_prompt, evaluation_messages
from cerm.train.pairs import PreferencePair
from cerm.train.sft.data import load_sft_rows
from cerm.train.sft.distill import DistillConfig, distill, done_pair_ids
from cerm.types import Generation, Message, SamplingParams

_TAG = re.compile(r"<<([\d.]+|nobox)>>")


def teacher(messages: list[Message], params: SamplingParams) -> str | Generation:
    """Canned criteria (cut off for queries that ask for it); evaluations score the response's <<tag>>."""
    if len(messages) == 1:
        if "CUT-CRITERIA" in messages[0]["content"]:
            return Generation("[Start of Criteria]\n1. Correct", "length")
        return CANNED_CRITERIA
    tag = _TAG.search(messages[-1]["content"])
    assert tag is not None
    if tag.group(1) == "nobox":
        return "The response is fine."
    return canned_evaluation(float(tag.group(1)))


def pair(pid: str, c: str, r: str, prompt: str | None = None) -> PreferencePair:
    return PreferencePair(pid, prompt or f"Question {pid}?", f"answer {c}", f"answer {r}", "test", "chat")


PAIRS = [
    pair("good", "<<8>>", "<<3>>"),
    pair("close", "<<6>>", "<<5.5>>"),
    pair("misordered", "<<3>>", "<<8>>"),
    pair("tie", "<<5>>", "<<5>>"),
    pair("nobox", "<<nobox>>", "<<2>>"),
    pair("cut", "<<9>>", "<<1>>", prompt="CUT-CRITERIA please"),
    pair("conv", "<<7>>", "<<2>>", prompt=None),
]
PAIRS[-1] = PreferencePair("conv", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes?"},
                                    {"role": "user", "content": "Explain X"}], "answer <<7>>", "answer <<2>>")


def test_label_agreement_filter_and_rows(tmp_path: Path) -> None:
    judge = Judge(FakeBackend("teacher", teacher))
    out = tmp_path / "sft.jsonl"
    res = distill(PAIRS, judge, out, DistillConfig(min_margin=1.0, chunk_pairs=3))
    assert res.kept == 2 and res.skipped == 0
    assert res.rejected == {"below_margin": 1, "chosen_no_box": 1, "criteria_length": 1, "misordered": 1, "tie": 1}
    rows = load_sft_rows(out)
    assert [(r.pair_id, r.response_role, r.train_criteria) for r in rows] == [
        ("good", "chosen", True), ("good", "rejected", False), ("conv", "chosen", True), ("conv", "rejected", False)]
    good_c, good_r, conv_c, _ = rows
    assert (good_c.score, good_c.partner_score, good_r.score) == (8, 3, 3)
    assert good_c.teacher == "fake:teacher" and good_c.prompt_version == PROMPT_VERSION
    # exactly what the judge sends, plus the teacher's evaluation
    expected = evaluation_messages("Question good?", CANNED_CRITERIA, "answer <<8>>")
    assert good_c.message_dicts()[:3] == expected
    assert good_c.messages[3].content == canned_evaluation(8)
    assert good_r.message_dicts()[:2] == expected[:2]  # the shared criteria turn
    assert conv_c.messages[0].content == criteria_prompt("[User]\nHi\n\n[Assistant]\nYes?\n\n[Current User Turn]\n"
                                                         "Explain X")
    rejected = {json.loads(line)["pair_id"]: json.loads(line) for line in Path(f"{out}.rejected.jsonl").read_text().splitlines()}
    assert rejected["close"] == {"pair_id": "close", "reason": "below_margin", "chosen_score": 6.0,
                                 "rejected_score": 5.5}
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["kept_pairs"] == 2 and summary["rows_written"] == 4 and summary["warnings"] == []

    # margin 0: a strictly ordered pair is enough
    res0 = distill(PAIRS, Judge(FakeBackend("teacher", teacher)), tmp_path / "m0.jsonl")
    assert res0.kept == 3 and "below_margin" not in res0.rejected


def test_resume_skips_done_pairs_and_repairs_a_cut_file(tmp_path: Path) -> None:
    backend = FakeBackend("teacher", teacher)
    judge = Judge(backend)
    out = tmp_path / "sft.jsonl"
    distill(PAIRS[:1], judge, out)
    calls = backend.num_prompts
    res = distill(PAIRS, judge, out)
    assert res.skipped == 1 and res.kept == 2  # good skipped; close and conv new
    assert backend.num_prompts > calls
    text = out.read_text()
    assert len(text.splitlines()) == 6
    # an interrupted run: the last pair half-written, its last line cut mid-way
    lines = text.splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:20], encoding="utf-8")
    assert done_pair_ids(out) == {"good", "close"}
    assert len(out.read_text().splitlines()) == 4
    again = distill(PAIRS, Judge(FakeBackend("teacher", teacher)), out)
    assert again.skipped == 2 and again.kept == 1
    assert [r.pair_id for r in load_sft_rows(out)].count("conv") == 2
    (tmp_path / "other.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match=r"other\.jsonl:1: field 'pair_id'"):
        distill(PAIRS, judge, tmp_path / "other.jsonl")


def test_sampled_teacher_is_refused() -> None:
    judge = Judge(FakeBackend("teacher", teacher), JudgeConfig(samples=2))
    with pytest.raises(ValueError, match="samples"):
        distill(PAIRS, judge, "/tmp/never.jsonl")


def test_distill_with_real_local_teacher(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A real model through the hf backend as teacher (the tiny random Qwen3: its traces are noise, so every
    pair is accounted for and whatever is kept obeys the label-agreement filter)."""
    from cerm.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    pairs = [PreferencePair("math", "What is 12 + 30?", "12 + 30 = 42.", "12 + 30 = 52."),
             PreferencePair("capital", "Name the capital of Japan.", "Tokyo.", "Kyoto is the capital of Japan.")]
    judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=24, eval_max_new_tokens=24))
    out = tmp_path / "sft.jsonl"
    res = distill(pairs, judge, out)
    assert res.kept + sum(res.rejected.values()) == len(pairs)
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["teacher"] == str(tiny_model_dir) and summary["judge"]["evaluations_generated"] == 4
    reasons = [json.loads(line) for line in Path(f"{out}.rejected.jsonl").read_text().splitlines()]
    assert len(reasons) == len(pairs) - res.kept
    for rec in reasons:
        if rec["reason"] == "misordered":
            assert rec["chosen_score"] < rec["rejected_score"]
        elif rec["reason"] == "tie":
            assert rec["chosen_score"] == rec["rejected_score"]
        else:  # a random model writes no criteria list and no box: explicit reasons, no scores
            assert rec["reason"].startswith(("criteria_", "chosen_", "rejected_"))
    if res.kept:
        assert all(r.score > r.partner_score for r in load_sft_rows(out) if r.response_role == "chosen")
    # a rerun resumes: nothing is sent to the model again
    calls = summary["judge"]
    again = distill(pairs, Judge(backend, judge.config, judge.store), out)
    assert again.skipped == res.kept and calls["evaluations_generated"] == 4
    assert json.loads(Path(f"{out}.summary.json").read_text())["judge"]["evaluations_generated"] == 0
