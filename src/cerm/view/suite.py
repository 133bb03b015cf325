"""``cerm view`` on a ``cerm bench suite`` root: one summary page linking each benchmark's own site.

The page reads ``ROOT/suite.json`` (written by the suite as it goes, so an unfinished suite shows what is done)
and builds the usual run site of every benchmark folder that holds items under ``SITE/<benchmark>/``, so the
whole site is one folder that opens from disk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cerm.humanize import count, duration
from cerm.view.loaders import ViewError, load_bench
from cerm.view.render import build_site, environment

SUITE_FILE = "suite.json"  # as cerm.bench.suite writes it (view reads files, never imports bench)


@dataclass(frozen=True)
class SuiteSiteStats:
    """What writing a suite summary page produced."""
    out_dir: Path
    n_benchmarks: int  # benchmark sites written
    n_items: int
    seconds: float


def is_suite_root(path: Path) -> bool:
    """Whether ``path`` is the root folder of a ``cerm bench suite`` run."""
    return Path(path).is_dir() and (Path(path) / SUITE_FILE).is_file()


def build_suite_site(root: Path, out_dir: Path) -> SuiteSiteStats:
    """Write ``out_dir/index.html`` (the suite summary) and ``out_dir/<benchmark>/`` (each run's site)."""
    started = time.perf_counter()
    root, out = Path(root), Path(out_dir)
    path = root / SUITE_FILE
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ViewError(f"{path}: invalid JSON ({e}).") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("rows"), list):
        raise ViewError(f"{path}: field 'rows': missing; not a `cerm bench suite` summary.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "assets").mkdir(exist_ok=True)
    css = (resources.files("cerm.view") / "static").joinpath("view.css").read_text(encoding="utf-8")
    (out / "assets" / "view.css").write_text(css, encoding="utf-8")
    rows, n_sites, n_items = [], 0, 0
    for row in suite["rows"]:
        folder = root / str(row.get("dir", row.get("benchmark")))
        link = None
        if (folder / "items.jsonl").is_file():
            stats = build_site(load_bench(folder), out / folder.name)
            link, n_sites, n_items = f"{folder.name}/index.html", n_sites + 1, n_items + stats.n_items
        rows.append({**row, "link": link, "wall": duration(row.get("wall_s")),
                     "tokens": count(row.get("tokens_generated")),
                     "comparable": "yes" if row.get("headline") and not row.get("not_comparable")
                     else "; ".join(row.get("not_comparable") or []) or "–"})
    html = environment().get_template("suite.html.j2").render(
        suite=suite, rows=rows, source=str(root), generated=time.strftime("%Y-%m-%d %H:%M:%S"))
    (out / "index.html").write_text(html, encoding="utf-8")
    return SuiteSiteStats(out, n_sites, n_items, time.perf_counter() - started)
