"""Results on stdout, logs and progress on stderr, tables readable at 80 columns: the real `cerm`, piped.

Each command runs as a subprocess with stdout and stderr as pipes (what `cerm ... > file` or `| less` gives):
what the command exists to show must be on stdout, and at COLUMNS=80 no table splits a word or cuts an
identifier (subset names, metric names, probe names come out whole).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "bench"


def cerm(*args: str | Path, cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="80", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", "from cerm.cli import main; main()", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    text = [line for line in proc.stdout.splitlines() if not line.startswith("{")]  # JSONL is not for reading
    assert all(len(line) <= 80 for line in text), proc.stdout
    return proc


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "q1", "query": "What is 2+2?", "responses": ["4", "5"]})
                                       + "\n")
    return tmp_path


FAKE = ("--backend", "fake", "--model", "m", "--cache", "c.sqlite")


def test_score_table_on_stdout_unless_stdout_holds_the_jsonl(work):
    p = cerm("score", *FAKE, "-i", "in.jsonl", cwd=work)
    assert "status" in p.stdout and "q1" in p.stdout  # the score table is the result
    assert "criteria generated" in p.stderr and "SCRIPTED" not in p.stdout  # logs and the warning are not
    p = cerm("score", *FAKE, "-i", "in.jsonl", "-o", "-", cwd=work)
    assert [json.loads(line)["id"] for line in p.stdout.splitlines()] == ["q1"]  # nothing but JSONL
    assert "status" in p.stderr
    p = cerm("bon", *FAKE, "-i", "in.jsonl", "--tie-policy", "first", cwd=work)
    assert p.stdout.startswith("q1: chosen ")


def test_criteria_commands_print_results_on_stdout(work):
    p = cerm("criteria", "generate", *FAKE, "--query", "What is 2+2?", cwd=work)
    assert "1. " in p.stdout
    p = cerm("criteria", "list", "--cache", "c.sqlite", cwd=work)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["key", "model", "items", "edited", "query"] and "What is 2+2?" in lines[2]
    key = lines[2].split()[0]
    p = cerm("criteria", "show", key, "--cache", "c.sqlite", cwd=work)
    assert "[Start of Criteria]" in p.stdout and "query: What is 2+2?" in p.stdout
    p = cerm("criteria", "delete", "feedface", "--cache", "c.sqlite", cwd=work, code=2)
    assert p.stdout == "" and "no cached criteria with key 'feedface'" in p.stderr


def test_demo_prints_the_chosen_answer_on_stdout(work):
    data = work / "arena"
    data.mkdir()
    (data / "question.jsonl").write_text(json.dumps({"uid": "u1", "prompt": "Name a prime."}) + "\n")
    p = cerm("demo", *FAKE, "--data", data, "--n", "2", cwd=work)
    assert "Chosen answer #" in p.stdout and "Criteria" in p.stdout
    assert "sampling 2 candidates" in p.stderr and "model calls" in p.stderr


def test_bench_list_keeps_every_subset_name_whole_at_80_columns(work):
    from cerm.bench import BENCHMARKS

    p = cerm("bench", "list", "--data-root", FIXTURES, cwd=work)
    words = p.stdout.replace(",", " ").split()
    for b in BENCHMARKS.values():
        for subset in b.subsets:
            assert all(part in words for part in subset.split()), subset  # "Chat Hard" is two words


def test_bench_compare_and_probe_keep_their_names_whole_at_80_columns(work):
    run = ("bench", "run", "-b", "judgebench", "--data-root", FIXTURES, "--bootstrap", "20")
    p = cerm(*run, *FAKE, "--out", "judge", cwd=work)
    assert "JudgeBench gpt-4o/overall:" in p.stdout and "report: judge/report.md" in p.stdout
    assert "scripted text" in p.stderr and "scripted text" not in p.stdout
    cerm(*run, "--scorer", "length", "--out", "length", cwd=work)
    p = cerm("bench", "compare", "length", "judge", "--bootstrap", "20", cwd=work)
    cmp_rows = [line for line in p.stdout.splitlines() if line.split()[0].endswith(("overall", "Coding", "Math"))]
    metrics = {line.split()[0] for line in cmp_rows}
    assert {"all/overall", "gpt-4o/overall", "gpt-4o/Coding"} <= metrics
    assert len(set(cmp_rows)) == len(cmp_rows)  # no two rows read the same
    assert "A = length" in p.stdout and "B = fake:m" in p.stdout
    p = cerm("probe", "-b", "judgebench", "--data-root", FIXTURES, *FAKE, "--limit", "4", "--bootstrap", "20",
             "--probe", "injection", "--probe", "length", "--out", "probes", cwd=work)
    names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    for probe in ("injection/fake-verdict", "injection/delimiter", "injection/override", "length"):
        assert probe in names, p.stdout
    assert "scripted text" in p.stderr and "results: probes/probes.json" in p.stdout
