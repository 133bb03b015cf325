"""`cerm score`, `cerm bon` and `cerm demo`: judge responses from flags or JSONL."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from cerm.backends.embedded import embedded_warning
from cerm.cli.common import JudgeOptions, console, fail, stdout, with_judge_options, write_jsonl_line
from cerm.io import (
    DataError,
    ScoreRow,
    check_text,
    criteria_record,
    judgment_record,
    locked_append,
    read_jsonl_output,
    read_score_rows,
)
from cerm.judge import Judge
from cerm.prompts import PROMPT_VERSION
from cerm.types import BestOfNResult, ParseStatus, ScoredItem, TiePolicy

InputOpt = Annotated[Path | None, typer.Option("--input", "-i", help="JSONL of {id?, query, responses}")]
OutputOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="JSONL written and flushed per item; '-' = stdout")]
SkipBadOpt = Annotated[bool, typer.Option(help="skip malformed lines (reported) instead of stopping")]
BatchOpt = Annotated[int, typer.Option(help="items per backend batch")]


def _load_rows(input_path: Path | None, query: str | None, responses: list[str] | None, skip_bad: bool
               ) -> list[ScoreRow]:
    if input_path is None:
        if not query or not responses:
            raise fail("give --input FILE.jsonl, or --query and at least one --response.")
        try:
            return [ScoreRow(id=0, query=check_text(query), responses=[check_text(r) for r in responses])]
        except (ValueError, ValidationError) as e:
            raise fail(f"--query/--response: {e}") from None
    if not input_path.is_file():
        raise fail(f"{input_path}: no such file.")
    try:
        rows, bad = read_score_rows(input_path)
    except (DataError, OSError) as e:
        raise fail(str(e)) from None
    if bad and not skip_bad:
        for problem in bad[:20]:
            console.print(f"[red]{escape(str(problem))}[/]")
        raise fail(f"{len(bad)} malformed line(s) in {input_path}; fix them or pass --skip-bad.")
    if bad:
        console.print(f"[yellow]skipped {len(bad)} malformed line(s):[/]")
        for problem in bad[:20]:
            console.print(f"  [yellow]{escape(str(problem))}[/]")
    if not rows:
        raise fail(f"{input_path}: no items to judge" + (" (every line was skipped)." if bad else
                                                         " (the file is empty)."))
    return rows


def run_settings(judge: Judge) -> dict[str, Any]:
    """What made an output: model, prompt version and every judge setting. A resume must match it."""
    return {"model": judge.backend.model_id, "prompt_version": PROMPT_VERSION, **dataclasses.asdict(judge.config)}


def _done_ids(output: Path, rows: list[ScoreRow], out_f: Any, settings: dict[str, Any]) -> set[str]:
    """Ids already written by an earlier, interrupted run (resume); refuses an output of another input,
    or one made with other settings (model, prompt version, judge settings).

    A record holding a backend error is not a result: it is dropped from the file and judged again.
    """
    try:
        written = read_jsonl_output(output)
    except DataError as e:
        raise fail(str(e)) from None
    identity = {str(r.id): r.input_sha256() for r in rows}
    done, keep = set(), []
    for lineno, rec in written:
        key = str(rec.get("id"))
        theirs = rec.get("settings") or {"model": rec.get("model")}
        diff = {k: (theirs.get(k), v) for k, v in settings.items() if k in theirs and theirs[k] != v}
        if diff or "settings" not in rec:
            what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items()) or "no settings recorded"
            raise fail(f"{output}:{lineno}: written with other settings ({what}); refusing to resume into it. "
                       "Use another -o, or the same flags as that run.")
        if key in identity and rec.get("input_sha256") not in (None, identity[key]):
            raise fail(f"{output}:{lineno}: id {rec.get('id')!r} was judged from another input (its query or "
                       "responses differ); use a new --output, or delete it to start over.")
        if key in done:
            raise fail(f"{output}:{lineno}: id {rec.get('id')!r} appears twice; the file was written twice "
                       "or edited. Use a new --output.")
        if any(j.get("status") == ParseStatus.BACKEND_ERROR.value for j in rec.get("judgments", [])):
            continue
        done.add(key)
        keep.append(rec)
    if written and not {str(rec.get("id")) for _, rec in written} & identity.keys():
        raise fail(f"{output} holds {len(written)} record(s) of another input (no id of this input); use a new "
                   "--output.")
    if len(keep) < len(written):
        console.print(f"retrying {len(written) - len(keep)} item(s) of {output} that ended in backend errors")
        out_f.seek(0)
        out_f.truncate()
        for rec in keep:
            write_jsonl_line(out_f, rec)
    return done


STDOUT = Path("-")


def _run(rows: list[ScoreRow], judge: Judge, output: Path | None, batch_size: int, make_record: Any) -> list[dict]:
    records = []
    with contextlib.ExitStack() as stack:
        if output == STDOUT:  # JSON lines on stdout: nothing to resume from
            out_f: Any = sys.stdout
            done: set[str] = set()
        else:
            try:
                out_f = stack.enter_context(locked_append(output)) if output else None
            except DataError as e:
                raise fail(str(e)) from None
            done = _done_ids(output, rows, out_f, run_settings(judge)) if output else set()
        todo = [r for r in rows if str(r.id) not in done]
        if done:
            console.print(f"resuming: {len(rows) - len(todo)} item(s) already in {output}")
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
    return records


def _base_record(row: ScoreRow, item: ScoredItem, judge: Judge) -> dict[str, Any]:
    record: dict[str, Any] = {"id": row.id, "input_sha256": row.input_sha256(), "query": row.query,
                              "responses": list(row.responses),
                              "model": judge.backend.model_id,
                              "prompt_version": PROMPT_VERSION,
                              "settings": run_settings(judge), "criteria": criteria_record(item.criteria[0]),
                              "judgments": [judgment_record(j) for j in item.judgments]}
    if warning := embedded_warning(judge.backend.model_id):
        record["warning"] = warning
    return record


def _print_summary(judge: Judge, records: list[dict[str, Any]]) -> None:
    s = judge.stats
    console.print(
        f"criteria generated {s.criteria_generated} (cache hits {s.criteria_cache_hits}), evaluations "
        f"{s.evaluations_generated} (cache hits {s.judgment_cache_hits}): {s.outcome()}")
    flagged = sum(bool(j["injection_flags"]) for r in records for j in r["judgments"])
    if flagged:
        console.print(f"[yellow]{flagged} response(s) carry injection flags (see injection_flags in the output)[/]")
    if warning := embedded_warning(judge.backend.model_id):
        console.print(f"[bold yellow]{warning}[/]")
    failed = sum(j["status"] == ParseStatus.BACKEND_ERROR.value for r in records for j in r["judgments"])
    if failed:
        # a backend error is not a result: nothing of it was cached, so a rerun retries exactly these
        raise fail(f"{failed} judgment(s) failed with backend errors (not cached); the run is incomplete. "
                   "Fix the backend and rerun the same command: they are judged again.", code=1)


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
    table = Table("id", "response", "score", "expected", "status")
    for rec, row in zip(records, [r for r in rows if r.id in {x["id"] for x in records}]):
        for k, (j, resp) in enumerate(zip(rec["judgments"], row.responses)):
            table.add_row(str(rec["id"]) if k == 0 else "", escape(_short(resp)), _fmt(j["score"]),
                          _fmt(j.get("expected_score"), 2), j["status"])
    _results(output).print(table)
    _print_summary(judge, records)


@with_judge_options
def bon(
    judge_opts: JudgeOptions,
    input: InputOpt = None,
    output: OutputOpt = None,
    tie_policy: Annotated[str, typer.Option(help="none | first | random | mean | expected")] = "none",
    skip_bad: SkipBadOpt = False,
    batch_size: BatchOpt = 16,
) -> None:
    """Best-of-N: pick the best response per query (JSONL of {query, responses})."""
    if input is None:
        raise fail("give --input FILE.jsonl with one {query, responses} object per line.")
    if tie_policy not in ("none", "first", "random", "mean", "expected"):
        raise fail(f"--tie-policy {tie_policy!r} must be none, first, random, mean or expected.")
    if tie_policy == "expected" and judge_opts.score != "expected":
        raise fail("--tie-policy expected needs --score expected (the readout at the box).")
    rows = _load_rows(input, None, None, skip_bad)
    judge = judge_opts.make_judge()

    def record(row: ScoreRow, item: ScoredItem) -> dict[str, Any]:
        # the chunk is already scored: pick from it, never judge (or count) the responses twice
        result = judge.pick_best(row.query, row.responses, item, tie_policy=tie_policy,  # type: ignore[arg-type]
                                 score_mode=judge_opts.score)  # type: ignore[arg-type]
        rec = _base_record(row, item, judge)
        rec.update(chosen_index=result.index, tied=list(result.tied), tie_policy=tie_policy)
        return rec

    records = _run(rows, judge, output, batch_size, record)
    for rec in records:
        tied = f" tied {rec['tied']}" if len(rec["tied"]) > 1 else ""  # one index is no tie
        _results(output).print(f"{escape(str(rec['id']))}: chosen {rec['chosen_index']} scores "
                               f"{[j['score'] for j in rec['judgments']]}{tied}", highlight=False)
    _print_summary(judge, records)


def _results(output: Path | None) -> Any:
    """Where a command's human-readable results go: stdout, unless stdout already carries the JSONL."""
    return console if output == STDOUT else stdout


def print_bon(query: str, responses: list[str], result: BestOfNResult, tie_policy: TiePolicy) -> None:
    """Human-readable Best-of-N result on stdout: criteria, a score table, the chosen answer."""
    stdout.rule(f"[bold]{escape(_short(query, 100))}")
    stdout.print("[bold]Criteria[/] (generated once from the query alone):")
    if result.criteria.items:
        for k, c in enumerate(result.criteria.items, 1):
            stdout.print(f"  {k}. [cyan]{escape(c.term)}[/]: {escape(c.description)}")
    else:
        stdout.print(f"  [yellow](no parsable list: {escape(str(result.criteria.parse_warning))})[/] raw: "
                  f"{escape(_short(result.criteria.text, 300))}")
    expected = any(j.expected_score is not None for j in result.judgments)
    table = Table("#", "response", "score", *(("expected", "entropy") if expected else ()), "status")
    for k, (resp, j) in enumerate(zip(responses, result.judgments)):
        mark = " <- chosen" if k == result.index else ""
        extra = (_fmt(j.expected_score, 2), _fmt(j.score_entropy, 2)) if expected else ()
        table.add_row(str(k), escape(_short(resp)), _fmt(j.score) + mark, *extra, j.status.value)
    stdout.print(table)
    if any(j.status is ParseStatus.COMPLETED for j in result.judgments):
        stdout.print("[yellow]completed = the evaluation ended without a readable score; our closing text was "
                  "appended and the score read there [R] (counted apart from ok)[/]")
    if result.index is None:
        why = f"tied {list(result.tied)}" if len(result.tied) > 1 else "no valid score"
        stdout.print(f"[yellow]no response chosen (tie policy {tie_policy!r}; {why}; "
                  "failed scores are never ranked)[/]")
    else:
        stdout.print(f"[bold green]Chosen answer #{result.index}:[/]\n{escape(_short(responses[result.index], 800))}")


def _short(text: str | Any, n: int = 60) -> str:
    text = text if isinstance(text, str) else json.dumps(text)
    text = " ".join(text[: 4 * n + 64].split())  # a head only: a 50 MB response is never split whole
    return text if len(text) <= n else text[: n - 1] + "…"


def _fmt(score: float | None, digits: int | None = None) -> str:
    if score is None:
        return "—"
    return f"{score:.{digits}f}" if digits is not None else f"{score:g}"


__all__ = ["bon", "criteria_record", "judgment_record", "print_bon", "score"]
