"""``cerm bench run|compare|list`` and ``cerm probe``: benchmarks and bias probes from the command line.

Register in the main app with::

    from cerm.cli import bench as bench_cli
    app.add_typer(bench_cli.app, name="bench")
    app.command("probe")(bench_cli.probe)
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cerm.backends.embedded import embedded_warning
from cerm.bench import BENCHMARKS, load_items, resolve_sources, select_items
from cerm.bench.common import DataError, HFSource, data_files
from cerm.bench.runner import RunConfig, Scorer, describe_scorer, run_benchmark
from cerm.cli.common import JudgeOptions, console, fail, with_judge_options
from cerm.cli.extras import require, warn_without_plots
from cerm.cli.tables import narrow_table

app = typer.Typer(
    rich_markup_mode=None,  # plain click help: wraps at 80 columns, never truncates (rich's table cut names)
    help="Evaluate a judge on reward-model benchmarks with their official metrics.",
    no_args_is_help=True,
)
out_console = Console()

BenchmarkOpt = Annotated[str, typer.Option("--benchmark", "-b", help=f"one of: {', '.join(BENCHMARKS)}")]
DataOpt = Annotated[list[str] | None, typer.Option(
    "--data", help="benchmark file or directory (repeatable); 'hf:ID[:SPLIT]' loads from the HF hub")]
DataRootOpt = Annotated[Path | None, typer.Option(
    help="where local benchmark copies live (default: $CERM_DATA_ROOT, else ../shared/data)")]
SubsetOpt = Annotated[list[str] | None, typer.Option(
    "--subset", help="keep items of this subset or below it in the '/' hierarchy (repeatable)")]
LimitOpt = Annotated[int | None, typer.Option(help="judge a seeded random sample of this many items")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="run directory (default: runs/<benchmark>/<scorer>)")]
ScorerOpt = Annotated[str, typer.Option(help="judge | length | embedding (the baselines need no model)")]
BootstrapOpt = Annotated[int, typer.Option(help="bootstrap resamples for 95% CIs (0 = none)")]
SCORERS = ("judge", "length", "embedding")


def default_data_root() -> Path:
    """Where local benchmark copies live: $CERM_DATA_ROOT, else ../shared/data or ./shared/data."""
    env = os.environ.get("CERM_DATA_ROOT")
    if env:
        return Path(env)
    for candidate in (Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _make_scorer(scorer: str, judge_opts: JudgeOptions, out: Path) -> Scorer:
    """The judge or a baseline.

    The judge's SQLite cache defaults to ``OUT/cache.sqlite``, so a run directory resumes alone.
    """
    if scorer == "judge":
        return replace(judge_opts, cache=judge_opts.cache or out / "cache.sqlite").make_judge()
    from cerm.bench.baselines import make_baseline

    try:
        return make_baseline(scorer)
    except (ImportError, ValueError) as e:
        raise fail(str(e)) from None


def _load(benchmark: str, data: list[str] | None, data_root: Path | None, subset: list[str] | None,
          limit: int | None, seed: int):
    if benchmark not in BENCHMARKS:
        raise fail(f"unknown benchmark {benchmark!r}; choose one of: {', '.join(BENCHMARKS)}.")
    bench = BENCHMARKS[benchmark]
    try:
        sources = resolve_sources(bench, data, data_root or default_data_root(), subset or ())
        items = select_items(load_items(bench, sources), subset or (), limit, seed)
    except (DataError, ValueError, FileNotFoundError, ImportError) as e:
        raise fail(str(e)) from None
    except ConnectionError as e:  # datasets raises these when the hub cannot be reached
        raise fail(f"{bench.title}: the HF hub is not reachable ({e}); pass --data with a local parquet/JSONL "
                   "export in the official schema.") from None
    labels = [f"hf:{s.hf_id}[{s.split}]" if isinstance(s, HFSource) else str(s) for s in sources]
    return bench, items, labels


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True))


@app.command()
@with_judge_options
def run(
    benchmark: BenchmarkOpt,
    judge_opts: JudgeOptions,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    subset: SubsetOpt = None,
    limit: LimitOpt = None,
    out: OutOpt = None,
    scorer: ScorerOpt = "judge",
    baselines: Annotated[list[str] | None, typer.Option(
        "--baselines", help="also run these baselines (length, embedding) and show them as report rows")] = None,
    chunk_size: Annotated[int, typer.Option(help="items per scoring call (all candidates of an item together)")] = 32,
    workers: Annotated[int, typer.Option(help="chunks in flight at once (raise for server pools)")] = 1,
    bootstrap: BootstrapOpt = 1000,
) -> None:
    """Judge a benchmark and write items.jsonl, summary.json and report.md (resumable: rerun to continue)."""
    if scorer not in SCORERS:
        raise fail(f"--scorer {scorer!r} must be one of {', '.join(SCORERS)}.")
    for b in baselines or []:
        if b not in SCORERS[1:]:
            raise fail(f"--baselines {b!r} must be length or embedding.")
    if benchmark == "rewardbench2":
        require("RewardBench 2's Ties metric", "bench", ["numpy"])
    warn_without_plots("report.md", "bench")
    seed = judge_opts.seed
    bench, items, labels = _load(benchmark, data, data_root, subset, limit, seed)
    if not items:
        raise fail(f"no {bench.title} items selected; check --data and --subset.")
    name = _slug(judge_opts.run_name if scorer == "judge" else scorer)
    name += f"-k{judge_opts.samples}" if scorer == "judge" and judge_opts.samples > 1 else ""
    out = out or Path("runs") / bench.name / name
    selection = {"subsets": list(subset or []), "limit": limit}
    try:
        judge_opts.config()  # validate the flags before any model loads
        run_cfg = RunConfig(out, seed=seed, chunk_size=chunk_size, workers=workers, bootstrap=bootstrap,
                            selection=selection)
    except ValueError as e:
        raise fail(str(e)) from None
    main_scorer = _make_scorer(scorer, judge_opts, out)  # a missing backend or extra fails before any work
    rows = []
    for b in baselines or []:
        result = _run_one(bench, items, _make_scorer(b, judge_opts, out),
                          RunConfig(out / "baselines" / b, seed=seed, chunk_size=max(chunk_size, 256),
                                    bootstrap=bootstrap, selection=selection), labels, [])
        rows.append(result.summary)
    warnings = [w for w in [embedded_warning(judge_opts.model)] if w and scorer == "judge"]
    result = _run_one(bench, items, main_scorer, run_cfg, labels, warnings, rows)
    s = result.summary
    h = s["headline"]
    ci = "" if h["ci_low"] is None else f" [95% CI {100 * h['ci_low']:.1f}, {100 * h['ci_high']:.1f}]"
    out_console.print(f"{bench.title} {escape(h['key'])}: {_pct(h['value'])}{ci}  tie rate "
                      f"{_pct(s['tie_rate'])}%  parse failures {_pct(s['parse_failure_rate'])}%  "
                      f"({s['n_items']} items; {result.n_scored} scored, {result.n_resumed} resumed)")
    for w in warnings:
        console.print(f"[bold yellow]{w}[/]")
    out_console.print(f"report: {out / 'report.md'}")
    if result.n_backend_errors:
        raise fail(f"{result.n_backend_errors} item(s) ended in backend errors (not results; the metrics above "
                   "count them as failures). Fix the backend and rerun the same command: they are scored again.",
                   code=1)


def _flip_cells(result: Any) -> tuple[str, str]:
    flagged = ("–" if result.flagged_variant is None else
               f"{100 * (result.flagged_original or 0):.0f}/{100 * result.flagged_variant:.0f}")
    if result.flip_rate is None:
        return "–", flagged
    ci = "" if result.flip_ci_low is None else f" [{100 * result.flip_ci_low:.0f}, {100 * result.flip_ci_high:.0f}]"
    return f"{100 * result.flip_rate:.0f}%{ci} of {result.n_flip_pairs}", flagged


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


class _PlainProgress:
    """Progress for a log file or pipe (rich only draws the final state there): a line every ``every_s``."""

    def __init__(self, label: str, every_s: float = 30.0) -> None:
        self.label, self.every_s = label, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        print(f"{self.label}: {done}/{total} items ({100 * done / max(total, 1):.0f}%), {now - self.start:.0f} s",
              file=sys.stderr, flush=True)


def _run_one(bench, items, scorer, run_cfg, labels, warnings, rows=()):
    label = f"{bench.name} → {run_cfg.out_dir}"
    try:
        if not sys.stderr.isatty():
            return run_benchmark(bench, items, scorer, run_cfg, sources=labels, warnings=warnings,
                                 baseline_rows=rows, progress=_PlainProgress(label))
        with _progress() as bar:
            task = bar.add_task(label, total=len(items))
            return run_benchmark(bench, items, scorer, run_cfg, sources=labels, warnings=warnings,
                                 baseline_rows=rows, progress=lambda done, total: bar.update(task, completed=done))
    except (DataError, ValueError) as e:
        raise fail(str(e)) from None


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="first run directory (the reference)")],
    run_b: Annotated[Path, typer.Argument(help="second run directory")],
    bootstrap: BootstrapOpt = 1000,
    seed: Annotated[int, typer.Option(help="seed for the bootstrap")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the comparison here")] = None,
) -> None:
    """Paired differences (B − A) on the items both runs share, with paired-bootstrap 95% CIs."""
    from cerm.bench.compare import compare_runs

    try:
        result = compare_runs(run_a, run_b, n_resamples=bootstrap, seed=seed)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    # the scorers' names are long ("fake:m (greedy) [SCRIPTED ...]"): named above the table, so the metric
    # column keeps its full names at 80 columns
    out_console.print(f"{result.benchmark}: B − A on {result.n_shared} shared items (only A {result.n_only_a}, "
                      f"only B {result.n_only_b})\n  A = {escape(result.scorer_a)}\n  B = {escape(result.scorer_b)}",
                      highlight=False)
    table = narrow_table("metric", "A", "B", "B − A", "95% CI", keep=("metric", "95% CI"))

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    for d in result.diffs:
        ci = "–" if d.ci_low is None or d.ci_high is None else f"[{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]"
        table.add_row(escape(d.metric), pct(d.value_a), pct(d.value_b), "–" if d.diff is None else f"{100 * d.diff:+.1f}", ci)
    out_console.print(table)
    if json_out:
        from dataclasses import asdict

        json_out.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")


@app.command("list")
def list_benchmarks(data_root: DataRootOpt = None) -> None:
    """Benchmarks, their subsets, and whether a local copy is available."""
    root = data_root or default_data_root()
    # one block per benchmark, wrapped between names: a table's narrow cells split subset names at 80 columns
    width = max(40, out_console.width)
    lines = [f"benchmarks (data root: {root})"]
    for name, b in BENCHMARKS.items():
        local = "–"
        if b.local_dir:
            path = root / b.local_dir
            try:
                local = f"yes, {path} ({len(data_files(path, b.file_glob))} files)"
            except FileNotFoundError:
                local = f"no ({path} missing; pass --data)"
        hf = ", ".join(f"{s.hf_id}[{s.split}]" for s in b.hf) or "–"
        lines += ["", f"{name}: {b.title}"]
        for label, value in (("subsets", ", ".join(b.subsets)), ("local copy", local), ("HF sources", hf)):
            lines += textwrap.wrap(value, width, initial_indent=f"  {label + ':':<12}", subsequent_indent=" " * 14,
                                   break_long_words=False, break_on_hyphens=False)
    typer.echo("\n".join(lines))


@with_judge_options
def probe(
    judge_opts: JudgeOptions,
    benchmark: BenchmarkOpt = "judgebench",
    probes: Annotated[list[str] | None, typer.Option(
        "--probe", help="length | format | self-praise | inflation | injection (repeatable; default: the four "
        "bias probes)")] = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    subset: SubsetOpt = None,
    limit: LimitOpt = 50,
    out: OutOpt = None,
    scorer: ScorerOpt = "judge",
    bootstrap: BootstrapOpt = 1000,
) -> None:
    """Bias probes: score shift from neutral padding, markdown, self-praise, and a mismatched answer.

    Each probe judges an original response (the first correct candidate of each benchmark item) and
    an edited variant under one criteria set; shift = variant − original with a 95% bootstrap CI.
    ``--probe injection`` appends three families of judge-steering text to the first incorrect candidate
    and also reports how often that overtakes the correct one (flip rate) and how often cerm flagged it.
    """
    from cerm.bench.probes import BIAS_PROBES, PROBES, build_pairs, expand_probes, run_probe

    for p in probes or []:
        if p not in PROBES:
            raise fail(f"unknown probe {p!r}; choose from {', '.join(PROBES)}.")
    chosen = expand_probes(probes or list(BIAS_PROBES))
    if scorer not in SCORERS:
        raise fail(f"--scorer {scorer!r} must be one of {', '.join(SCORERS)}.")
    seed = judge_opts.seed
    bench, items, labels = _load(benchmark, data, data_root, subset, limit, seed)
    out = out or Path("runs") / "probes" / _slug(judge_opts.run_name if scorer == "judge" else scorer)
    out.mkdir(parents=True, exist_ok=True)
    try:
        judge_opts.config()
    except ValueError as e:
        raise fail(str(e)) from None
    s = _make_scorer(scorer, judge_opts, out)
    warnings = [w for w in [embedded_warning(judge_opts.model)] if w and scorer == "judge"]
    table = narrow_table("probe", "pairs (valid)", "orig", "var", "shift", "95% CI", "up/down/= %", keep=("probe",),
                         title=f"bias probes on {bench.title} ({len(items)} items): mean score of the original "
                               "and of the variant; shift = var − orig")
    injection = any(p.startswith("injection/") for p in chosen)
    flips = narrow_table("probe", "flip rate [95% CI] of pairs", "flagged orig/var %", keep=("probe",),
                         title="injections: how often the injected incorrect response overtakes the correct one, "
                               "and how often cerm flagged it")
    results = []

    def num(x: float | None, fmt: str = "{:.2f}") -> str:
        return "–" if x is None else fmt.format(x)

    with open(out / "probe_items.jsonl", "w", encoding="utf-8") as f:
        for p in chosen:
            try:
                pairs = build_pairs(p, items, seed)
            except ValueError as e:
                raise fail(str(e)) from None
            result, records = run_probe(s.score_batch, p, pairs, n_resamples=bootstrap, seed=seed)
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            results.append(result.as_dict())
            table.add_row(p, f"{result.n_pairs} ({result.n_valid})", num(result.mean_original),
                          num(result.mean_variant), num(result.shift, "{:+.2f}"),
                          "–" if result.ci_low is None or result.ci_high is None else
                          f"[{result.ci_low:+.2f},{result.ci_high:+.2f}]",
                          "–" if result.share_up is None or result.share_down is None or result.share_equal is None
                          else f"{100 * result.share_up:.0f}/{100 * result.share_down:.0f}/"
                               f"{100 * result.share_equal:.0f}")
            if result.probe.startswith("injection/"):
                flips.add_row(p, *_flip_cells(result))
    summary = {"benchmark": bench.name, "data": labels, "selection": {"subsets": subset or [], "limit": limit},
               "seed": seed, "scorer": describe_scorer(s), "warnings": warnings, "probes": results}
    (out / "probes.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    out_console.print(table)
    if injection:
        out_console.print(flips)
    for w in warnings:
        console.print(f"[bold yellow]{w}[/]")
    out_console.print(f"results: {out / 'probes.json'}")


from cerm.cli.suite import suite  # noqa: E402 (after `app`: the suite module imports this one lazily)

app.command("suite")(suite)
