"""`cerm score`, `cerm bon` and `cerm demo`: judge responses from flags or JSONL."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cerm.backends.embedded import embedded_warning
from cerm.cli.common import JudgeOptions, console, fail, with_judge_options, write_jsonl_line
from cerm.io import ScoreRow, read_jsonl
from cerm.judge import Judge
from cerm.prompts import PROMPT_VERSION
from cerm.types import BestOfNResult, Criteria, Judgment, ScoredItem, TiePolicy

InputOpt = Annotated[Path | None, typer.Option("--input", "-i", help="JSONL of {id?, query, responses}")]
OutputOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="JSONL written and flushed per item; '-' = stdout")]
SkipBadOpt = Annotated[bool, typer.Option(help="skip malformed lines (reported) instead of stopping")]
BatchOpt = Annotated[int, typer.Option(help="items per backend batch")]


def judgment_record(j: Judgment, *, with_text: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {
        "score": j.score, "status": j.status.value, "criterion_scores": list(j.criterion_scores),
        "other_points_score": j.other_points_score, "score_std": j.score_std, "tokens_in": j.tokens_in,
        "tokens_out": j.tokens_out, "seconds": round(j.seconds, 4), "attempts": j.attempts, "error": j.error,
        "is_response_truncated": j.is_response_truncated, "criteria_key": j.criteria_key,
    }
    if with_text:
        record["evaluation"] = j.text
    return record


def criteria_record(c: Criteria) -> dict[str, Any]:
    return {"key": c.key, "source": c.source, "text": c.text, "parse_warning": c.parse_warning,
            "items": [{"term": i.term, "description": i.description} for i in c.items]}


def _load_rows(input_path: Path | None, query: str | None, responses: list[str] | None, skip_bad: bool
               ) -> list[ScoreRow]:
    if input_path is None:
        if not query or not responses:
            raise fail("give --input FILE.jsonl, or --query and at least one --response.")
        return [ScoreRow(id=0, query=query, responses=responses)]
    if not input_path.is_file():
        raise fail(f"{input_path}: no such file.")
    rows, bad = [], []
    for line in read_jsonl(input_path, ScoreRow):
        if line.error is not None:
            bad.append(line.error)
        else:
            assert line.record is not None
            rows.append(line.record if line.record.id is not None
                        else line.record.model_copy(update={"id": line.lineno}))
    if bad and not skip_bad:
        for e in bad[:20]:
            console.print(f"[red]{escape(str(e))}[/]")
        raise fail(f"{len(bad)} malformed line(s) in {input_path}; fix them or pass --skip-bad.")
    if bad:
        console.print(f"[yellow]skipped {len(bad)} malformed line(s):[/]")
        for e in bad[:20]:
            console.print(f"  [yellow]{escape(str(e))}[/]")
    return rows


def run_settings(judge: Judge) -> dict[str, Any]:
    """What made an output: model, prompt version and every judge setting. A resume must match it."""
    return {"model": judge.backend.model_id, "prompt_version": PROMPT_VERSION, **dataclasses.asdict(judge.config)}


def _done_ids(output: Path | None, settings: dict[str, Any]) -> set[str]:
    """Ids already written by an earlier, interrupted run (resume); that run must have used ``settings``."""
    if output is None or output == STDOUT or not output.exists():
        return set()
    done = set()
    for lineno, line in enumerate(output.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            done.add(str(row["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by the interruption; it is recomputed
        theirs = row.get("settings") or {"model": row.get("model")}
        diff = {k: (theirs.get(k), v) for k, v in settings.items() if k in theirs and theirs[k] != v}
        if diff or "settings" not in row:
            what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items()) or "no settings recorded"
            raise fail(f"{output}:{lineno}: written with other settings ({what}); refusing to resume into it. "
                       "Use another -o, or the same flags as that run.")
    return done


STDOUT = Path("-")


def _run(rows: list[ScoreRow], judge: Judge, output: Path | None, batch_size: int, make_record: Any) -> list[dict]:
    done = _done_ids(output, run_settings(judge))
    todo = [r for r in rows if str(r.id) not in done]
    if done:
        console.print(f"resuming: {len(rows) - len(todo)} item(s) already in {output}")
    records = []
    to_stdout = output == STDOUT
    out_f = sys.stdout if to_stdout else open(output, "a", encoding="utf-8") if output else None  # noqa: SIM115
    try:
        with console.status("judging...") as status:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                status.update(f"judging items {start + 1}-{start + len(chunk)} of {len(todo)}")
                results = judge.score_batch([(r.query, r.responses) for r in chunk])
                for row, item in zip(chunk, results):
                    record = make_record(row, item)
                    records.append(record)
                    if out_f:
                        write_jsonl_line(out_f, record)
    finally:
        if out_f and not to_stdout:
            out_f.close()
    return records


def _base_record(row: ScoreRow, item: ScoredItem, judge: Judge) -> dict[str, Any]:
    record: dict[str, Any] = {"id": row.id, "query": row.query, "responses": list(row.responses),
                              "model": judge.backend.model_id, "prompt_version": PROMPT_VERSION,
                              "settings": run_settings(judge), "criteria": criteria_record(item.criteria[0]),
                              "judgments": [judgment_record(j) for j in item.judgments]}
    if warning := embedded_warning(judge.backend.model_id):
        record["warning"] = warning
    return record


def _print_summary(judge: Judge) -> None:
    s = judge.stats
    console.print(
        f"criteria generated {s.criteria_generated} (cache hits {s.criteria_cache_hits}), evaluations "
        f"{s.evaluations_generated} (cache hits {s.judgment_cache_hits}), parse failures "
        f"{s.parse_failure_rate:.1%} {dict(s.statuses)}")
    if warning := embedded_warning(judge.backend.model_id):
        console.print(f"[bold yellow]{warning}[/]")


@with_judge_options
def score(
    judge_opts: JudgeOptions,
    input: InputOpt = None,
    output: OutputOpt = None,
    query: Annotated[str | None, typer.Option(help="query text (instead of --input)")] = None,
    response: Annotated[list[str] | None, typer.Option(help="a response; repeat for several")] = None,
    skip_bad: SkipBadOpt = False,
    batch_size: BatchOpt = 16,
) -> None:
    """Score responses: one criteria generation per query, one evaluation per response."""
    rows = _load_rows(input, query, response, skip_bad)
    judge = judge_opts.make_judge()
    records = _run(rows, judge, output, batch_size, lambda row, item: _base_record(row, item, judge))
    table = Table("id", "response", "score", "status")
    for rec, row in zip(records, [r for r in rows if r.id in {x["id"] for x in records}]):
        for k, (j, resp) in enumerate(zip(rec["judgments"], row.responses)):
            table.add_row(str(rec["id"]) if k == 0 else "", _short(resp), _fmt(j["score"]), j["status"])
    console.print(table)
    _print_summary(judge)


@with_judge_options
def bon(
    judge_opts: JudgeOptions,
    input: InputOpt = None,
    output: OutputOpt = None,
    tie_policy: Annotated[str, typer.Option(help="none | first | random | mean")] = "none",
    skip_bad: SkipBadOpt = False,
    batch_size: BatchOpt = 16,
) -> None:
    """Best-of-N: pick the best response per query (JSONL of {query, responses})."""
    if input is None:
        raise fail("give --input FILE.jsonl with one {query, responses} object per line.")
    if tie_policy not in ("none", "first", "random", "mean"):
        raise fail(f"--tie-policy {tie_policy!r} must be none, first, random or mean.")
    rows = _load_rows(input, None, None, skip_bad)
    judge = judge_opts.make_judge()

    def record(row: ScoreRow, item: ScoredItem) -> dict[str, Any]:
        # the chunk is already scored: pick from it, never judge (or count) the responses twice
        result = judge.pick_best(row.query, row.responses, item, tie_policy=tie_policy)  # type: ignore[arg-type]
        rec = _base_record(row, item, judge)
        rec.update(chosen_index=result.index, tied=list(result.tied), tie_policy=tie_policy)
        return rec

    for rec in _run(rows, judge, output, batch_size, record):
        tied = f" tied {rec['tied']}" if len(rec["tied"]) > 1 else ""  # one index is no tie
        console.print(f"{rec['id']}: chosen {rec['chosen_index']} scores {[j['score'] for j in rec['judgments']]}{tied}")
    _print_summary(judge)


def print_bon(query: str, responses: list[str], result: BestOfNResult, tie_policy: TiePolicy) -> None:
    """Human-readable Best-of-N result: criteria, a score table, the chosen answer."""
    console.rule(f"[bold]{_short(query, 100)}")
    console.print("[bold]Criteria[/] (generated once from the query alone):")
    if result.criteria.items:
        for k, c in enumerate(result.criteria.items, 1):
            console.print(f"  {k}. [cyan]{c.term}[/]: {c.description}")
    else:
        console.print(f"  [yellow](no parsable list: {result.criteria.parse_warning})[/] raw: "
                      f"{_short(result.criteria.text, 300)}")
    table = Table("#", "response", "score", "status")
    for k, (resp, j) in enumerate(zip(responses, result.judgments)):
        mark = " <- chosen" if k == result.index else ""
        table.add_row(str(k), _short(resp), _fmt(j.score) + mark, j.status.value)
    console.print(table)
    if result.index is None:
        why = f"tied {list(result.tied)}" if len(result.tied) > 1 else "no valid score"
        console.print(f"[yellow]no response chosen (tie policy {tie_policy!r}; {why}; "
                      "failed scores are never ranked)[/]")
    else:
        console.print(f"[bold green]Chosen answer #{result.index}:[/]\n{_short(responses[result.index], 800)}")


def _short(text: str | Any, n: int = 60) -> str:
    text = text if isinstance(text, str) else json.dumps(text)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _fmt(score: float | None) -> str:
    return "—" if score is None else f"{score:g}"


__all__ = ["bon", "criteria_record", "judgment_record", "print_bon", "score"]
