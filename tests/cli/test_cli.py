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


def test_bon_scores_each_response_once_and_counts_once(workdir):
    r = runner.invoke(app, ["-c", "cfg.yaml", "bon", "--cache", "fresh.sqlite", "-i", "in.jsonl",
                            "--tie-policy", "first"])
    assert r.exit_code == 0, r.output
    summary = " ".join(r.output.split())
    # 2 queries, 3 responses: 2 criteria turns and 3 evaluations, none of them served twice from the cache
    assert "criteria generated 2 (cache hits 0), evaluations 3 (cache hits 0)" in summary


def test_criteria_edit_opens_the_editor_without_text_file(workdir, monkeypatch):
    """typer has no ``edit``: the editor path crashed with AttributeError before (found by mypy)."""
    import click

    r = runner.invoke(app, ["-c", "cfg.yaml", "criteria", "generate", "--query", "What is 2+2?"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["criteria", "export", "crit.jsonl", "--cache", "c.sqlite"])
    key = json.loads((workdir / "crit.jsonl").read_text().splitlines()[0])["key"]
    seen = []
    monkeypatch.setattr(click, "edit", lambda text: seen.append(text) or "[Start of Criteria]\n1. Edited: yes\n"
                                                                       "[End of Criteria]")
    r = runner.invoke(app, ["criteria", "edit", key[:10], "--cache", "c.sqlite"])
    assert r.exit_code == 0 and "updated" in r.output, r.output
    assert "[Start of Criteria]" in seen[0]  # the editor opened on the current text
    r = runner.invoke(app, ["criteria", "show", key[:10], "--cache", "c.sqlite"])
    assert "Edited: yes" in r.output


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
    assert r.exit_code == 2 and "no cached criteria with key 'zzzz'" in r.output, r.output
    assert "more characters" not in r.output  # an unknown key is not an ambiguous one
    r = runner.invoke(app, ["criteria", "delete", "%", "--cache", "c.sqlite"])  # no LIKE wildcard
    assert r.exit_code == 2 and "no cached criteria" in r.output
    r = runner.invoke(app, ["criteria", "show", "", "--cache", "c.sqlite"])
    assert r.exit_code == 2 and "several entries; give more characters" in r.output


def test_criteria_edit_opens_editor(workdir, monkeypatch):
    """`criteria edit KEY` without --text-file runs $EDITOR on the text (it crashed on typer.edit)."""
    assert runner.invoke(app, ["-c", "cfg.yaml", "score", "--query", "What is 2+2?", "--response", "4"]).exit_code == 0
    r = runner.invoke(app, ["criteria", "export", "crit.jsonl", "--cache", "c.sqlite"])
    key = json.loads((workdir / "crit.jsonl").read_text().splitlines()[0])["key"]
    editor = workdir / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf '[Start of Criteria]\\n1. Tone: polite\\n[End of Criteria]' > \"$1\"\n")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.delenv("VISUAL", raising=False)
    r = runner.invoke(app, ["criteria", "edit", key[:10], "--cache", "c.sqlite"])
    assert r.exit_code == 0 and "updated" in r.output, r.output
    r = runner.invoke(app, ["criteria", "show", key[:10], "--cache", "c.sqlite"])
    assert "Tone: polite" in r.output and "edited=True" in r.output


def test_resume_refuses_an_output_made_with_other_settings(workdir):
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "in.jsonl", "-o", "out.jsonl"])
    assert r.exit_code == 0, r.output
    row = json.loads((workdir / "out.jsonl").read_text().splitlines()[0])
    assert row["settings"]["model"] == row["model"] and row["settings"]["eval_max_new_tokens"] == 8192
    before = (workdir / "out.jsonl").read_text()
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "in.jsonl", "-o", "out.jsonl", "--model", "other"])
    assert r.exit_code == 2, r.output
    assert "out.jsonl:1: written with other settings" in " ".join(r.output.split()) and "'fake:other' now" in " ".join(r.output.split())
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "in.jsonl", "-o", "out.jsonl", "--seed", "3"])
    assert r.exit_code == 2 and "seed" in r.output
    assert (workdir / "out.jsonl").read_text() == before  # nothing appended


def test_output_dash_is_stdout_and_bon_prints_no_lone_tie(workdir):
    r = runner.invoke(app, ["-c", "cfg.yaml", "score", "-i", "in.jsonl", "-o", "-"])
    assert r.exit_code == 0 and not (workdir / "-").exists()
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [row["id"] for row in rows] == ["a", 2]
    r = runner.invoke(app, ["-c", "cfg.yaml", "bon", "-i", "in.jsonl", "--tie-policy", "first"])
    assert r.exit_code == 0 and "tied [" not in r.output and "chosen" in r.output


def test_config_file_unknown_keys_and_sections_are_errors(workdir):
    (workdir / "typo.yaml").write_text("backend: fake\ncache: c.sqlite\neval_max_tokens: 64\n")
    r = runner.invoke(app, ["-c", "typo.yaml", "score", "--query", "q", "--response", "a"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "unknown key 'eval_max_tokens' for `cerm score`" in r.output, r.output
    assert r.output.startswith("error: --config typo.yaml")  # one error style: ours, not click's box
    (workdir / "nested.yaml").write_text("backend: fake\njudge:\n  seed: 1\n")
    r = runner.invoke(app, ["-c", "nested.yaml", "score", "--query", "q", "--response", "a"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "nested section" in r.output
    (workdir / "bench.yaml").write_text("backend: fake\nbenchmark: judgebench\n")  # a key of a bench subcommand
    assert "unknown key" not in runner.invoke(app, ["-c", "bench.yaml", "bench", "list"]).output


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
