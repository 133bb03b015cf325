"""What a new user meets first: the README's demo line, per-model budgets, data discovery, editor, help."""

import json
import shlex
import types

from support import ROOT
from typer.testing import CliRunner

from cerm.cli import app
from cerm.cli.common import JudgeOptions
from cerm.judge import JudgeConfig, config_for_model

runner = CliRunner()


def test_readme_demo_line_is_what_demo_sh_runs():
    script = (ROOT / "scripts" / "demo.sh").read_text()
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    script_args = shlex.split(exec_line)[2:-1]  # drop `exec .venv/bin/cerm` and the trailing "$@"
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "# what scripts/demo.sh runs" in x)
    assert shlex.split(line.split("#")[0])[1:] == script_args


def test_embedded_never_inherits_the_gpu_budgets():
    cfg = JudgeOptions(model="embedded").config()
    assert (cfg.criteria_max_new_tokens, cfg.eval_max_new_tokens) == (192, 160)
    cfg = JudgeOptions(model="PKU-ONELab/CE-RM-4B").config()
    assert (cfg.criteria_max_new_tokens, cfg.eval_max_new_tokens) == (JudgeConfig().criteria_max_new_tokens,
                                                                      JudgeConfig().eval_max_new_tokens)
    assert config_for_model("embedded", eval_max_new_tokens=7).eval_max_new_tokens == 7  # explicit wins
    r = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    text = " ".join(r.output.split())
    assert "embedded: 192" in text and "embedded: 160" in text


def test_demo_finds_shared_data_in_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "shared" / "data" / "arena-hard" / "arena-hard-v0.1"
    folder.mkdir(parents=True)
    (folder / "question.jsonl").write_text(json.dumps({"uid": "u1", "prompt": "Name a prime."}) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CERM_DATA_ROOT", raising=False)
    r = runner.invoke(app, ["demo", "--backend", "fake", "--model", "m", "--cache", "c.sqlite", "--n", "2"])
    assert r.exit_code == 0, r.output
    assert "Name a prime." in r.output


def test_version_backends_and_recipes():
    from importlib import metadata

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"cerm {metadata.version('cerm')}"
    r = runner.invoke(app, ["backends"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    rows = {line.split()[0] for line in r.output.splitlines() if line.strip()}
    for name in ("hf", "vllm", "openai", "llamacpp", "fake"):
        assert name in rows
    assert "pip install 'cerm[hf]'" in r.output and "setup_vllm_venv.sh" in r.output
    r = runner.invoke(app, ["recipes"])
    assert "ce-rm-4b-sft.yaml" in r.output.split() and "sft/tiny-cpu.yaml" in r.output.split()
    r = runner.invoke(app, ["recipes", "recipes/ce-rm-4b-rl.yaml"])
    assert r.exit_code == 0 and "RLConfig" in r.output
    assert runner.invoke(app, ["recipes", "nope.yaml"]).exit_code == 2


def test_recipes_are_package_data():
    """Every shipped recipe matches a package-data glob, so the wheel carries what the help points at."""
    import fnmatch

    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cerm"]
    root = ROOT / "src" / "cerm"
    files = [p.relative_to(root).as_posix() for p in (root / "recipes").rglob("*.yaml")]
    assert files and all(any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs) for f in files)
    for f in files:  # and no recipe cites a spec file or command that does not exist
        text = (root / f).read_text()
        assert "spec/" not in text and "cerm train curate" not in text, f


def test_missing_extra_hint_survives_rich_markup(monkeypatch):
    from cerm.backends import base

    def broken(name, model, **kwargs):
        raise base.missing_extra(name, "torch and transformers")

    monkeypatch.setattr("cerm.cli.common.get_backend", broken)
    r = runner.invoke(app, ["score", "--backend", "hf", "--query", "q", "--response", "a"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "pip install 'cerm[hf]'" in r.output
    r = runner.invoke(app, ["score", "--backend", "vllm", "--query", "q", "--response", "a"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "setup_vllm_venv.sh" in r.output


def test_unreachable_openai_pool_fails_fast(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    start = time.perf_counter()
    r = runner.invoke(app, ["score", "--backend", "openai", "--base-url", dead, "--model", "m",
                            "--cache", str(tmp_path / "c.sqlite"), "--query", "q", "--response", "a"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 2 and dead in r.output and "unreachable" in r.output, r.output
    assert time.perf_counter() - start < 10


def test_fake_backend_outputs_are_labelled_scripted(tmp_path):
    from cerm.bench.report import scorer_label

    assert JudgeOptions(backend="fake", model="PKU-ONELab/CE-RM-4B").run_name == "scripted-fake_PKU-ONELab/CE-RM-4B"
    assert JudgeOptions(backend="hf", model="x").run_name == "x"
    assert "SCRIPTED" in scorer_label({"scorer": {"kind": "judge", "model": "fake:PKU-ONELab/CE-RM-4B"}})
    r = runner.invoke(app, ["score", "--backend", "fake", "--cache", str(tmp_path / "c.sqlite"), "--query", "q",
                            "--response", "a"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "scripted text" in r.output


def test_license_file_is_the_declared_apache_2():
    import tomllib

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def _all_commands(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _all_commands(sub, [*path, name])


def test_every_help_is_readable_at_80_columns():
    """No flag name or default cut with an ellipsis, no line over 80 columns (rich's table truncated both)."""
    import typer

    for path in _all_commands(typer.main.get_command(app), []):
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        where = " ".join(["cerm", *path])
        assert r.exit_code == 0, where
        assert "…" not in r.output, f"{where} --help truncates:\n{r.output}"
        assert max(len(line) for line in r.output.splitlines()) <= 80, where
        assert "spec/" not in r.output and "train curate" not in r.output, where


def test_hub_error_names_the_model(monkeypatch, tmp_path):
    def offline(name, model, **kwargs):
        raise OSError("We couldn't connect to the hub to load this file; you are in offline mode.")

    monkeypatch.setattr("cerm.cli.common.get_backend", offline)
    r = runner.invoke(app, ["score", "--model", "PKU-ONELab/CE-RM-4B", "--cache", str(tmp_path / "c.sqlite"),
                            "--query", "q", "--response", "a"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "cannot load model 'PKU-ONELab/CE-RM-4B' (backend hf)" in r.output


def test_bench_progress_is_printed_periodically_without_a_terminal(capsys, monkeypatch):
    from cerm.cli import bench

    clock = iter([0.0, 1.0, 31.0, 32.0, 40.0])
    # the module's own view of time only: time.monotonic itself is read by every thread of the process
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    p = bench._PlainProgress("judgebench → runs/x")
    p(1, 10)   # 1 s: too soon
    p(5, 10)   # 31 s: printed
    p(6, 10)   # 32 s: too soon
    p(10, 10)  # the end is always printed
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["judgebench → runs/x: 5/10 items (50%), 31 s", "judgebench → runs/x: 10/10 items (100%), 40 s"]


def test_demo_samples_every_prompt_in_one_call_and_says_what_happened(tmp_path, monkeypatch):
    from cerm.backends.fake import FakeBackend

    folder = tmp_path / "arena"
    (folder / "model_answer").mkdir(parents=True)
    (folder / "question.jsonl").write_text("".join(json.dumps({"uid": u, "prompt": p}) + "\n"
                                                   for u, p in [("u1", "Name a prime."), ("u2", "Name a colour.")]))
    (folder / "model_answer" / "gpt-4-0314.jsonl").write_text(
        json.dumps({"uid": "u1", "messages": [{"role": "assistant", "content": "7"}]}) + "\n")
    calls = []
    real = FakeBackend.generate
    monkeypatch.setattr(FakeBackend, "generate", lambda self, prompts, params, on_done=None: (
        calls.append(len(prompts)), real(self, prompts, params, on_done))[1])
    r = runner.invoke(app, ["demo", "--backend", "fake", "--model", "m", "--cache", str(tmp_path / "c.sqlite"),
                            "--n", "3", "--data", str(folder)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert calls == [2 + 3, 2, 6]  # candidates (u1: its reference + 2 sampled, u2: 3) in one call, criteria, evaluations
    assert "model calls: 2 criteria + 6 evaluations (6 ok, 0 failed)" in r.output
