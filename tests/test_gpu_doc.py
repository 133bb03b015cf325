"""docs/gpu.md and scripts/reproduce_gpu.sh cannot run here (no GPU, no hub): every command in them is parsed
instead, as tests/test_readme.py does for the README, so the runbook cannot rot. `cerm` lines parse against
the CLI; `pip` lines name real requirements and extras; `python -c` code compiles and exports what the loaders
read; the data commands are the ones `cerm bench suite` prints as fixes; the expected numbers are the paper's."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import tomllib
import typer
from packaging.requirements import Requirement
from support import ROOT

from cerm.bench import BENCHMARKS
from cerm.bench.paper import PAPER, PAPER_BENCHMARKS
from cerm.bench.suite_data import GIT_SOURCES, fix_for
from cerm.cli import app

DOC = (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8")
SCRIPT = (ROOT / "scripts" / "reproduce_gpu.sh").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def commands(text: str) -> list[str]:
    """Shell commands: continuation lines joined, comments and blank lines dropped, `&&` chains split."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.extend(part.strip() for part in line.split(" && "))
    return out


DOC_COMMANDS = [c for lang, code in re.findall(r"^```(\w+)\n(.*?)^```", DOC, flags=re.S | re.M) if lang == "bash"
                for c in commands(code)]
SCRIPT_COMMANDS = commands(SCRIPT)
ALL = [("docs/gpu.md", c) for c in DOC_COMMANDS] + [("scripts/reproduce_gpu.sh", c) for c in SCRIPT_COMMANDS]
HF_SOURCES = {(s.hf_id, s.split): b for b in BENCHMARKS.values() for s in b.hf}


def test_the_runbook_says_it_was_not_run_and_has_every_step():
    assert "Not run by the project" in DOC and "NOT RUN by the project" in SCRIPT
    for doc_or_script in (DOC_COMMANDS, SCRIPT_COMMANDS):
        assert any(c.startswith("pip install vllm") for c in doc_or_script)
        assert any(c.startswith("cerm bench suite") and "--dry-run" in c for c in doc_or_script)
        assert any(c.startswith("cerm bench suite") and "--dry-run" not in c for c in doc_or_script)
        assert any(c.startswith("cerm view") for c in doc_or_script)
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "reproduce_gpu.sh")]).returncode == 0


def _check_cerm(args: list[str]) -> None:
    command = typer.main.get_command(app)
    ctx = command.make_context("cerm", args, resilient_parsing=False)
    depth = 0
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "protected_args", getattr(ctx, "_protected_args", [])), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)
        depth += 1
    assert depth >= 1


def _check_pip(args: list[str]) -> None:
    assert args[0] == "install", args
    extras = PYPROJECT["project"]["optional-dependencies"]
    for a in args[1:]:
        if a in ("--no-deps", "-e"):
            continue
        if a.startswith("."):  # the project itself, maybe with extras
            m = re.fullmatch(r"\.(?:\[([\w,]+)\])?", a)
            assert m, a
            assert all(x in extras for x in (m.group(1) or "").split(",") if x), a
            continue
        Requirement(a)  # raises on anything pip could not read


def _check_python(args: list[str]) -> None:
    if args[:2] == ["-m", "venv"]:
        return
    assert args[0] == "-c" and len(args) == 2, args
    code = args[1]
    compile(code, "runbook", "exec")
    m = re.fullmatch(r"import datasets; datasets\.load_dataset\('([^']+)', split='(\w+)'\)\.to_parquet\('([^']+)'\)",
                     code)
    assert m, code
    bench = HF_SOURCES.get((m.group(1), m.group(2)))
    assert bench is not None, f"{m.group(1)}[{m.group(2)}] is no benchmark's HF source"
    assert m.group(3).startswith(f"data/{bench.local_dir}/"), "exported where the suite looks (--data-root data)"


@pytest.mark.parametrize(("where", "command"), ALL)
def test_every_command_parses(where, command):
    if command.startswith("ROOT=") or command in ('cd "$(dirname "$0")/.."', "set -euo pipefail"):
        assert where.startswith("scripts/")
        return
    words = shlex.split(command)
    head, args = words[0], words[1:]
    if head == "cerm":
        _check_cerm(args)
    elif head == "pip":
        _check_pip(args)
    elif head in ("python", "python3"):
        _check_python(args)
    elif head == "git":
        if args[0] == "clone":
            assert args[1] in {repo for repo, _, _ in GIT_SOURCES.values()}, args
        else:
            assert args[0] == "-C" and args[2] == "checkout"
            assert args[3] in {commit for _, commit, _ in GIT_SOURCES.values()}, args
    elif head in ("mkdir", "cp"):
        assert all(a.startswith(("-", "data/")) for a in args), args
    else:
        assert head in (".", "nvidia-smi"), f"{where}: unchecked command {command!r}"


def test_the_data_steps_are_the_fixes_the_suite_prints():
    """The suite prints these same commands for missing data: one source of truth, checked both ways."""
    for name in ("judgebench", "rm-bench", "rmb", "rewardbench2", "ppe", "rewardbench"):
        for line in fix_for(BENCHMARKS[name], ROOT / "data"):
            if line.startswith(("#", "pip install datasets")):
                continue
            assert line in SCRIPT, line
            for part in line.split(" && "):
                if not part.startswith("mkdir"):  # the doc makes the hub folders in one mkdir
                    assert part in DOC, part


def test_the_core_dependencies_line_is_the_projects():
    line = next(c for c in SCRIPT_COMMANDS if c.startswith("pip install") and "pydantic" in c)
    assert line in DOC_COMMANDS
    named = {Requirement(a).name: str(Requirement(a).specifier) for a in shlex.split(line)[2:]}
    project = PYPROJECT["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["bench"] + project["optional-dependencies"][
        "view"]
    for req in map(Requirement, wanted):
        assert named.get(req.name) == str(req.specifier), req
    assert "datasets" in named and "torch" not in named  # vLLM's torch stays


def test_the_expected_numbers_are_the_papers():
    section = DOC[DOC.index("## 5. Expected numbers"):DOC.index("## 6.")]
    for name in PAPER_BENCHMARKS:
        p = PAPER[name]
        row = next(line for line in section.splitlines() if line.startswith(f"| {BENCHMARKS[name].title} |"))
        assert f"| {p.value} | `{p.metric}` |" in row, row
