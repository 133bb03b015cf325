"""``cerm bench suite``: the paper's table for one judge in one command (layout: ``cerm.bench.suite``).

Order of work: load every benchmark's data (missing data is named with its fix before anything runs), print
the plan and its cost (items, model calls, generated tokens from the budgets), then run each benchmark into
its own folder with a measured ETA, and write the summary beside the paper's values.
"""

from __future__ import annotations

import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from cerm.backends.base import Backend
from cerm.backends.embedded import embedded_warning
from cerm.bench import BENCHMARKS, RunConfig, run_benchmark
from cerm.bench.cost import Calls, TokenModel, measured_lengths, token_model
from cerm.bench.paper import EXTRA_BENCHMARKS, PAPER_BENCHMARKS, PAPER_OVERALL
from cerm.bench.suite import (
    REPORT_FILE,
    SUITE_FILE,
    SUITE_VERSION,
    BenchPlan,
    SuiteError,
    check_judge,
    headline_cell,
    judge_fingerprint,
    paper_cell,
    plan_benchmark,
    rows_for,
    write_json,
    write_report,
)
from cerm.bench.suite_data import Loaded, MissingData, fix_for, load_benchmark
from cerm.cache import Store
from cerm.cli.common import SCRIPTED_WARNING, JudgeOptions, fail, with_judge_options
from cerm.cli.suite_progress import ETA_EVERY_S, Meter
from cerm.humanize import count, duration
from cerm.io import DataError
from cerm.judge import Judge, JudgeConfig


def _out(text: str = "") -> None:
    typer.echo(text)


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _parse_data(values: list[str] | None, names: list[str]) -> dict[str, list[str]]:
    """``BENCH=PATH`` (repeatable; PATH may be ``hf:ID[:SPLIT]``) -> {bench: [paths]}."""
    out: dict[str, list[str]] = {}
    for v in values or []:
        bench, sep, path = v.partition("=")
        if not sep or bench not in BENCHMARKS or not path:
            raise fail(f"--data {v!r}: expected BENCH=PATH with BENCH one of {', '.join(BENCHMARKS)}.")
        if bench not in names:
            raise fail(f"--data {v!r}: {bench} is not in this suite ({', '.join(names)}); add -b {bench}.")
        out.setdefault(bench, []).append(path)
    return out


def _build_backend(opts: JudgeOptions) -> Backend:
    if opts.backend == "fake":
        _err(f"warning: {SCRIPTED_WARNING}")
    try:
        return opts.backend_options().build()
    except ConnectionError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"cannot load model {opts.model!r} (backend {opts.backend}): {e}") from None
    except (ImportError, ValueError) as e:
        raise fail(str(e)) from None


# ---- the plan -------------------------------------------------------------------------------------------
def _wrapped(text: str, indent: str = "") -> None:
    """Prose at 80 columns (commands are printed whole, so they can be copied)."""
    _out(textwrap.fill(text, 80, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False))


def _print_fix(lines: tuple[str, ...]) -> None:
    """Commands whole (to copy them), comments wrapped at 80 columns."""
    for line in lines:
        if line.startswith("# "):
            _out(textwrap.fill(line[2:], 80, initial_indent="    # ", subsequent_indent="    # ",
                               break_on_hyphens=False, break_long_words=False))
        else:
            _out(f"    {line}")


def _print_plan(root: Path, opts: JudgeOptions, config: JudgeConfig, names: list[str], plans: list[BenchPlan],
                missing: list[MissingData], loaded: list[Loaded], tokens: TokenModel, limit: int | None) -> None:
    mode = f"{'expected' if config.expected_score else 'greedy'} score"
    _wrapped(f"cerm bench suite -> {root}", "  ")
    _wrapped(f"judge: {opts.model} (backend {opts.backend}), {mode}; budgets {config.criteria_max_new_tokens} "
             f"criteria / {config.eval_max_new_tokens} evaluation tokens per call")
    per = "1 criteria + N evaluations per query" if config.unified_criteria else "N criteria + N evaluations"
    k = config.samples * config.criteria_samples
    _wrapped(f"model calls: {per}{f' x {k} samples' if k > 1 else ''} (N = candidates; a cold cache); items: "
             + (f"a seeded sample of {limit} per benchmark (seed {config.seed})" if limit else "all"))
    _out("")
    _out(f"{'benchmark':<14}{'items':>17}{'to do':>8}{'calls':>10}{'tokens: expected':>18}{'at most':>10}")
    by_name: dict[str, BenchPlan | MissingData] = {p.name: p for p in plans}
    by_name.update({m.benchmark: m for m in missing})
    total_calls, total_bound, total_exp = Calls(), 0, 0.0
    for name in names:
        p = by_name[name]
        if isinstance(p, MissingData):
            _out(f"{p.title:<14}{'MISSING DATA':>17}")
            continue
        exp = tokens.expected(p.calls)
        total_calls, total_bound, total_exp = total_calls + p.calls, total_bound + p.tokens_bound, total_exp + (exp or 0)
        todo = "done" if p.is_finished else f"{len(p.pending):,}"
        _out(f"{p.title:<14}{f'{len(p.items):,} of {p.n_available:,}':>17}{todo:>8}{p.calls.total:>10,}"
             f"{'–' if exp is None else count(exp):>18}{count(p.tokens_bound):>10}")
    _out(f"{'total':<14}{'':>17}{'':>8}{total_calls.total:>10,}"
         f"{'–' if tokens.criteria is None else count(total_exp):>18}{count(total_bound):>10}")
    _out("")
    _wrapped(f"tokens: expected = calls x E[min(budget, length)], {tokens.basis}"
             + ("" if tokens.criteria is None else f" ({tokens.criteria:.0f} per criteria call, "
                f"{tokens.evaluation:.0f} per evaluation)") + "; at most = every call fills its budget.")
    _wrapped(f"time: measured after the first chunk, then an ETA line on stderr at most every {ETA_EVERY_S:.0f} s.")
    for ld in loaded:
        _wrapped(f"data: {ld.bench.name} <- {', '.join(ld.sources)}", "  ")
    for ld in loaded:
        if ld.lacking:
            _wrapped(f"note: {ld.bench.title}: the data has no {', '.join(ld.lacking)} items, so its headline "
                     "cannot be the paper's metric (the summary says so). To complete it:", "  ")
            _print_fix(fix_for(ld.bench, ld.data_root))
    for m in missing:
        _out("")
        _wrapped(f"MISSING DATA {m.title}: {m.problem}", "  ")
        _out("  fix:")
        _print_fix(m.fix)


# ---- the command -----------------------------------------------------------------------------------------
@with_judge_options
def suite(
    judge_opts: JudgeOptions,
    benchmarks: Annotated[list[str] | None, typer.Option(
        "--benchmark", "-b", help="benchmarks to run, in order (repeatable; default: the paper's table, "
        f"{', '.join(PAPER_BENCHMARKS)})")] = None,
    extras: Annotated[bool, typer.Option(
        "--extras", help=f"also run {' and '.join(EXTRA_BENCHMARKS)} (not in the paper's table)")] = False,
    data: Annotated[list[str] | None, typer.Option(
        "--data", help="BENCH=PATH: a benchmark's file or folder, or hf:ID[:SPLIT] (repeatable)")] = None,
    data_root: Annotated[Path | None, typer.Option(
        help="where local benchmark copies live (default: $CERM_DATA_ROOT, else ../shared/data)")] = None,
    limit: Annotated[int | None, typer.Option(help="judge a seeded sample of this many items per benchmark")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="suite root (default: runs/suite/<model>)")] = None,
    chunk_size: Annotated[int, typer.Option(help="items per scoring call")] = 32,
    workers: Annotated[int, typer.Option(help="chunks in flight at once (raise for server pools)")] = 1,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for 95% CIs (0 = none)")] = 1000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and its cost, then stop")] = False,
    skip_missing: Annotated[bool, typer.Option(
        "--skip-missing", help="run the benchmarks whose data is there; list the others as missing")] = False,
) -> None:
    """Run the paper's benchmarks for one judge: one folder per benchmark under --out, one summary beside the
    paper's values; the plan and its cost first; rerun the same command to resume.
    """
    from cerm.cli.bench import _slug, default_data_root  # lazily: cli.bench registers this command

    names = list(dict.fromkeys((benchmarks or list(PAPER_BENCHMARKS)) + (list(EXTRA_BENCHMARKS) if extras else [])))
    for n in names:
        if n not in BENCHMARKS:
            raise fail(f"unknown benchmark {n!r}; choose from {', '.join(BENCHMARKS)}.")
    data_map = _parse_data(data, names)
    try:
        config = judge_opts.config()
        RunConfig(Path("."), chunk_size=chunk_size, workers=workers, bootstrap=bootstrap)  # checks the numbers
        if limit is not None and limit < 1:
            raise ValueError(f"--limit ({limit}) must be >= 1.")
    except ValueError as e:
        raise fail(str(e)) from None
    root = out or Path("runs") / "suite" / _slug(judge_opts.run_name)
    fingerprint = judge_fingerprint(judge_opts.backend, judge_opts.model, config)
    try:
        check_judge(root, fingerprint)
    except SuiteError as e:
        raise fail(str(e)) from None
    data_root = data_root or default_data_root()
    loaded: list[Loaded] = []
    missing: list[MissingData] = []
    for n in names:
        try:
            got = load_benchmark(BENCHMARKS[n], data_map.get(n), data_root, limit, config.seed)
        except (DataError, ValueError) as e:
            raise fail(f"{BENCHMARKS[n].title}: {e}") from None
        if isinstance(got, MissingData):
            missing.append(got)
        else:
            loaded.append(got)
    plans, finished_records = [], []
    try:
        for ld in loaded:
            plan, recs = plan_benchmark(ld.bench.name, ld.bench.title, root / ld.bench.name, ld.items,
                                        ld.n_available, config, chunk_size)
            plans.append(plan)
            finished_records += recs
    except (SuiteError, DataError) as e:
        raise fail(str(e)) from None
    lengths = measured_lengths(finished_records)
    tokens = token_model(judge_opts.model, config, *lengths)
    _print_plan(root, judge_opts, config, names, plans, missing, loaded, tokens, limit)
    if missing and not skip_missing:
        raise fail(f"{len(missing)} benchmark(s) have no data: {', '.join(m.benchmark for m in missing)}. Run "
                   "the fix above, or pass --skip-missing to run the others.")
    if dry_run:
        return
    _run(root, judge_opts, config, fingerprint, names, plans, missing, tokens, lengths,
         RunConfig(root, seed=config.seed, chunk_size=chunk_size, workers=workers, bootstrap=bootstrap),
         limit, {ld.bench.name: ld.sources for ld in loaded})


def _suite_state(fingerprint: dict[str, Any], names: list[str], plans: list[BenchPlan],
                 missing: list[MissingData], tokens: TokenModel, limit: int | None, seed: int, root: Path,
                 warnings: list[str]) -> dict[str, Any]:
    rows = sorted(rows_for(root, plans, missing), key=lambda r: names.index(r["benchmark"]))
    return {
        "suite_version": SUITE_VERSION, "judge": fingerprint, "benchmarks": names,
        "selection": {"limit": limit, "seed": seed}, "warnings": warnings,
        "plan": {p.name: {"items": len(p.items), "n_available": p.n_available, "done_before": p.n_done,
                          "criteria_calls": p.calls.criteria, "evaluation_calls": p.calls.evaluations,
                          "tokens_bound": p.tokens_bound, "tokens_expected": tokens.expected(p.calls)}
                 for p in plans},
        "token_model": {"criteria": tokens.criteria, "evaluation": tokens.evaluation, "basis": tokens.basis},
        "missing": {m.benchmark: {"title": m.title, "problem": m.problem, "fix": list(m.fix)} for m in missing},
        "paper_overall": PAPER_OVERALL, "rows": rows, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _run(root: Path, opts: JudgeOptions, config: JudgeConfig, fingerprint: dict[str, Any], names: list[str],
         plans: list[BenchPlan], missing: list[MissingData], tokens: TokenModel,
         lengths: tuple[list[int], list[int]], base: RunConfig, limit: int | None,
         sources: dict[str, list[str]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    warnings = [w for w in [embedded_warning(opts.model)] if w]
    selection: dict[str, Any] = {"subsets": [], "limit": limit}

    def save() -> dict[str, Any]:
        state = _suite_state(fingerprint, names, plans, missing, tokens, limit, config.seed, root, warnings)
        write_json(root / SUITE_FILE, state)
        write_report(root, state)
        return state

    save()
    session = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    meter = Meter(root, session, plans, tokens, opts.model, config, lengths)
    backend: Backend | None = None
    n_errors = 0
    for i, plan in enumerate(plans):
        if plan.is_finished:
            _err(f"{plan.name}: finished earlier ({len(plan.items)} items): read, not run")
            continue
        if backend is None:
            backend = _build_backend(opts)
        judge = Judge(backend, config, Store(opts.cache or plan.out_dir / "cache.sqlite"))
        meter.begin(i, judge)
        try:
            result = run_benchmark(BENCHMARKS[plan.name], plan.items, judge,
                                   RunConfig(plan.out_dir, seed=base.seed, chunk_size=base.chunk_size,
                                             workers=base.workers, bootstrap=base.bootstrap, selection=selection),
                                   sources=sources[plan.name], warnings=warnings, progress=meter)
        except (DataError, ValueError) as e:
            raise fail(f"{plan.title}: {e}") from None
        meter(len(plan.items), len(plan.items), final=True)
        meter.end()
        n_errors += result.n_backend_errors
        save()
    state = save()
    _print_summary(root, state)
    if n_errors:
        raise fail(f"{n_errors} item(s) ended in backend errors (not results; counted as failures above). Fix the "
                   "backend and rerun the same command: they are scored again.", code=1)


def _print_summary(root: Path, state: dict[str, Any]) -> None:
    _out("")
    _out(f"{'benchmark':<14}{'ours [95% CI]':<18}{'paper':<9}{'ties':>6}{'fails':>7}{'tokens':>8}{'wall':>12}")
    for r in state["rows"]:
        if r["status"] != "done":
            _out(f"{r['title']:<14}{r['status']}")
            continue
        ties = "–" if r.get("tie_rate") is None else f"{100 * r['tie_rate']:.1f}%"
        fails = "–" if r.get("parse_failure_rate") is None else f"{100 * r['parse_failure_rate']:.1f}%"
        _out(f"{r['title']:<14}{headline_cell(r):<18}{paper_cell(r):<9}{ties:>6}{fails:>7}"
             f"{count(r.get('tokens_generated')):>8}{duration(r.get('wall_s')):>12}")
    _out("")
    for r in state["rows"]:
        if r["status"] != "done":
            continue
        key = (r.get("headline") or {}).get("key")
        also = "".join(f"; {k} {100 * v['value']:.1f}" for k, v in (r.get("also") or {}).items()
                       if v.get("value") is not None)
        why = "; ".join(r["not_comparable"]) or "same metric and protocol as far as known"
        _wrapped(f"{r['title']}: ours = {key}{also}. vs paper: {why}.", "  ")
    _wrapped("paper: CE-RM-4B, greedy, from a third-party aggregator of the paper's tables [T]; protocols in "
             f"{root / REPORT_FILE}")
    for w in state.get("warnings", []):
        _wrapped(w)
    _out(f"summary: {root / SUITE_FILE}")
    _out(f"browse: cerm view {root}")
    sys.stdout.flush()
