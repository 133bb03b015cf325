"""The wheel as a user gets it: built from this tree, installed with no extras into a fresh venv.

Catches an import the core dependencies do not declare (typer 0.29 stopped bringing click, which
``cerm criteria`` imports: every command then failed with ``No module named 'click'``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT


def run(*cmd: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_plain_wheel_runs_every_core_command(tmp_path: Path) -> None:
    src = tmp_path / "src-tree"  # a copy, so the build leaves no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # no build isolation: this venv's setuptools builds it, so the test needs no index for the build itself
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src)
    wheel = next((tmp_path / "dist").glob("cerm-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)  # the core dependencies, nothing else
    cerm = venv / "bin" / "cerm"
    assert "Usage: cerm" in run(cerm, "--help").stdout
    assert run(cerm, "--version").stdout.strip().startswith("cerm 0.")
    assert "fake" in run(cerm, "backends").stdout
    out = run(cerm, "score", "--backend", "fake", "--model", "m", "--cache", tmp_path / "c.sqlite",
              "--query", "What is 2+2?", "--response", "4", "--response", "5", "-o", "-", cwd=tmp_path).stdout
    record = json.loads(out)
    assert [j["status"] for j in record["judgments"]] == ["ok", "ok"]
    # a command of each kind that has no extra: the criteria cache, the recipes
    assert "key" in run(cerm, "criteria", "list", "--cache", tmp_path / "c.sqlite", cwd=tmp_path).stdout
    assert "ce-rm-4b-sft.yaml" in run(cerm, "recipes").stdout


def test_every_third_party_import_is_declared():
    """Each package src/ imports is a core dependency or in an extra (a new import cannot ride on another's)."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[\s<>=!;\[]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in [*project["dependencies"], *(x for extra in project["optional-dependencies"].values()
                                                       for x in extra)]}
    dists = {m: {d.lower().replace("_", "-") for d in ds} for m, ds in packages_distributions().items()}
    dists.update(vllm={"vllm"}, llama_cpp={"llama-cpp-python"})  # not installed in this venv
    found: dict[str, str] = {}
    for path in (ROOT / "src" / "cerm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"cerm"}:
                found.setdefault(top, str(path.relative_to(ROOT)))
    undeclared = {m: where for m, where in found.items() if not dists.get(m, {m}) & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
