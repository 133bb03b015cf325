"""``cerm bench suite``: the paper's table for one judge, one ``cerm bench run`` folder per benchmark.

Layout of the suite root::

    ROOT/suite.json      the judge, the selection, the plan, and one row per benchmark (rewritten as it goes)
    ROOT/suite.md        the rows as a table, with the paper's values beside ours
    ROOT/ledger.jsonl    one line per finished chunk: session, benchmark, wall seconds and tokens so far
    ROOT/<benchmark>/    a `cerm bench run` folder (items.jsonl, summary.json, report.md, cache.sqlite)

A rerun of the same command resumes: each folder skips the items it holds (the runner's rule), a finished
benchmark (its summary lists exactly the selected items) is read, not run, and a rerun with another judge
is refused before any model loads. Wall time per benchmark is the sum over sessions of each session's last
ledger line, so a killed session counts up to its last finished chunk.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cerm.bench.common import BenchItem
from cerm.bench.cost import Calls, bound_tokens, count_calls
from cerm.bench.paper import PAPER, comparability
from cerm.bench.records import has_backend_error, read_records
from cerm.humanize import count, duration
from cerm.judge import JudgeConfig

SUITE_VERSION = 1
SUITE_FILE = "suite.json"
LEDGER_FILE = "ledger.jsonl"
REPORT_FILE = "suite.md"


class SuiteError(ValueError):
    """The suite root cannot be used as asked (another judge's results, an unreadable file)."""


@dataclass(frozen=True)
class BenchPlan:
    """What is left to do for one benchmark."""

    name: str
    title: str
    out_dir: Path
    items: list[BenchItem]  # selected, in benchmark order
    n_available: int  # items the data holds before --limit
    n_done: int  # selected items already in items.jsonl (not backend errors)
    pending: list[BenchItem]
    calls: Calls  # generations for the pending items, cold cache
    tokens_bound: int
    is_finished: bool  # summary.json covers exactly the selection: nothing to judge, nothing to summarise


def plan_benchmark(name: str, title: str, out_dir: Path, items: list[BenchItem], n_available: int,
                   config: JudgeConfig, chunk_size: int) -> tuple[BenchPlan, list[dict[str, Any]]]:
    """The plan, and the finished records of the selection (to measure lengths from)."""
    path = out_dir / "items.jsonl"
    records = read_records(path) if path.exists() else {}
    done = {k for k, rec in records.items() if not has_backend_error(rec)}
    pending = [it for it in items if it.id not in done]
    calls = count_calls(pending, config, chunk_size)
    summary = read_json(out_dir / "summary.json") if (out_dir / "summary.json").exists() else {}
    finished = not pending and summary.get("item_ids") == [it.id for it in items]
    finished_records = [records[it.id] for it in items if it.id in done]
    return BenchPlan(name, title, out_dir, items, n_available, len(items) - len(pending), pending, calls,
                     bound_tokens(calls, config), finished), finished_records


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or an empty dict when the file is missing."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SuiteError(f"{path}: cannot read it ({e}); move the file away to start over.") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected a JSON object.")
    return data


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write through a temporary file: a kill never leaves half a JSON file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def judge_fingerprint(backend: str, model: str, config: JudgeConfig) -> dict[str, Any]:
    """What must stay the same for a rerun to resume the suite (known before any model loads)."""
    return json.loads(json.dumps({"backend": backend, "model": model, "config": asdict(config)}))


def check_judge(root: Path, fingerprint: Mapping[str, Any]) -> None:
    """Refuse to resume a suite root that holds another judge's results, naming what differs."""
    path = root / SUITE_FILE
    if not path.exists():
        return
    old = read_json(path).get("judge") or {}
    diffs = [f"{k}: {old.get(k)!r} -> {fingerprint[k]!r}" for k in ("backend", "model") if old.get(k) != fingerprint[k]]
    old_cfg, new_cfg = old.get("config") or {}, fingerprint["config"]
    diffs += [f"{k}: {old_cfg.get(k)!r} -> {new_cfg[k]!r}" for k in new_cfg if old_cfg.get(k) != new_cfg[k]]
    if diffs:
        raise SuiteError(f"{root} holds a suite of another judge ({'; '.join(diffs)}); resuming would mix "
                         "results. Rerun with the same judge flags, or pass another --out.")


# ---- the ledger: wall time and tokens per session and benchmark ---------------------------------------
def append_ledger(root: Path, session: str, benchmark: str, wall_s: float, items_done: int, tokens_out: int,
                  calls: int, *, finished: bool = False) -> None:
    """Append one benchmark session to the suite's ledger (wall time and work, summed over resumes)."""
    line = {"session": session, "benchmark": benchmark, "wall_s": round(wall_s, 3), "items_done": items_done,
            "tokens_out": tokens_out, "calls": calls, "finished": finished, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(root / LEDGER_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()


def ledger_totals(root: Path) -> dict[str, dict[str, float]]:
    """Per benchmark: wall seconds, generated tokens and model calls, summed over sessions (last line of each)."""
    path = root / LEDGER_FILE
    if not path.exists():
        return {}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        last[(line["session"], line["benchmark"])] = line
    out: dict[str, dict[str, float]] = {}
    for (_, bench), line in last.items():
        acc = out.setdefault(bench, {"wall_s": 0.0, "tokens_out": 0, "calls": 0, "sessions": 0})
        acc["wall_s"] += line["wall_s"]
        acc["tokens_out"] += line["tokens_out"]
        acc["calls"] += line["calls"]
        acc["sessions"] += 1
    return out


# ---- rows: our headline beside the paper's value ----------------------------------------------------------
def suite_row(name: str, title: str, summary: Mapping[str, Any] | None, n_available: int | None,
              ledger: Mapping[str, float] | None, status: str) -> dict[str, Any]:
    """One benchmark's line of the suite summary (``summary`` None: not run)."""
    paper = PAPER.get(name)
    row: dict[str, Any] = {"benchmark": name, "title": title, "status": status, "dir": name,
                           "paper": paper.as_dict() if paper else None, "n_available": n_available}
    led = ledger or {}
    row["wall_s"] = led.get("wall_s")
    row["tokens_generated"] = led.get("tokens_out")
    row["calls"] = led.get("calls")
    if summary is None:
        return row
    also = {k: summary["metrics"][k] for k in (paper.also if paper else ()) if k in summary.get("metrics", {})}
    row.update({
        "n_items": summary.get("n_items"), "headline": summary.get("headline"), "also": also,
        "tie_rate": summary.get("tie_rate"), "parse_failure_rate": summary.get("parse_failure_rate"),
        "tokens_out": (summary.get("cost") or {}).get("tokens_out_total"), "score_mode": summary.get("score_mode"),
        "not_comparable": comparability(paper, summary, n_available) if paper else [],
        "warnings": list(summary.get("warnings", [])), "notes": list(summary.get("notes", [])),
    })
    return row


def _pct(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{100 * x:.1f}"


def headline_cell(row: Mapping[str, Any]) -> str:
    """The headline metric and its CI as the summary table prints it."""
    h = row.get("headline") or {}
    if h.get("value") is None:
        return "–"
    ci = "" if h.get("ci_low") is None else f" [{_pct(h['ci_low'])}, {_pct(h['ci_high'])}]"
    return f"{_pct(h['value'])}{ci}"


def paper_cell(row: Mapping[str, Any]) -> str:
    """The paper's reported value as the summary table prints it."""
    p = row.get("paper") or {}
    return "–" if p.get("value") is None else f"{p['value']:.1f} [{p['tag']}]"


def write_report(root: Path, suite: Mapping[str, Any]) -> Path:
    """``suite.md``: every row with its metric key, the paper's value, source and protocol."""
    judge = suite.get("judge", {})
    lines = [f"# cerm bench suite: {judge.get('model')} (backend {judge.get('backend')})", ""]
    lines += [f"**{w}**" for w in suite.get("warnings", [])]
    lines += ["", "| benchmark | status | metric | ours [95% CI] | paper | comparable | tie rate | parse failures "
              "| items | tokens generated | wall |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in suite.get("rows", []):
        key = (r.get("headline") or {}).get("key", "–")
        comp = "yes" if r.get("headline") and not r.get("not_comparable") else "; ".join(r.get("not_comparable", [])) or "–"
        lines.append(f"| [{r['title']}]({r['dir']}/report.md) | {r['status']} | `{key}` | {headline_cell(r)} | "
                     f"{paper_cell(r)} | {comp} | {_pct(r.get('tie_rate'))}% | {_pct(r.get('parse_failure_rate'))}% | "
                     f"{r.get('n_items', '–')} of {r.get('n_available') or '–'} | {count(r.get('tokens_generated'))} | "
                     f"{duration(r.get('wall_s'))} |")
    lines += ["", "Paper values (CE-RM-4B):", ""]
    for r in suite.get("rows", []):
        p = r.get("paper") or {}
        also = "".join(f"; ours also `{k}` {_pct(v.get('value'))}" for k, v in (r.get("also") or {}).items())
        lines.append(f"- {r['title']}: {paper_cell(r)}, `{p.get('metric')}`, {p.get('protocol')}; source: "
                     f"{p.get('source')}{also}")
    for m in (suite.get("missing") or {}).values():
        lines += ["", f"**{m['title']} not run: {m['problem']}** Fix:", "", "```bash", *m["fix"], "```"]
    path = root / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows_for(root: Path, plans: Iterable[BenchPlan], missing: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows for every planned benchmark (from its summary.json when there is one) and every missing one."""
    ledger = ledger_totals(root)
    rows = []
    for p in plans:
        path = p.out_dir / "summary.json"
        summary = read_json(path) if path.exists() else None
        done = summary is not None and summary.get("item_ids") == [it.id for it in p.items]
        status = "done" if done else ("partial" if summary is not None or p.n_done else "to do")
        rows.append(suite_row(p.name, p.title, summary if done else None, p.n_available, ledger.get(p.name), status))
    for m in missing:
        rows.append(suite_row(m.benchmark, m.title, None, None, ledger.get(m.benchmark), "missing data"))
    return rows
