import json

import pytest
from typer.testing import CliRunner

from cerm.cli import app

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("backend: fake\ncache: c.sqlite\n")
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"id": "a", "query": "What is 2+2?", "responses": ["4", "5"]}) + "\n"
        + json.dumps({"query": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                {"role": "user", "content": "bye"}], "response": "ciao"}) + "\n")
    return tmp_path


def test_score_writes_jsonl_and_resumes(workdir):
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "in.jsonl", "-o", "out.jsonl"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (workdir / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == ["a", 2]
    assert len(rows[0]["judgments"]) == 2 and rows[0]["judgments"][0]["status"] == "ok"
    assert rows[0]["criteria"]["items"][0]["term"] == "Correctness"
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "in.jsonl", "-o", "out.jsonl"])
    assert "resuming: 2 item(s)" in r.output
    assert len((workdir / "out.jsonl").read_text().splitlines()) == 2


def test_flags_override_yaml(workdir):
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "--backend", "nope", "--query", "q", "--response", "a"])
    assert r.exit_code == 2 and "unknown backend 'nope'" in r.output


def test_bad_lines_name_file_line_field(workdir):
    (workdir / "bad.jsonl").write_bytes(b'{"query": "", "responses": ["a"]}\n{oops\n\xff\n'
                                        b'{"query": "q", "responses": ["a", " "]}\n{"query": "q", "responses": ["a"]}\n')
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "bad.jsonl"])
    assert r.exit_code == 2
    for where in ("bad.jsonl:1: field 'query'", "bad.jsonl:2: invalid JSON", "bad.jsonl:3: not UTF-8",
                  "bad.jsonl:4: field 'responses'"):
        assert where in " ".join(r.output.split())
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "bad.jsonl", "--skip-bad", "-o", "o.jsonl"])
    assert r.exit_code == 0 and "skipped 4" in r.output
    assert len((workdir / "o.jsonl").read_text().splitlines()) == 1


def test_bon_and_criteria_commands(workdir):
    r = runner.invoke(app, ["-c", "cfg.yaml", "bon", "-i", "in.jsonl", "-o", "bon.jsonl", "--tie-policy", "first"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (workdir / "bon.jsonl").read_text().splitlines()]
    assert all(row["chosen_index"] is not None for row in rows)
    r = runner.invoke(app, ["criteria", "list", "--cache", "c.sqlite"])
    assert r.exit_code == 0 and "What is 2+2?" in r.output
    r = runner.invoke(app, ["criteria", "export", "crit.jsonl", "--cache", "c.sqlite"])
    assert "exported 2" in r.output
    key = json.loads((workdir / "crit.jsonl").read_text().splitlines()[0])["key"]
    (workdir / "new.txt").write_text("[Start of Criteria]\n1. Brevity: short\n[End of Criteria]")
    r = runner.invoke(app, ["criteria", "edit", key[:10], "--text-file", "new.txt", "--cache", "c.sqlite"])
    assert r.exit_code == 0 and "updated" in r.output
    r = runner.invoke(app, ["criteria", "show", key[:10], "--cache", "c.sqlite"])
    assert "Brevity: short" in r.output and "edited=True" in r.output
    r = runner.invoke(app, ["-c", "cfg.yaml", "criteria", "generate", "--query", "What is 2+2?"])
    assert r.exit_code == 0 and "Brevity" in r.output and "cache" in r.output
    r = runner.invoke(app, ["criteria", "show", "zzzz", "--cache", "c.sqlite"])
    assert r.exit_code == 2 and "matches no entries" in r.output


def test_backend_arg_reaches_the_backend_constructor(workdir):
    from cerm.cli.common import parse_backend_args

    assert parse_backend_args(["enforce_eager=true", "dtype=bfloat16", "max_model_len=4096", "x=a=b"]) == {
        "enforce_eager": True, "dtype": "bfloat16", "max_model_len": 4096, "x": "a=b"}
    # the fake backend takes no such argument: the constructor's own error shows it was passed through
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "--query", "q", "--response", "a",
                            "--backend-arg", "enforce_eager=true"])
    assert r.exit_code != 0 and "enforce_eager" in str(r.exception or r.output)
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "--query", "q", "--response", "a", "--backend-arg", "eager"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
