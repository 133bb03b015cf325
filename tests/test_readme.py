"""Every README code block runs (python, with the fake backend) or parses against the CLI (bash `cerm` lines),
so the README cannot rot. Block extraction is plain text: ```python / ```bash fences."""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from support import ROOT

from cerm.cli import app

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
# the examples' README: its `cerm` lines are checked too (its python snippet is a deliberate fragment)
EXAMPLE_BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", (ROOT / "examples" / "README.md").read_text(encoding="utf-8"),
                            flags=re.S | re.M)


def python_blocks() -> list[str]:
    return [code for lang, code in BLOCKS if lang == "python"]


def cerm_lines() -> list[str]:
    """The `cerm ...` command lines of the bash blocks, continuation lines joined, comments dropped."""
    out = []
    for lang, code in BLOCKS + EXAMPLE_BLOCKS:
        if lang != "bash":
            continue
        for line in code.replace("\\\n", " ").splitlines():
            if line.strip().startswith("cerm "):
                out.append(line.strip().removesuffix("&").strip())  # `cerm serve ... &` runs in the background
    return out


def fake_backend(code: str) -> str:
    """Every get_backend("x", ...) in a block becomes the scripted fake backend (no model, no GPU)."""
    return re.sub(r'get_backend\("\w+"', 'get_backend("fake"', code)


def test_the_readme_has_blocks():
    assert len(python_blocks()) >= 3 and len(cerm_lines()) >= 15


def test_python_api_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the block's Store("~/.cache/...") lands in a temporary home
    monkeypatch.chdir(tmp_path)
    api = next(c for c in python_blocks() if "judge.score_batch" in c)
    exec(compile(fake_backend(api), "README.md:python-api", "exec"), {"__name__": "readme"})
    assert (tmp_path / ".cache" / "cerm" / "cache.sqlite").is_file()  # `~` expanded, not a ./~ folder
    assert not (tmp_path / "~").exists()


def test_vllm_block_compiles_and_imports(monkeypatch):
    block = next(c for c in python_blocks() if "VLLMBackend" in c)
    exec(compile(block, "README.md:vllm", "exec"), {"__name__": "readme"})  # the engine starts under __main__ only


@pytest.mark.slow  # builds a GRPOTrainer around the tiny random Qwen3
def test_trl_block_builds_the_trainer(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    block = next(c for c in python_blocks() if "GRPOTrainer" in c)
    code = fake_backend(block).replace('"Qwen/Qwen3-8B"', repr(str(tiny_model_dir)))
    code = code.replace("GRPOConfig(", "GRPOConfig(use_cpu=True, bf16=False, report_to='none', ")
    scope: dict = {"__name__": "readme"}
    exec(compile(code, "README.md:trl", "exec"), scope)
    assert scope["trainer"].reward_funcs[0] is scope["reward"]


@pytest.mark.parametrize("line", cerm_lines())
def test_cerm_command_lines_parse_against_the_cli(line):
    """Each `cerm ...` line names real (sub)commands and options with valid values (parsed, never run)."""
    args = shlex.split(line, comments=True)[1:]
    command = typer.main.get_command(app)
    try:
        ctx = command.make_context("cerm", args, resilient_parsing=False)
    except Exception as e:  # noqa: BLE001 - typer's vendored click raises its own Exit/UsageError types; an eager flag (--version) exits while parsing: fine if it exits 0
        assert getattr(e, "exit_code", None) == 0, e
        return
    depth = 0
    while hasattr(command, "resolve_command"):  # a group (typer's click may be its own copy, not click.Group)
        rest = [*getattr(ctx, "protected_args", getattr(ctx, "_protected_args", [])), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)
        depth += 1
    assert depth >= 1  # reached a command, not only the root group
