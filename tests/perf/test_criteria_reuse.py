"""perf/criteria_reuse.py: its pieces, its targets, and a real run on the tiny random Qwen3 (hf backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, load_bench_script

SCRIPT = ROOT / "perf" / "criteria_reuse.py"
ARENA = "arena-hard/arena-hard-v0.1"


cr = load_bench_script("criteria_reuse")


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_items_differ_from_their_first_character(shared_data: Path) -> None:
    items = cr.load_items(shared_data / ARENA, 3, 16, 200)
    assert len(items) == 3
    for query, responses in items:
        assert query and len(responses) == 16
        assert len({r[0] for r in responses}) == 16
        assert all(0 < len(r) <= 200 for r in responses)
    assert items[0][1] != items[1][1]


def test_bad_data_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "model_answer").mkdir()
    (tmp_path / "question.jsonl").write_text('{"uid": "u1", "prompt": "hi"}\n{"uid": "u2"}\n')
    (tmp_path / "model_answer" / "gpt-4-0314.jsonl").write_text("")
    with pytest.raises(SystemExit, match=r"question.jsonl:2: field 'prompt'"):
        cr.load_items(tmp_path, 1, 2, 100)


def test_pairwise_verdict_and_call_kinds() -> None:
    assert cr.parse_verdict("A is better. $\\boxed{A}$ ... no, $\\boxed{ B }$") == "B"
    assert cr.parse_verdict("I prefer A") is None  # no box: a failure, never a guess
    from cerm.prompts import criteria_messages, evaluation_messages

    assert cr.call_kind(criteria_messages("q")) == "criteria"
    assert cr.call_kind(evaluation_messages("q", "c", "r")) == "evaluation"
    assert cr.call_kind(cr.pairwise_messages("q", "a", "b")) == "pairwise"


def test_count_check_fails_when_criteria_are_generated_twice() -> None:
    ok = cr.MethodResult(3, 30, 1.0, {"criteria": (1, 10), "evaluation": (2, 20)}, 1, 0)
    twice = cr.MethodResult(4, 40, 1.0, {"criteria": (2, 20), "evaluation": (2, 20)}, 1, 0)
    b = cr.MethodResult(4, 40, 1.0, {}, 2, 0)
    c = cr.MethodResult(2, 20, 1.0, {}, 0, 0)
    good, bad = cr.Checks(), cr.Checks()
    cr.check_counts(good, 2, 1, ok, b, c)
    cr.check_counts(bad, 2, 1, twice, b, c)
    assert good.ok and not bad.ok
    assert {name for name, passed, _ in bad.results if not passed} == {
        "N=2 (a) calls = Q(1+N)", "N=2 (a) no criteria generated twice"}


def test_fake_backend_run_prints_every_target(shared_data: Path, tmp_path: Path) -> None:
    proc = run("--backend", "fake", "--n", "2,8", "--queries", "2", "--data", str(shared_data / ARENA),
               "--json", str(tmp_path / "out.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10/10 targets PASS" in proc.stdout
    assert "  8 |  18/ 32/  112  1.78x  6.22x" in proc.stdout  # 2 queries x (9 / 16 / 56) at N = 8
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [r["n"] for r in rows] == [2, 8]


@pytest.mark.slow
def test_real_run_on_tiny_qwen3(shared_data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """hf backend, real generation: the counts hold and the token sums come from the model's own outputs."""
    proc = run("--backend", "hf", "--model", str(tiny_model_dir), "--n", "2,3", "--queries", "1",
               "--max-new-tokens", "4", "--response-chars", "120", "--data", str(shared_data / ARENA),
               "--json", str(tmp_path / "out.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "10/10 targets PASS" in proc.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    n3 = out["rows"][1]
    assert (n3["a"]["calls"], n3["b"]["calls"], n3["c"]["calls"]) == (4, 6, 6)
    # a random model never stops early: every call generates exactly max_new_tokens
    assert n3["a"]["tokens"] == 4 * 4 and n3["c"]["tokens"] == 6 * 4
    assert n3["a"]["failures"] == 3 and n3["c"]["failures"] == 6  # no box from a random model: counted
