"""The `cerm curate` and `cerm distill` commands end to end with the fake backend."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from cerm.cli.curate import curate, distill
from cerm.train.sft.data import load_sft_rows


def _out(res) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("curate")(curate)
    app.command("distill")(distill)
    return app


def _pairs(path: Path, n: int) -> Path:
    rows = [{"id": f"p{i}", "prompt": f"Question number {i}: " + "abcdefghij"[i % 10] * (i + 3),
             "chosen": f"chosen answer {i}", "rejected": f"rejected answer {i}",
             "domain": ("chat", "code")[i % 2]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_curate_then_distill_cli(tmp_path: Path) -> None:
    src = _pairs(tmp_path / "raw.jsonl", 12)
    runner = CliRunner()
    out = tmp_path / "curated"
    res = runner.invoke(_app(), ["curate", str(src), "-o", str(out), "--target-size", "6", "--heldout-size", "2",
                                 "--pass-k", "0", "--language", "all", "--backend", "fake", "--model", "m"])
    assert res.exit_code == 0, res.output
    assert "8" in _out(res) and (out / "report.json").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["train_size"] == 6 and report["heldout_size"] == 2 and report["domains"]["train"]
    # the fake judge's scores depend on the response text only: k samples all agree, so every pair is
    # always right, always wrong or always tied; only ties (capped) can pass
    res = runner.invoke(_app(), ["curate", str(src), "-o", str(tmp_path / "judged"), "--target-size", "6",
                                 "--heldout-size", "0", "--pass-k", "2", "--language", "all", "--backend", "fake",
                                 "--model", "m"])
    assert res.exit_code == 0, res.output
    rates = [json.loads(line) for line in (tmp_path / "judged" / "pass_rates.jsonl").read_text().splitlines()]
    assert rates and all(r["rate"] in (0.0, 0.5, 1.0) for r in rates)
    assert all(r["verdict"] != "keep" for r in rates if r["rate"] != 0.5)

    rows = tmp_path / "sft.jsonl"
    res = runner.invoke(_app(), ["distill", str(out / "train.jsonl"), "-o", str(rows), "--backend", "fake",
                                 "--model", "teacher", "--cache", str(tmp_path / "c.sqlite")])
    assert res.exit_code == 0, res.output
    summary = json.loads(Path(f"{rows}.summary.json").read_text())
    assert summary["pairs"] == 6 and summary["kept_pairs"] + sum(summary["rejected"].values()) == 6
    if summary["kept_pairs"]:
        assert all(r.score > r.partner_score for r in load_sft_rows(rows) if r.response_role == "chosen")
    again = runner.invoke(_app(), ["distill", str(out / "train.jsonl"), "-o", str(rows), "--backend", "fake",
                                   "--model", "teacher", "--cache", str(tmp_path / "c.sqlite")])
    assert again.exit_code == 0 and f"{summary['kept_pairs']} already done" in _out(again)


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "prompt": "q", "chosen": "a"}\n')
    res = runner.invoke(_app(), ["distill", str(bad), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake"])
    assert res.exit_code == 2 and "bad.jsonl:1: field 'rejected'" in _out(res)
    res = runner.invoke(_app(), ["curate", str(bad), "-o", str(tmp_path / "o"), "--samples", "3", "--backend", "fake"])
    assert res.exit_code == 2 and "--pass-k" in _out(res)
    res = runner.invoke(_app(), ["curate", str(bad), "-o", str(tmp_path / "o"), "--pass-k", "1"])
    assert res.exit_code == 2 and "pass_k (1)" in _out(res)
    res = runner.invoke(_app(), ["distill", str(bad), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake",
                                 "--samples", "2", "--skip-bad"])
    assert res.exit_code == 2 and "no valid pairs" in _out(res)


def test_distill_with_a_failing_teacher_exits_non_zero(tmp_path: Path, monkeypatch) -> None:
    """Every teacher call fails: the run ends "0 of N kept, criteria_error N" and must not exit 0."""
    from cerm.backends.fake import FakeBackend
    from cerm.types import Generation

    def dead(messages, params):
        return Generation("", "error", error="connection error: ConnectError [http://teacher:8000/v1]")

    monkeypatch.setattr("cerm.cli.common.get_backend", lambda name, model, **kw: FakeBackend(model, dead))
    src = _pairs(tmp_path / "pairs.jsonl", 3)
    res = CliRunner().invoke(_app(), ["distill", str(src), "-o", str(tmp_path / "sft.jsonl"), "--backend", "fake",
                                      "--model", "teacher", "--cache", str(tmp_path / "c.sqlite")])
    assert res.exit_code == 1, res.output
    assert "3 of 3 pairs failed in the teacher backend" in _out(res)


def test_curate_strict_refuses_an_empty_input_and_a_number_as_text(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["-o", str(tmp_path / "o"), "--pass-k", "0", "--language", "all", "--strict"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = runner.invoke(_app(), ["curate", str(empty), *args])
    assert res.exit_code == 2 and f"{empty}: no preference pairs to curate (the input is empty)" in _out(res)
    numbered = _pairs(tmp_path / "numbered.jsonl", 3)
    rows = numbered.read_text().splitlines()
    row = json.loads(rows[1])
    row["chosen"] = 42
    numbered.write_text("\n".join([rows[0], json.dumps(row), rows[2]]) + "\n")
    res = runner.invoke(_app(), ["curate", str(numbered), *args])
    assert res.exit_code == 2 and f"{numbered}:2: field 'chosen': a number (42), not text" in _out(res), _out(res)
    # without --strict both stay warnings, as before
    assert runner.invoke(_app(), ["curate", str(numbered), *args[:-1]]).exit_code == 0


def test_deep_nesting_and_huge_integers_are_reported_rows(tmp_path: Path) -> None:
    src = _pairs(tmp_path / "raw.jsonl", 6)
    lines = src.read_text().splitlines()
    lines[1] = '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + ', "chosen": "c", "rejected": "r"}'
    lines[3] = '{"prompt": "q", "chosen": "c", "rejected": ' + "9" * 5000 + "}"
    src.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    res = runner.invoke(_app(), ["curate", str(src), "-o", str(tmp_path / "o"), "--target-size", "2",
                                 "--heldout-size", "1", "--pass-k", "0", "--language", "all"])
    assert res.exit_code == 0, res.output
    invalid = [json.loads(x) for x in (tmp_path / "o" / "invalid.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"][:9]) for r in invalid] == [(2, "prompt[0]"), (4, "rejected")]
    res = runner.invoke(_app(), ["distill", str(src), "-o", str(tmp_path / "d.jsonl"), "--backend", "fake"])
    assert res.exit_code == 2 and "raw.jsonl:2: field 'prompt[0]" in _out(res) and "more than 4300" in _out(res)
