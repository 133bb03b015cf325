"""`cerm criteria`: generate, list, show, export, import, edit and delete cached criteria."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
from cerm.io import WriteError, read_jsonl
from cerm.parsing import parse_criteria
from cerm.types import Criteria

app = typer.Typer(
    rich_markup_mode=None,  # plain click help: wraps at 80 columns, never truncates (rich's table cut names)
    help="Inspect and edit the criteria cache (one SQLite file, JSONL in and out).",
    no_args_is_help=True,
)

CachePathOpt = Annotated[str | None, typer.Option(help="SQLite cache file (default: ~/.cache/cerm/cache.sqlite) "
                                                        "or redis://HOST:PORT/DB")]


def _cache(path: str | None) -> CriteriaCache:
    try:
        return CriteriaCache(Store(path or default_cache_path()))
    except (ConnectionError, ImportError, ValueError, WriteError) as e:  # an unreachable Redis, no client
        raise fail(str(e)) from None


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
    """Generate (or fetch from the cache) the criteria for queries, once each, many at a time.

    The offline form of criteria ahead of the rollouts: run it on a training prompt set before training, into
    the cache the reward uses (``--cache``), and every epoch reuses them.
    """
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
    failed = 0
    try:
        for start in range(0, len(queries), GENERATE_CHUNK):
            chunk = queries[start:start + GENERATE_CHUNK]
            # concurrently: one batch for an engine that takes batches, every request at once for a server
            for q, c in zip(chunk, judge.prefetch(chunk).result()):
                _print_generated(q, c, out_f)
                failed += c.finish_reason == "error"
    finally:
        if out_f:
            out_f.close()
    if failed:
        raise fail(f"{failed} criteria generation(s) failed (not cached); fix the backend and rerun the same "
                   "command: the others are read from the cache.", code=1)


GENERATE_CHUNK = 64  # queries in flight at once; each chunk's criteria are stored as they complete


def _print_generated(q: object, c: Criteria, out_f: Any) -> None:
    if out_f:
        write_jsonl_line(out_f, {"query": q, **criteria_record(c)})
    stdout.print(f"[bold]{c.key[:12]}[/] ({c.source}, {len(c.items)} items)")
    for k, item in enumerate(c.items, 1):
        stdout.print(f"  {k}. [cyan]{escape(item.term)}[/]: {escape(item.description)}")
    if c.parse_warning:
        console.print(f"  [yellow]{escape(c.parse_warning)}[/]")


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
