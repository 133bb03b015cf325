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
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cerm.backends.embedded import EMBEDDED_WARNING, is_embedded
from cerm.bench import BENCHMARKS, load_items, resolve_sources, select_items
from cerm.bench.common import DataError, HFSource, data_files
from cerm.bench.runner import RunConfig, Scorer, run_benchmark
from cerm.cli.common import (
    BackendOpt,
    BackendOptions,
    BaseUrlOpt,
    CacheOpt,
    ConcurrencyOpt,
    CriteriaTokensOpt,
    EvalTokensOpt,
    ModelOpt,
    SamplesOpt,
    SeedOpt,
    fail,
    make_judge,
)
from cerm.judge import JudgeConfig

app = typer.Typer(help="Evaluate a judge on reward-model benchmarks with their official metrics.",
                  no_args_is_help=True)
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


def default_data_root() -> Path:
    env = os.environ.get("CERM_DATA_ROOT")
    if env:
        return Path(env)
    for candidate in (Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _make_scorer(scorer: str, opts: BackendOptions, config: JudgeConfig, cache: Path | None) -> Scorer:
    if scorer == "judge":
        return make_judge(opts, config, cache)
    from cerm.bench.baselines import make_baseline

    return make_baseline(scorer)


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
def run(
    benchmark: BenchmarkOpt,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    subset: SubsetOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    samples: SamplesOpt = 1,
    out: OutOpt = None,
    scorer: ScorerOpt = "judge",
    baselines: Annotated[list[str] | None, typer.Option(
        "--baselines", help="also run these baselines (length, embedding) and show them as report rows")] = None,
    backend: BackendOpt = "hf",
    model: ModelOpt = "PKU-ONELab/CE-RM-4B",
    base_url: BaseUrlOpt = None,
    concurrency_limit: ConcurrencyOpt = 16,
    cache: CacheOpt = None,
    criteria_max_new_tokens: CriteriaTokensOpt = 4096,
    eval_max_new_tokens: EvalTokensOpt = 8192,
    chunk_size: Annotated[int, typer.Option(help="items per scoring call (all candidates of an item together)")] = 32,
    workers: Annotated[int, typer.Option(help="chunks in flight at once (raise for server pools)")] = 1,
    bootstrap: BootstrapOpt = 1000,
) -> None:
    """Judge a benchmark and write items.jsonl, summary.json and report.md (resumable: rerun to continue)."""
    if scorer not in ("judge", "length", "embedding"):
        raise fail(f"--scorer {scorer!r} must be judge, length or embedding.")
    bench, items, labels = _load(benchmark, data, data_root, subset, limit, seed)
    if not items:
        raise fail(f"no {bench.title} items selected; check --data and --subset.")
    name = _slug(model if scorer == "judge" else scorer) + (f"-k{samples}" if samples > 1 else "")
    out = out or Path("runs") / bench.name / name
    selection = {"subsets": list(subset or []), "limit": limit}
    try:
        config = JudgeConfig(criteria_max_new_tokens=criteria_max_new_tokens, eval_max_new_tokens=eval_max_new_tokens,
                             samples=samples, seed=seed)
        run_cfg = RunConfig(out, seed=seed, chunk_size=chunk_size, workers=workers, bootstrap=bootstrap,
                            selection=selection)
    except ValueError as e:
        raise fail(str(e)) from None
    rows = []
    for b in baselines or []:
        if b not in ("length", "embedding"):
            raise fail(f"--baselines {b!r} must be length or embedding.")
        result = _run_one(bench, items, _make_scorer(b, BackendOptions(), config, None),
                          RunConfig(out / "baselines" / b, seed=seed, chunk_size=max(chunk_size, 256),
                                    bootstrap=bootstrap, selection=selection), labels, [])
        rows.append(result.summary)
    opts = BackendOptions(backend=backend, model=model, base_url=base_url, concurrency_limit=concurrency_limit)
    warnings = [EMBEDDED_WARNING] if scorer == "judge" and is_embedded(model) else []
    judge = _make_scorer(scorer, opts, config, cache or out / "cache.sqlite")
    result = _run_one(bench, items, judge, run_cfg, labels, warnings, rows)
    s = result.summary
    h = s["headline"]
    ci = "" if h["ci_low"] is None else f" [95% CI {100 * h['ci_low']:.1f}, {100 * h['ci_high']:.1f}]"
    out_console.print(f"{bench.title} {escape(h['key'])}: {100 * (h['value'] or 0):.1f}{ci}  tie rate "
                      f"{100 * (s['tie_rate'] or 0):.1f}%  parse failures {100 * (s['parse_failure_rate'] or 0):.1f}%  "
                      f"({s['n_items']} items; {result.n_resumed} resumed)")
    for w in warnings:
        out_console.print(f"[bold yellow]{w}[/]")
    out_console.print(f"report: {out / 'report.md'}")


def _run_one(bench, items, scorer, run_cfg, labels, warnings, rows=()):
    with _progress() as bar:
        task = bar.add_task(f"{bench.name} → {run_cfg.out_dir}", total=len(items))
        try:
            return run_benchmark(bench, items, scorer, run_cfg, sources=labels, warnings=warnings,
                                 baseline_rows=rows, progress=lambda done, total: bar.update(task, completed=done))
        except (DataError, ValueError) as e:
            raise fail(str(e)) from None


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="first run directory (the reference)")],
    run_b: Annotated[Path, typer.Argument(help="second run directory")],
    bootstrap: BootstrapOpt = 1000,
    seed: SeedOpt = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the comparison here")] = None,
) -> None:
    """Paired differences (B − A) on the items both runs share, with paired-bootstrap 95% CIs."""
    from cerm.bench.compare import compare_runs

    try:
        result = compare_runs(run_a, run_b, n_resamples=bootstrap, seed=seed)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    table = Table(title=f"{result.benchmark}: B − A on {result.n_shared} shared items "
                        f"(only A {result.n_only_a}, only B {result.n_only_b})")
    for col in ("metric", f"A: {result.scorer_a}", f"B: {result.scorer_b}", "B − A", "95% CI"):
        table.add_column(escape(col))

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    for d in result.diffs:
        ci = "–" if d.ci_low is None else f"[{100 * d.ci_low:+.1f}, {100 * d.ci_high:+.1f}]"
        table.add_row(escape(d.metric), pct(d.value_a), pct(d.value_b), "–" if d.diff is None else f"{100 * d.diff:+.1f}", ci)
    out_console.print(table)
    if json_out:
        from dataclasses import asdict

        json_out.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")


@app.command("list")
def list_benchmarks(data_root: DataRootOpt = None) -> None:
    """Benchmarks, their subsets, and whether a local copy is available."""
    root = data_root or default_data_root()
    table = Table(title=f"benchmarks (data root: {root})")
    for col in ("name", "title", "subsets", "local copy", "HF sources"):
        table.add_column(col, overflow="fold")
    for name, b in BENCHMARKS.items():
        local = "–"
        if b.local_dir:
            path = root / b.local_dir
            try:
                local = f"yes: {path} ({len(data_files(path, b.file_glob))} files)"
            except FileNotFoundError:
                local = f"no ({path} missing; pass --data)"
        hf = ", ".join(f"{s.hf_id}[{s.split}]" for s in b.hf) or "–"
        table.add_row(name, b.title, ", ".join(b.subsets), local, hf)
    out_console.print(table)


def probe(
    benchmark: BenchmarkOpt = "judgebench",
    probes: Annotated[list[str] | None, typer.Option(
        "--probe", help="length | format | self-praise | inflation (repeatable; default: all)")] = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    subset: SubsetOpt = None,
    limit: LimitOpt = 50,
    seed: SeedOpt = 0,
    samples: SamplesOpt = 1,
    out: OutOpt = None,
    scorer: ScorerOpt = "judge",
    backend: BackendOpt = "hf",
    model: ModelOpt = "PKU-ONELab/CE-RM-4B",
    base_url: BaseUrlOpt = None,
    concurrency_limit: ConcurrencyOpt = 16,
    cache: CacheOpt = None,
    criteria_max_new_tokens: CriteriaTokensOpt = 4096,
    eval_max_new_tokens: EvalTokensOpt = 8192,
    bootstrap: BootstrapOpt = 1000,
) -> None:
    """Bias probes: score shift from neutral padding, markdown, self-praise, and a mismatched answer."""
    from cerm.bench.probes import PROBES, build_pairs, run_probe

    chosen = probes or list(PROBES)
    for p in chosen:
        if p not in PROBES:
            raise fail(f"unknown probe {p!r}; choose from {', '.join(PROBES)}.")
    bench, items, labels = _load(benchmark, data, data_root, subset, limit, seed)
    out = out or Path("runs") / "probes" / _slug(model if scorer == "judge" else scorer)
    out.mkdir(parents=True, exist_ok=True)
    opts = BackendOptions(backend=backend, model=model, base_url=base_url, concurrency_limit=concurrency_limit)
    try:
        config = JudgeConfig(criteria_max_new_tokens=criteria_max_new_tokens, eval_max_new_tokens=eval_max_new_tokens,
                             samples=samples, seed=seed)
    except ValueError as e:
        raise fail(str(e)) from None
    s = _make_scorer(scorer, opts, config, cache or out / "cache.sqlite")
    warnings = [EMBEDDED_WARNING] if scorer == "judge" and is_embedded(model) else []
    table = Table(title=f"bias probes on {bench.title} ({len(items)} items); shift = variant − original")
    for col in ("probe", "pairs (valid)", "mean original", "mean variant", "shift", "95% CI", "up/down/equal %"):
        table.add_column(col)
    results = []
    with open(out / "probe_items.jsonl", "w", encoding="utf-8") as f:
        for p in chosen:
            pairs = build_pairs(p, items, seed)
            result, records = run_probe(s.score_batch, p, pairs, n_resamples=bootstrap, seed=seed)
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            results.append(result.as_dict())

            def num(x: float | None, fmt: str = "{:.2f}") -> str:
                return "–" if x is None else fmt.format(x)

            table.add_row(p, f"{result.n_pairs} ({result.n_valid})", num(result.mean_original),
                          num(result.mean_variant), num(result.shift, "{:+.2f}"),
                          "–" if result.ci_low is None else f"[{result.ci_low:+.2f}, {result.ci_high:+.2f}]",
                          "–" if result.share_up is None else
                          f"{100 * result.share_up:.0f}/{100 * result.share_down:.0f}/{100 * result.share_equal:.0f}")
    summary = {"benchmark": bench.name, "data": labels, "selection": {"subsets": subset or [], "limit": limit},
               "seed": seed, "scorer": scorer if scorer != "judge" else model, "warnings": warnings,
               "probes": results}
    (out / "probes.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    out_console.print(table)
    for w in warnings:
        out_console.print(f"[bold yellow]{w}[/]")
    out_console.print(f"results: {out / 'probes.json'}")
