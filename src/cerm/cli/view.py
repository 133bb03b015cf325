"""``cerm view``: write (and optionally serve) a static site for reading a run's criteria and judgments."""

from __future__ import annotations

import functools
import http.server
from pathlib import Path
from typing import Annotated

import typer

from cerm.cli.common import console, fail
from cerm.cli.extras import require


def default_out(path: Path) -> Path:
    """``RUN_DIR/view`` for a run folder, ``FILE.view/`` next to a score/bon file."""
    return path / "view" if path.is_dir() else path.with_name(path.name.rsplit(".", 1)[0] + ".view")


def view(
    path: Annotated[Path, typer.Argument(help="a `cerm bench run`, `cerm bench suite` or `cerm probe` folder, or a "
                                              "`cerm score|bon -o` JSONL file")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="site folder (default: RUN/view or FILE.view)")] = None,
    compare: Annotated[Path | None, typer.Option(
        "--compare", help="a second run of the same benchmark: list the items whose verdict changed")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="serve the site on 127.0.0.1 until Ctrl-C")] = False,
    port: Annotated[int, typer.Option(help="port for --serve (0 = any free port)")] = 8765,
) -> None:
    """Write a static site (index.html + assets, no server or internet needed) to read criteria, judgments
    and scores item by item; --serve also serves it and prints the URL.
    """
    require("cerm view", "view", ["jinja2"])
    from cerm.view import ViewError, build_site, load
    from cerm.view.suite import is_suite_root

    if is_suite_root(path):
        return _view_suite(path, out, compare, serve, port)
    try:
        run = load(path)
        other = load(compare) if compare is not None else None
    except (ViewError, OSError) as e:
        raise fail(str(e)) from None
    if other is not None and (other.kind != run.kind or (run.kind == "bench" and other.summary.get("benchmark")
                                                          != run.summary.get("benchmark"))):
        raise fail(f"--compare {compare} is a {other.kind} of {other.summary.get('benchmark', '?')} but {path} is "
                   f"a {run.kind} of {run.summary.get('benchmark', '?')}; compare two runs of one benchmark.")
    site = out or default_out(path)
    try:
        stats = build_site(run, site, compare=other)
    except OSError as e:
        raise fail(f"cannot write {site}: {e}") from None
    for w in run.warnings:
        console.print(f"[bold yellow]{w}[/]")
    for n in run.notes:
        console.print(f"[yellow]{n}[/]")
    typer.echo(f"{stats.n_items} items -> {site / 'index.html'} ({stats.n_chunks} data chunks, "
               f"{stats.bytes_total / 1e6:.1f} MB, {stats.seconds:.1f} s)")
    if serve:
        _serve(site, port)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # `format`: the stdlib's parameter name
        pass


def _view_suite(path: Path, out: Path | None, compare: Path | None, serve: bool, port: int) -> None:
    """A suite root: one summary page linking every benchmark's own site."""
    from cerm.view import ViewError
    from cerm.view.suite import build_suite_site

    if compare is not None:
        raise fail(f"--compare works on two runs of one benchmark; {path} is a suite: compare its folders, "
                   f"e.g. cerm view {path / 'judgebench'} --compare OTHER_SUITE/judgebench.")
    site = out or default_out(path)
    try:
        stats = build_suite_site(path, site)
    except (ViewError, OSError) as e:
        raise fail(str(e)) from None
    typer.echo(f"suite: {stats.n_benchmarks} benchmark sites, {stats.n_items} items -> {site / 'index.html'} "
               f"({stats.seconds:.1f} s)")
    if serve:
        _serve(site, port)


def _serve(site: Path, port: int) -> None:
    """Serve the written site on 127.0.0.1 until Ctrl-C."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise fail(f"cannot listen on 127.0.0.1:{port}: {e}; pass --port 0 for any free port.") from None
    typer.echo(f"serving http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
