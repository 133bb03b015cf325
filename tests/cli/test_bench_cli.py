"""`cerm bench run|compare|list` and `cerm probe` through the command line, on the fixture benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cerm.cli import bench as bench_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    """The commands as the main app registers them (see cerm.cli.bench's docstring)."""
    app = typer.Typer()
    app.add_typer(bench_cli.app, name="bench")
    app.command("probe")(bench_cli.probe)
    return app


def _flat(output: str) -> str:
    return " ".join(output.split())


def test_bench_list_shows_local_availability(app, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    r = runner.invoke(app, ["bench", "list", "--data-root", str(FIXTURES)])
    assert r.exit_code == 0, r.output
    out = _flat(r.output)
    for name in ("judgebench", "rm-bench", "rmb", "rewardbench", "rewardbench2", "ppe"):
        assert name in out
    assert "allenai/reward-bench-2[test]" in out


def test_bench_run_resume_and_compare(app, tmp_path):
    args = ["bench", "run", "-b", "judgebench", "--data-root", str(FIXTURES), "--backend", "fake", "--model", "m",
            "--out", str(tmp_path / "judge"), "--bootstrap", "100", "--baselines", "length"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "JudgeBench gpt-4o/overall:" in r.output and "8 scored, 0 resumed" in _flat(r.output)
    summary = json.loads((tmp_path / "judge" / "summary.json").read_text())
    assert summary["scorer"]["model"] == "fake:m" and summary["n_items"] == 8
    assert (tmp_path / "judge" / "cache.sqlite").exists()  # the run directory carries its own cache
    assert "| length |" in (tmp_path / "judge" / "report.md").read_text()
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "0 scored, 8 resumed" in _flat(r.output)
    r = runner.invoke(app, ["bench", "compare", str(tmp_path / "judge"), str(tmp_path / "judge" / "baselines" / "length"),
                            "--bootstrap", "100", "--json", str(tmp_path / "cmp.json")])
    assert r.exit_code == 0, r.output
    assert "B − A on 8 shared items" in _flat(r.output)
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["scorer_b"] == "length" and {d["metric"] for d in cmp["diffs"]} >= {"all/overall", "gpt-4o/overall"}


def test_bench_run_subset_limit_and_samples(app, tmp_path):
    r = runner.invoke(app, ["bench", "run", "-b", "rewardbench2", "--data", str(FIXTURES / "reward-bench-2"),
                            "--subset", "Ties", "--subset", "Math", "--limit", "3", "--seed", "1", "--samples", "2",
                            "--backend", "fake", "--out", str(tmp_path / "o"), "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_items"] == 3 and summary["selection"] == {"subsets": ["Ties", "Math"], "limit": 3}
    assert summary["scorer"]["config"]["samples"] == 2 and summary["seed"] == 1
    assert {i.split(":")[0] for i in summary["item_ids"]} <= {"ref", "tied", "Math"}


@pytest.mark.parametrize(("args", "message"), [
    (["-b", "nope"], "unknown benchmark 'nope'"),
    (["-b", "rmb", "--subset", "Chat"], "subset 'Chat' matches no item"),
    (["-b", "rewardbench", "--scorer", "oracle"], "--scorer 'oracle' must be one of"),
    (["-b", "rewardbench", "--samples", "0"], "samples (0) must be >= 1"),
])
def test_bench_run_errors(app, tmp_path, args, message):
    r = runner.invoke(app, ["bench", "run", *args, "--data-root", str(FIXTURES), "--backend", "fake",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and message in _flat(r.output)


def test_bench_run_bad_file_names_file_line_field(app, tmp_path):
    lines = (FIXTURES / "reward-bench" / "filtered.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    del row["rejected"]
    bad = tmp_path / "filtered.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(row), *lines[2:]]) + "\n")
    r = runner.invoke(app, ["bench", "run", "-b", "rewardbench", "--data", str(bad), "--backend", "fake",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "filtered.jsonl:2: field 'rejected': missing" in _flat(r.output)


def test_probe_with_a_baseline_and_a_judge(app, tmp_path):
    r = runner.invoke(app, ["probe", "-b", "judgebench", "--data-root", str(FIXTURES), "--scorer", "length",
                            "--out", str(tmp_path / "len"), "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    probes = {p["probe"]: p for p in json.loads((tmp_path / "len" / "probes.json").read_text())["probes"]}
    assert set(probes) == {"length", "format", "self-praise", "inflation"}
    assert probes["length"]["shift"] > 0 and probes["length"]["share_up"] == 1.0  # longer is better, always
    assert probes["self-praise"]["share_up"] == 1.0
    assert probes["format"]["n_pairs"] == 0 and probes["format"]["shift"] is None  # no markdown in the fixture
    r = runner.invoke(app, ["probe", "-b", "rm-bench", "--data-root", str(FIXTURES), "--backend", "fake",
                            "--probe", "self-praise", "--out", str(tmp_path / "judge"), "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "judge" / "probes.json").read_text())
    assert out["scorer"]["kind"] == "judge" and [p["probe"] for p in out["probes"]] == ["self-praise"]
    assert len((tmp_path / "judge" / "probe_items.jsonl").read_text().splitlines()) == 5
    r = runner.invoke(app, ["probe", "--probe", "verbosity", "--data-root", str(FIXTURES)])
    assert r.exit_code == 2 and "unknown probe 'verbosity'" in r.output


def test_probe_injection_through_the_cli(app, tmp_path):
    r = runner.invoke(app, ["probe", "-b", "judgebench", "--data-root", str(FIXTURES), "--backend", "fake",
                            "--probe", "injection", "--probe", "length", "--out", str(tmp_path / "inj"),
                            "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "inj" / "probes.json").read_text())
    names = [p["probe"] for p in out["probes"]]
    assert names == ["injection/fake-verdict", "injection/delimiter", "injection/override", "length"]
    for p in out["probes"][:3]:
        assert p["n_pairs"] > 0 and p["flagged_variant"] == 1.0 and p["flip_rate"] is not None
    assert out["probes"][3]["flip_rate"] is None


def test_bench_run_duplicate_ids_name_both_rows(app, tmp_path):
    lines = (FIXTURES / "reward-bench" / "filtered.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["id"] = json.loads(lines[0])["id"]
    bad = tmp_path / "filtered.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], json.dumps(row), *lines[3:]]) + "\n")
    r = runner.invoke(app, ["bench", "run", "-b", "rewardbench", "--data", str(bad), "--backend", "fake",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert f"filtered.jsonl:3: field 'id': duplicate item id {str(row['id'])!r} (first at {bad}:1," in _flat(r.output)


def test_bench_run_on_an_empty_file_says_it_is_empty(app, tmp_path):
    empty = tmp_path / "filtered.jsonl"
    empty.write_text("")
    r = runner.invoke(app, ["bench", "run", "-b", "rewardbench", "--data", str(empty), "--backend", "fake",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    out = _flat(r.output)
    assert f"{empty}: the file holds no rows (it is empty)" in out and "check --data and --subset" not in out


def test_bench_out_reused_with_another_model_names_the_model(app, tmp_path):
    args = ["bench", "run", "-b", "judgebench", "--data-root", str(FIXTURES), "--backend", "fake", "--out",
            str(tmp_path / "run"), "--bootstrap", "10"]
    assert runner.invoke(app, [*args, "--model", "a"]).exit_code == 0
    r = runner.invoke(app, [*args, "--model", "b"])
    assert r.exit_code == 2
    assert "holds a run with other settings (scorer.model: 'fake:a' there, 'fake:b' now)" in _flat(r.output)


def test_a_hostile_benchmark_line_is_a_located_error(app, tmp_path):
    data = tmp_path / "jb"
    data.mkdir()
    src = next((FIXTURES / "judgebench").glob("*gpt-4o*.jsonl"))
    lines = src.read_text().splitlines()[:2]
    (data / src.name).write_text("\n".join([*lines, '{"pair_id": ' + "[" * 100_000 + "]" * 100_000 + "}"]) + "\n")
    r = runner.invoke(app, ["bench", "run", "-b", "judgebench", "--data", str(data), "--backend", "fake",
                            "--model", "m", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert f"{src.name}:3: field 'pair_id[0]" in _flat(r.output) and "nested deeper than 100" in _flat(r.output)
