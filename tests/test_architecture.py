"""The import rules of docs/architecture.md §2, checked with ``ast`` over src/ so they cannot rot."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cerm"
ENGINES = {"fake", "hf", "llamacpp", "openai", "vllm"}  # cerm.backends.<engine>: chosen by name, never imported
PIPELINES = {"curate", "sft", "rl"}
SEAM = {"cerm.backends", "cerm.backends.base", "cerm.backends.embedded"}  # what the other rooms may import


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The cerm modules a file imports (``from cerm.x import y`` counts as cerm.x and cerm.x.y)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == "cerm" or m.startswith("cerm.")} & (MODULES | {"cerm"})


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
FILES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    """core | backends | bench | reward | train | view | cli | cerm (the package's front door)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "cerm"
    return parts[1] if parts[1] in ("backends", "bench", "reward", "train", "view", "cli") else "core"


def violations(rule) -> list[str]:
    return sorted(f"{m} imports {dep}" for m, path in FILES.items() for dep in imports(path) if rule(m, dep))


def test_core_imports_only_core_and_the_backend_seam():
    assert violations(lambda m, dep: room(m) == "core" and room(dep) != "core" and dep not in SEAM) == []


def test_bench_reward_and_train_never_import_each_other_or_the_cli():
    rooms = {"bench", "reward", "train", "view"}
    assert violations(lambda m, dep: room(m) in rooms and room(dep) in rooms | {"cli"} and room(dep) != room(m)) == []


def test_the_three_training_pipelines_never_import_each_other():
    def pipeline(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[:2] == ["cerm", "train"] and parts[2] in PIPELINES else None

    assert violations(lambda m, dep: None is not pipeline(m) != pipeline(dep) is not None) == []


def test_no_room_but_backends_imports_a_backend_engine():
    def engine(dep: str) -> bool:
        return room(dep) == "backends" and dep not in SEAM and dep.split(".")[2] in ENGINES

    assert violations(lambda m, dep: room(m) != "backends" and engine(dep)) == []


def test_backends_never_import_the_rooms_above_them():
    assert violations(lambda m, dep: room(m) == "backends" and room(dep) in ("bench", "reward", "train", "cli")) == []


def test_nothing_outside_the_cli_imports_it():
    assert violations(lambda m, dep: room(m) != "cli" and room(dep) == "cli") == []


def test_module_level_imports_have_no_cycle():
    graph = {m: {d for d in imports(p, top_level_only=True) if d in FILES and d != m} for m, p in FILES.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(d):], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_every_package_says_its_concern_and_what_it_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{init.relative_to(SRC)}: the docstring must say what the package may import"
