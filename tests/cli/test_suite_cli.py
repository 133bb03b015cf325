"""`cerm bench suite` end to end: the plan and its exact call count, missing data named up front with a fix
that works, resume after a real process is killed, the summary beside the paper's values, `cerm view` on the
root. Judges: the scripted fake backend in-process, and a scripted OpenAI-compatible server over real HTTP
for the kill (its delay makes a run last long enough to be killed mid-way)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from support import DATA, ROOT
from typer.testing import CliRunner

from cerm.bench.records import read_records
from cerm.cli import app

FIXTURES = ROOT / "tests" / "fixtures" / "bench"
ALL = ["rewardbench2", "rm-bench", "judgebench", "ppe", "rmb", "rewardbench"]
runner = CliRunner()


def _flat(text: str) -> str:
    return " ".join(text.split())


def _cerm(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cerm.cli import main; main()", *args]


def test_dry_run_prints_the_plan_and_the_run_makes_exactly_those_calls(tmp_path):
    args = ["bench", "suite", "--backend", "fake", "--model", "m", "--data-root", str(FIXTURES), "--extras",
            "--chunk-size", "3", "--bootstrap", "50", "--out", str(tmp_path / "suite")]
    r = runner.invoke(app, [*args, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "suite").exists()  # a dry run writes nothing and loads no model
    lines = r.output.splitlines()
    assert all(len(line) <= 80 for line in lines if not line.startswith("    "))  # commands are printed whole
    out = _flat(r.output)
    assert "1 criteria + N evaluations per query" in out and "MISSING" not in out
    for title in ("RewardBench 2", "RM-Bench", "JudgeBench", "PPE", "RMB", "RewardBench 1"):
        assert title in out
    assert "no length measurement for 'm' yet" in out  # no prior for a scripted model: the bound only
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    suite = json.loads((tmp_path / "suite" / "suite.json").read_text())
    for name in ALL:  # the planned calls are what the judge generated, benchmark by benchmark
        stats = json.loads((tmp_path / "suite" / name / "summary.json").read_text())["run_stats"]
        plan = suite["plan"][name]
        assert (plan["criteria_calls"], plan["evaluation_calls"]) == (stats["criteria_generated"],
                                                                      stats["evaluations_generated"]), name
        assert plan["tokens_bound"] == 4096 * plan["criteria_calls"] + 8192 * plan["evaluation_calls"]
    rows = {row["benchmark"]: row for row in suite["rows"]}
    assert [row["benchmark"] for row in suite["rows"]] == ALL and {r["status"] for r in rows.values()} == {"done"}
    assert rows["rm-bench"]["paper"]["value"] == 83.2 and rows["rm-bench"]["headline"]["key"] == "mean[chat+safety]"
    assert any("'overall'" in why for why in rows["rm-bench"]["not_comparable"])
    assert "single_game/gpt-4o/overall" in rows["judgebench"]["also"]
    for row in rows.values():
        assert row["tokens_generated"] > 0 and row["wall_s"] >= 0 and row["tie_rate"] is not None
    text = _flat(r.output)
    assert "83.2 [T]" in text and "76.3 [T]" in text and f"cerm view {tmp_path / 'suite'}" in text
    report = (tmp_path / "suite" / "suite.md").read_text()
    assert "| [RM-Bench](rm-bench/report.md) | done | `mean[chat+safety]` |" in report
    # `cerm view` on the root: one summary page linking each benchmark's own site
    r = runner.invoke(app, ["view", str(tmp_path / "suite")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "suite" / "view" / "index.html").read_text()
    for name in ALL:
        assert f'href="{name}/index.html"' in page
        assert (tmp_path / "suite" / "view" / name / "index.html").is_file()
        assert (tmp_path / "suite" / "view" / name / "data" / "index.js").is_file()
    assert "83.2 [T]" in page and "the paper's Overall: 80.2" in page


def test_missing_data_is_named_before_anything_runs_and_its_fix_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty-root"
    empty.mkdir()
    args = ["bench", "suite", "--backend", "fake", "--model", "m", "--data-root", str(empty), "-b", "judgebench",
            "-b", "rewardbench2", "--limit", "3", "--out", "suite", "--bootstrap", "0"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert not (tmp_path / "suite").exists()  # refused before any folder or model
    out = r.output
    assert "MISSING DATA RewardBench 2" in _flat(out) and "MISSING DATA JudgeBench" in _flat(out)
    assert "2 benchmark(s) have no data: judgebench, rewardbench2" in _flat(out)
    fix = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    export = next(line for line in fix if "load_dataset('allenai/reward-bench-2', split='test')" in line)
    code = shlex.split(export)[2]
    compile(code, "fix", "exec")  # the printed command is valid Python
    assert "to_parquet('data/reward-bench-2/reward-bench-2.parquet')" in code
    assert any(line.startswith("git clone https://github.com/ScalerLab/JudgeBench data/src/JudgeBench") for line in fix)
    assert any("--data rewardbench2=data/reward-bench-2" in line for line in fix)
    # --skip-missing runs what is there and lists the rest with its fix
    r = runner.invoke(app, [*args, "--data", f"judgebench={FIXTURES / 'judgebench'}", "--skip-missing"])
    assert r.exit_code == 0, r.output
    suite = json.loads((tmp_path / "suite" / "suite.json").read_text())
    assert [(row["benchmark"], row["status"]) for row in suite["rows"]] == [("judgebench", "done"),
                                                                           ("rewardbench2", "missing data")]
    assert "allenai/reward-bench-2" in (tmp_path / "suite" / "suite.md").read_text()
    # the fix, done by hand (the hub export is a file in the official schema), makes the suite whole
    (tmp_path / "data" / "reward-bench-2").mkdir(parents=True)
    (tmp_path / "data" / "reward-bench-2" / "test.jsonl").write_bytes((FIXTURES / "reward-bench-2" / "test.jsonl")
                                                                      .read_bytes())
    r = runner.invoke(app, [*args, "--data", f"judgebench={FIXTURES / 'judgebench'}", "--data",
                            "rewardbench2=data/reward-bench-2"])
    assert r.exit_code == 0, r.output
    suite = json.loads((tmp_path / "suite" / "suite.json").read_text())
    assert [row["status"] for row in suite["rows"]] == ["done", "done"] and not suite["missing"]
    assert "judgebench: finished earlier (3 items): read, not run" in r.output


def _metrics(summary):
    return {k: summary[k] for k in ("metrics", "groups", "tie_rate", "parse_failure_rate", "statuses", "item_ids")}


@pytest.fixture
def server():
    sys.path.insert(0, str(ROOT / "tests" / "backends"))
    from openai_test_server import Reply, ScriptedServer

    s = ScriptedServer().start()
    s.reset(lambda request, index: Reply(delay_s=0.1))
    yield s
    s.stop()


def _keys(requests):
    return [json.dumps(r["messages"], sort_keys=True) for r in requests]


def test_a_killed_suite_resumes_losing_nothing_and_recomputing_nothing_finished(tmp_path, server, shared_data):
    """A real `cerm bench suite` process killed (SIGKILL) in its second benchmark, then rerun."""
    root = tmp_path / "suite"
    args = _cerm("bench", "suite", "--backend", "openai", "--base-url", server.url, "--model", "m",
                 "--concurrency-limit", "4", "-b", "judgebench", "-b", "rm-bench", "--data-root", str(DATA),
                 "--limit", "8", "--chunk-size", "2", "--bootstrap", "50", "--out", str(root))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    target = root / "rm-bench" / "items.jsonl"
    deadline = time.monotonic() + 120
    while not (target.exists() and target.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the suite did not reach rm-bench's first chunk"
        time.sleep(0.01)
    # 8 rm-bench prompts x 7 calls at 4 in flight and 0.1 s each: >= 1.2 s of work left, so it is alive here
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    first_out = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL
    assert "judgebench 8/8" in first_out  # the first benchmark had finished
    time.sleep(0.3)  # requests the dead client left in flight finish on the server
    before = {name: (root / name / "items.jsonl").read_bytes() for name in ("judgebench", "rm-bench")}
    finished = read_records(root / "rm-bench" / "items.jsonl")
    session1 = _keys(server.requests)
    n1 = len(server.requests)

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "judgebench: finished earlier (8 items): read, not run" in done.stderr
    session2 = server.requests[n1:]
    # nothing finished is recomputed: no request of session 2 is for a finished item's query or responses
    finished_texts = {c["response"] for rec in finished.values() for c in rec["candidates"]}
    finished_queries = {rec["prompt"] for rec in finished.values()}
    for req in session2:
        if len(req["messages"]) == 1:  # a criteria call: the query alone
            assert not any(q in req["messages"][0]["content"] for q in finished_queries)
        else:  # an evaluation: the response in the last turn
            assert not any(t in req["messages"][-1]["content"] for t in finished_texts)
    # ... and nothing is lost: what was written stays byte for byte, the rest is appended
    for name, data in before.items():
        assert (root / name / "items.jsonl").read_bytes().startswith(data)
    summary = json.loads((root / "rm-bench" / "summary.json").read_text())
    stats = summary["run_stats"]
    assert stats["items_resumed"] == len(finished) and summary["n_items"] == 8
    assert stats["criteria_generated"] + stats["evaluations_generated"] == len(session2)
    # session 1's answered calls that the dead process had cached are hits, not requests
    repeated = set(_keys(session2)) & set(session1)
    assert len(repeated) <= 4  # at most what was in flight (--concurrency-limit 4) when it died
    # the same metrics as an uninterrupted run; the ledger adds both sessions' wall time
    fresh = subprocess.run([*args[:-1], str(tmp_path / "fresh")], env=env, capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    for name in ("judgebench", "rm-bench"):
        a = json.loads((root / name / "summary.json").read_text())
        b = json.loads((tmp_path / "fresh" / name / "summary.json").read_text())
        assert _metrics(a) == _metrics(b), name
    rows = {r["benchmark"]: r for r in json.loads((root / "suite.json").read_text())["rows"]}
    sessions = {json.loads(line)["session"] for line in (root / "ledger.jsonl").read_text().splitlines()
                if json.loads(line)["benchmark"] == "rm-bench"}
    assert len(sessions) == 2 and rows["rm-bench"]["wall_s"] > 0 and rows["rm-bench"]["status"] == "done"
