"""`cerm score`, `cerm bon` and `cerm demo`: judge responses from flags or JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cerm.backends.embedded import EMBEDDED_WARNING, is_embedded, is_embedded_id
from cerm.cli.common import JudgeOptions, console, fail, with_judge_options, write_jsonl_line
from cerm.io import ScoreRow, read_jsonl
from cerm.judge import Judge
from cerm.prompts import PROMPT_VERSION
from cerm.types import BestOfNResult, Criteria, Judgment, ParseStatus, ScoredItem, TiePolicy

InputOpt = Annotated[Path | None, typer.Option("--input", "-i", help="JSONL of {id?, query, responses}")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="JSONL written and flushed per item")]
SkipBadOpt = Annotated[bool, typer.Option(help="skip malformed lines (reported) instead of stopping")]
BatchOpt = Annotated[int, typer.Option(help="items per backend batch")]


def judgment_record(j: Judgment, *, with_text: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {
        "score": j.score, "status": j.status.value, "criterion_scores": list(j.criterion_scores),
        "other_points_score": j.other_points_score, "score_std": j.score_std, "tokens_in": j.tokens_in,
        "tokens_out": j.tokens_out, "seconds": round(j.seconds, 4), "attempts": j.attempts, "error": j.error,
        "is_response_truncated": j.is_response_truncated, "criteria_key": j.criteria_key,
    }
    if j.expected_score is not None or j.score_probs:
        record.update(expected_score=j.expected_score, score_entropy=j.score_entropy, score_probs=list(j.score_probs))
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
            console.print(f"[red]{e}[/]")
        raise fail(f"{len(bad)} malformed line(s) in {input_path}; fix them or pass --skip-bad.")
    if bad:
        console.print(f"[yellow]skipped {len(bad)} malformed line(s):[/]")
        for e in bad[:20]:
            console.print(f"  [yellow]{e}[/]")
    return rows


def _done_ids(output: Path | None) -> set[str]:
    """Ids already written by an earlier, interrupted run (resume)."""
    if output is None or not output.exists():
        return set()
    done = set()
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            done.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by the interruption; it is recomputed
    return done


def _run(rows: list[ScoreRow], judge: Judge, output: Path | None, batch_size: int, make_record: Any) -> list[dict]:
    done = _done_ids(output)
    todo = [r for r in rows if str(r.id) not in done]
    if done:
        console.print(f"resuming: {len(rows) - len(todo)} item(s) already in {output}")
    records = []
    out_f = open(output, "a", encoding="utf-8") if output else None  # noqa: SIM115
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
        if out_f:
            out_f.close()
    return records


def _base_record(row: ScoreRow, item: ScoredItem, judge: Judge) -> dict[str, Any]:
    record: dict[str, Any] = {"id": row.id, "query": row.query, "responses": list(row.responses),
                              "model": judge.backend.model_id,
                              "prompt_version": PROMPT_VERSION, "criteria": criteria_record(item.criteria[0]),
                              "judgments": [judgment_record(j) for j in item.judgments]}
    if is_embedded_model(judge):
        record["warning"] = EMBEDDED_WARNING
    return record


def is_embedded_model(judge: Judge) -> bool:
    return is_embedded_id(judge.backend.model_id)


def _print_summary(judge: Judge) -> None:
    s = judge.stats
    console.print(
        f"criteria generated {s.criteria_generated} (cache hits {s.criteria_cache_hits}), evaluations "
        f"{s.evaluations_generated} (cache hits {s.judgment_cache_hits}), parse failures "
        f"{s.parse_failure_rate:.1%} {dict(s.statuses)}")
    if is_embedded_model(judge):
        console.print(f"[bold yellow]{EMBEDDED_WARNING}[/]")


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
            table.add_row(str(rec["id"]) if k == 0 else "", _short(resp), _fmt(j["score"]),
                          _fmt(j.get("expected_score"), 2), j["status"])
    console.print(table)
    _print_summary(judge)


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
        result = judge.best_of_n(row.query, row.responses, tie_policy=tie_policy,  # type: ignore[arg-type]
                                 score_mode=judge_opts.score)  # type: ignore[arg-type]
        rec = _base_record(row, item, judge)
        rec.update(chosen_index=result.index, tied=list(result.tied), tie_policy=tie_policy)
        return rec

    for rec in _run(rows, judge, output, batch_size, record):
        console.print(f"{rec['id']}: chosen {rec['chosen_index']} scores "
                      f"{[j['score'] for j in rec['judgments']]} tied {rec['tied']}")
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
    expected = any(j.expected_score is not None for j in result.judgments)
    table = Table("#", "response", "score", *(("expected", "entropy") if expected else ()), "status")
    for k, (resp, j) in enumerate(zip(responses, result.judgments)):
        mark = " <- chosen" if k == result.index else ""
        extra = (_fmt(j.expected_score, 2), _fmt(j.score_entropy, 2)) if expected else ()
        table.add_row(str(k), _short(resp), _fmt(j.score) + mark, *extra, j.status.value)
    console.print(table)
    if any(j.status is ParseStatus.COMPLETED for j in result.judgments):
        console.print("[yellow]completed = the evaluation ended without a readable score; our closing text was "
                      "appended and the score read there [R] (counted apart from ok)[/]")
    if result.index is None:
        console.print(f"[yellow]no response chosen (tie policy {tie_policy!r}; tied {list(result.tied)}; "
                      "failed scores are never ranked)[/]")
    else:
        console.print(f"[bold green]Chosen answer #{result.index}:[/]\n{_short(responses[result.index], 800)}")


def _short(text: str | Any, n: int = 60) -> str:
    text = text if isinstance(text, str) else json.dumps(text)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _fmt(score: float | None, digits: int | None = None) -> str:
    if score is None:
        return "—"
    return f"{score:.{digits}f}" if digits is not None else f"{score:g}"


__all__ = ["bon", "criteria_record", "judgment_record", "print_bon", "score", "is_embedded", "EMBEDDED_WARNING"]
