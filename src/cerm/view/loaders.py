"""Read a run folder or an output file into a ``RunView`` (read-only: never trims or rewrites a file).

Kinds: a ``cerm bench run`` folder (items.jsonl, summary.json, plots/), a ``cerm probe`` folder
(probes.json, probe_items.jsonl) and a ``cerm score -o`` / ``cerm bon -o`` JSONL file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerm.io import DataError, read_output
from cerm.view.model import counts, item_from_bench, item_from_probe, item_from_score

# the fake backend's model ids read "fake:<name>"; its texts are canned, and every page must say so
SCRIPTED_WARNING = ("Scripted fake backend: the criteria, judgments and scores are canned (scores hashed from the "
                    "response text), not judgments of any model. This run tests the plumbing only.")


def run_warnings(model: object, warnings: list[str]) -> list[str]:
    """The run's own warnings, plus the scripted-backend banner when the model is the fake backend's."""
    scripted = [SCRIPTED_WARNING] if str(model).startswith("fake:") and SCRIPTED_WARNING not in warnings else []
    return [*scripted, *warnings]


class ViewError(ValueError):
    """The path is not something ``cerm view`` can read; the message names file, line and field."""


@dataclass
class RunView:
    """Everything the site is built from: one kind of run, its items (item views) and its summary."""

    kind: str  # "bench" | "probe" | "score" | "bon"
    source: Path
    title: str
    items: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json / probes.json as written
    plots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run's own warnings (e.g. embedded model)
    notes: list[str] = field(default_factory=list)  # what the viewer noticed while reading

    @property
    def counts(self) -> dict[str, Any]:
        """What the viewer counts itself: verdicts, statuses, parse failures, flags, subsets."""
        return counts(self.items)


def read_jsonl(path: Path, required: tuple[str, ...], what: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects of a JSONL output (``cerm.io.read_output``, never repairing: the viewer only reads). A last
    line cut short (a run still writing, or killed) is skipped with a note; any other bad line raises
    ``ViewError`` naming file, line and field.
    """
    try:
        read = read_output(path, required=required, what=what, repair=False)
    except DataError as e:
        raise ViewError(str(e)) from None
    notes = [f"{path}:{read.torn_line}: skipped a partial last line (run interrupted or still writing)"
             ] if read.torn_line else []
    return [rec for _, rec in read.records], notes


def _items(recs: list[dict[str, Any]], path: Path, build: Callable[[dict[str, Any]], dict[str, Any]]
           ) -> Iterator[dict[str, Any]]:
    for lineno, rec in enumerate(recs, 1):
        try:
            yield build(rec)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ViewError(f"{path}: record {lineno} (id {rec.get('id')!r}): cannot read it ({e!r}).") from None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ViewError(f"{path}: invalid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise ViewError(f"{path}: expected a JSON object.")
    return data


def load_bench(run_dir: Path) -> RunView:
    """A ``cerm bench run`` folder; a run still going (no summary.json yet) shows its items so far."""
    path = run_dir / "items.jsonl"
    recs, notes = read_jsonl(path, ("id", "subset", "mode", "correct", "candidates"), "a cerm bench record")
    summary = _json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    if not summary:
        notes.append(f"{run_dir}/summary.json is missing (run unfinished): metrics are not shown")
    by_id = {str(r["id"]): r for r in recs}
    order = [str(i) for i in summary.get("item_ids", []) if str(i) in by_id]
    listed = set(order)
    order += [i for i in by_id if i not in listed]  # items written after the summary
    items = list(_items([by_id[i] for i in order], path, item_from_bench))
    if items and not any(c["evaluation"] for it in items for c in it["candidates"]):
        notes.append("this run predates judgment texts in items.jsonl: scores only (rerun to record texts)")
    bench = summary.get("title") or (recs[0].get("benchmark") if recs else "benchmark")
    return RunView("bench", run_dir, f"{bench} — {_scorer(summary)}", items, summary,
                   sorted((run_dir / "plots").glob("*.png")), run_warnings(_model(summary), summary.get("warnings", [])),
                   notes)


def load_probe(run_dir: Path) -> RunView:
    """A ``cerm probe`` folder (probes.json, probe_items.jsonl)."""
    summary = _json(run_dir / "probes.json") if (run_dir / "probes.json").exists() else {}
    path = run_dir / "probe_items.jsonl"
    recs, notes = read_jsonl(path, ("probe", "id"), "a cerm probe record") if path.exists() else ([], [])
    items = list(_items(recs, path, item_from_probe))
    return RunView("probe", run_dir, f"bias probes on {summary.get('benchmark', '?')} — {_scorer(summary)}",
                   items, summary, [], run_warnings(_model(summary), summary.get("warnings", [])), notes)


def load_scores(path: Path) -> RunView:
    """A ``cerm score -o`` or ``cerm bon -o`` JSONL file."""
    recs, notes = read_jsonl(path, ("id", "judgments"), "a `cerm score -o` / `cerm bon -o` line")
    items = list(_items(recs, path, item_from_score))
    kind = "bon" if recs and "chosen_index" in recs[0] else "score"
    if items and all(c["response"] is None for it in items for c in it["candidates"]):
        notes.append("the file has no response texts (written before `responses` was recorded)")
    model = recs[0].get("model", "?") if recs else "?"
    warnings = run_warnings(model, sorted({r["warning"] for r in recs if r.get("warning")}))
    return RunView(kind, path, f"cerm {kind} — {model}: {path.name}", items, {}, [], warnings, notes)


def load(path: Path) -> RunView:
    """Whatever ``path`` is: a bench run folder, a probe folder or a score/bon JSONL file."""
    path = Path(path)
    if path.is_dir():
        if (path / "items.jsonl").exists():
            return load_bench(path)
        if (path / "probes.json").exists() or (path / "probe_items.jsonl").exists():
            return load_probe(path)
        raise ViewError(f"{path}: no items.jsonl (a `cerm bench run` folder) or probes.json (a `cerm probe` "
                        "folder) in it.")
    if path.is_file():
        return load_scores(path)
    raise ViewError(f"{path}: no such file or folder.")


def _scorer(summary: dict[str, Any]) -> str:
    s = summary.get("scorer") or {}
    if s.get("kind") == "judge":
        k = (s.get("config") or {}).get("samples", 1)
        return str(s.get("model")) + (f" (k={k})" if k and k > 1 else "")
    return str(s.get("name", s.get("kind", "unknown scorer")))


def _model(summary: dict[str, Any]) -> object:
    return (summary.get("scorer") or {}).get("model")
