"""`cerm criteria`: generate, list, show, export, import, edit and delete cached criteria."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.markup import escape

from cerm.cache import CriteriaCache, CriteriaRecord, Store
from cerm.cli.common import (
    JudgeOptions,
    console,
    default_cache_path,
    fail,
    stdout,
    with_judge_options,
    write_jsonl_line,
)
from cerm.cli.judging import criteria_record
from cerm.cli.tables import narrow_table
from cerm.io import read_jsonl
from cerm.parsing import parse_criteria

app = typer.Typer(
    rich_markup_mode=None,  # plain click help: wraps at 80 columns, never truncates (rich's table cut names)
    help="Inspect and edit the criteria cache (one SQLite file, JSONL in and out).",
    no_args_is_help=True,
)

CachePathOpt = Annotated[Path | None, typer.Option(help="SQLite cache file (default: ~/.cache/cerm/cache.sqlite)")]


def _cache(path: Path | None) -> CriteriaCache:
    return CriteriaCache(Store(path or default_cache_path()))


def _find(cache: CriteriaCache, key: str) -> CriteriaRecord:
    try:
        return cache.find(key)
    except KeyError as e:
        raise fail(str(e.args[0])) from None


@app.command()
@with_judge_options
def generate(
    judge_opts: JudgeOptions,
    query: Annotated[str | None, typer.Option(help="one query")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="JSONL with a 'query' field")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL of generated criteria")] = None,
) -> None:
    """Generate (or fetch from the cache) the criteria for queries, once each."""
    from pydantic import BaseModel

    from cerm.types import Message

    class QueryRow(BaseModel):
        query: str | list[Message]

    if query is None and input is None:
        raise fail("give --query or --input FILE.jsonl.")
    queries: list = [query] if query is not None else []
    if input is not None:
        for line in read_jsonl(input, QueryRow):
            if line.error:
                raise fail(str(line.error))
            queries.append(line.record.query)  # type: ignore[union-attr]
    judge = judge_opts.make_judge()
    out_f = open(output, "w", encoding="utf-8") if output else None  # noqa: SIM115
    try:
        for q in queries:
            c = judge.criteria(q)
            if out_f:
                write_jsonl_line(out_f, {"query": q, **criteria_record(c)})
            stdout.print(f"[bold]{c.key[:12]}[/] ({c.source}, {len(c.items)} items)")
            for k, item in enumerate(c.items, 1):
                stdout.print(f"  {k}. [cyan]{escape(item.term)}[/]: {escape(item.description)}")
            if c.parse_warning:
                console.print(f"  [yellow]{escape(c.parse_warning)}[/]")
    finally:
        if out_f:
            out_f.close()


@app.command("list")
def list_(cache: CachePathOpt = None) -> None:
    """List cached criteria: key, model, items, edited flag, query."""
    table = narrow_table("key", "model", "items", "edited", "query", keep=("key", "model", "items", "edited"),
                         left=("model", "query"))
    table.columns[-1].no_wrap = True  # one line per entry: the query is cut at the table's edge (with …)
    for r in _cache(cache).records():
        table.add_row(r.key[:12], escape(r.model[:30]), str(len(parse_criteria(r.text).items)),
                      "yes" if r.is_edited else "", escape(" ".join(r.query[:400].split())))
    stdout.print(table)


@app.command()
def show(key: Annotated[str, typer.Argument(help="key or unique key prefix")], cache: CachePathOpt = None) -> None:
    """Print one entry's full criteria text."""
    r = _find(_cache(cache), key)
    stdout.print(f"[bold]{r.key}[/]  model={escape(r.model)}  prompt={r.prompt_version}  edited={r.is_edited}")
    stdout.print(f"[dim]query:[/] {escape(r.query)}")
    print(r.text)


@app.command("export")
def export(path: Path, cache: CachePathOpt = None) -> None:
    """Write every entry as JSONL (edit it, then `cerm criteria import`)."""
    console.print(f"exported {_cache(cache).export_jsonl(path)} entries to {path}")


@app.command("import")
def import_(path: Path, cache: CachePathOpt = None) -> None:
    """Load entries from JSONL; changed texts are marked edited and used from then on."""
    try:
        n = _cache(cache).import_jsonl(path)
    except (ValueError, OSError) as e:
        raise fail(str(e)) from None
    console.print(f"imported {n} entries from {path}")


@app.command()
def edit(
    key: Annotated[str, typer.Argument(help="key or unique key prefix")],
    text_file: Annotated[Path | None, typer.Option(help="new criteria text from a file (else opens $EDITOR)")] = None,
    cache: CachePathOpt = None,
) -> None:
    """Replace one entry's criteria text; every later judgment of that query uses the new text."""
    c = _cache(cache)
    r = _find(c, key)
    text = text_file.read_text(encoding="utf-8") if text_file else click.edit(r.text)
    if text is None or text == r.text:
        console.print("unchanged")
        return
    parsed = parse_criteria(text)
    if parsed.warning:
        console.print(f"[yellow]warning: {parsed.warning}[/]")
    c.put(r.model_copy(update={"text": text, "is_edited": True}))
    console.print(f"updated {r.key[:12]} ({len(parsed.items)} items)")


@app.command()
def delete(key: Annotated[str, typer.Argument(help="key or unique key prefix")], cache: CachePathOpt = None) -> None:
    """Remove one entry (it is regenerated on next use)."""
    c = _cache(cache)
    r = _find(c, key)
    c.delete(r.key)
    console.print(f"deleted {r.key[:12]}")
