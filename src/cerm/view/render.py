"""Write the static site: ``index.html`` (summary rendered by Jinja2), ``assets/`` (our JS/CSS),
``data/index.js`` (the item list) and ``data/a/items-NNNNN.js`` chunks loaded on demand.

Data files are JavaScript (``CERM.chunk(...)`` calls), not JSON, so the site also works opened from
disk (``file://`` pages may not ``fetch``) — no server, no CDN, no build step.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from cerm.view.loaders import RunView
from cerm.view.model import compare_rows, index_row

CHUNK_SIZE = 100  # items per data file: an item page loads one file (~1 MB for RMB-sized texts)
ASSETS = ("view.js", "view.css")


@dataclass(frozen=True)
class SiteStats:
    """What ``build_site`` wrote: where, how many items and chunks, bytes and seconds."""

    out_dir: Path
    n_items: int
    n_chunks: int
    bytes_index: int
    bytes_total: int
    seconds: float


def _js(value: Any) -> str:
    """JSON that is safe inside a <script> file or tag (no ``</script>`` breakout, no U+2028 issues)."""
    s = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return s.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _pct(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{100 * x:.1f}"


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "–" if not isinstance(x, (int, float)) else fmt.format(x)


def _ci(m: Any, scale: float = 100.0, signed: bool = False) -> str:
    if not isinstance(m, dict) or not isinstance(m.get("ci_low"), (int, float)) or not isinstance(
            m.get("ci_high"), (int, float)):
        return "–"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"[{f.format(scale * m['ci_low'])}, {f.format(scale * m['ci_high'])}]"


def environment() -> jinja2.Environment:
    """The Jinja environment of the site's templates: autoescaped, with the pct/num/ci/js filters."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("cerm.view", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, ci=_ci, js=_js)
    return env


def _write_chunks(items: list[dict[str, Any]], folder: Path, run: str, size: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for start in range(0, len(items), size):
        k = start // size
        (folder / f"items-{k:05d}.js").write_text(
            f"CERM.chunk({_js(run)},{k},{_js(items[start:start + size])});\n", encoding="utf-8")
        n += 1
    return n


def build_site(run: RunView, out_dir: Path, *, compare: RunView | None = None, chunk_size: int = CHUNK_SIZE
               ) -> SiteStats:
    """Write the site for ``run`` (and, with ``compare``, the items whose verdict changed in it)."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "plots"):
        shutil.rmtree(out / sub, ignore_errors=True)  # a rebuild never mixes in stale chunks
    (out / "assets").mkdir(exist_ok=True)
    static = resources.files("cerm.view") / "static"
    for name in ASSETS:
        (out / "assets" / name).write_text(static.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
    plots = []
    if run.plots:
        (out / "plots").mkdir()
        for p in run.plots:
            shutil.copyfile(p, out / "plots" / p.name)
            plots.append(f"plots/{p.name}")
    n_chunks = _write_chunks(run.items, out / "data" / "a", "a", chunk_size)
    comparison = None
    if compare is not None:
        rows, tally = compare_rows(run.items, compare.items)
        n_chunks += _write_chunks(compare.items, out / "data" / "b", "b", chunk_size)
        ids_a = {it["id"] for it in run.items}
        positions_b = {it["id"]: n for n, it in enumerate(compare.items) if it["id"] in ids_a}
        comparison = {"title": compare.title, "source": str(compare.source), "rows": rows,
                      "positions_b": positions_b, **tally}
    counts = run.counts
    meta = {"kind": run.kind, "title": run.title, "source": str(run.source), "chunk_size": chunk_size,
            "n_items": len(run.items), "subsets": counts["subsets"], "verdicts": list(counts["verdicts"]),
            "statuses": list(counts["statuses"]), "flags": list(counts["flags"])}
    index = [index_row(it, n) for n, it in enumerate(run.items)]
    index_js = f"CERM.init({_js(meta)},{_js(index)},{_js(comparison)});\n"
    (out / "data" / "index.js").write_text(index_js, encoding="utf-8")
    html = environment().get_template("index.html.j2").render(
        run=run, summary=run.summary, counts=counts, plots=plots, comparison=comparison,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"))
    (out / "index.html").write_text(html, encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return SiteStats(out, len(run.items), n_chunks, len(index_js.encode("utf-8")), total,
                     time.perf_counter() - started)
