"""`cerm curate` and `cerm distill`: the data steps before training.

`cerm curate` turns raw preference pairs into curated train/held-out pairs; `cerm distill` turns curated
pairs into teacher SFT traces. Data flow: raw pairs -> curate -> distill -> `cerm train sft` -> `cerm train rl`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cerm.backends.embedded import embedded_warning
from cerm.cache import Store
from cerm.cli.common import JudgeOptions, console, fail, stdout, with_judge_options
from cerm.cli.extras import require, warn_without_plots


def _domain_weights(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise fail(f"--domain-weight {item!r} must look like DOMAIN=WEIGHT, e.g. code=2.") from None
        if not sep or not name.strip():
            raise fail(f"--domain-weight {item!r} must look like DOMAIN=WEIGHT, e.g. code=2.")
    return weights


@with_judge_options
def curate(
    judge_opts: JudgeOptions,
    inputs: Annotated[list[str], typer.Argument(help="preference files (.jsonl/.json/.parquet), directories "
                                                     "(RMB Pairwise_set works) or HF dataset ids")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    target_size: Annotated[int, typer.Option(help="training pairs to select (the paper: ~5.7K)")] = 5700,
    heldout_size: Annotated[int, typer.Option(help="held-out pairs; share no prompt with training")] = 300,
    split: Annotated[str, typer.Option(help="split to read from an HF dataset id")] = "train",
    strict: Annotated[bool, typer.Option(help="stop at the first bad row instead of reporting it")] = False,
    language: Annotated[list[str] | None, typer.Option(help="keep these ISO 639-1 languages of the last user "
                                                            "turn (repeat); 'all' keeps every language")] = None,
    max_prompt_tokens: Annotated[int, typer.Option(help="drop pairs whose query is longer")] = 8192,
    max_response_tokens: Annotated[int, typer.Option(help="drop pairs with a longer response")] = 4096,
    tokenizer: Annotated[str | None, typer.Option(help="HF tokenizer for lengths (default: 4 chars/token)")] = None,
    decontaminate: Annotated[list[Path] | None, typer.Option(help="evaluation file/dir whose prompts must not "
                                                                  "be trained on (repeat)")] = None,
    near_dup_threshold: Annotated[float, typer.Option(help="MinHash Jaccard of prompts counted as duplicates")] = 0.8,
    max_pairs_per_prompt: Annotated[int, typer.Option(help="pairs kept per near-duplicate prompt cluster")] = 1,
    domain_weight: Annotated[list[str] | None, typer.Option(help="DOMAIN=WEIGHT (repeat); default: equal")] = None,
    pass_k: Annotated[int, typer.Option(help="judge samples per response for the pass-rate filter; 0 = off")] = 4,
    pass_temperature: Annotated[float, typer.Option(help="temperature of the pass-rate samples")] = 1.0,
    min_pass_rate: Annotated[float, typer.Option(help="keep pairs with pass rate > this")] = 0.0,
    max_pass_rate: Annotated[float, typer.Option(help="keep pairs with pass rate < this")] = 1.0,
    tie_credit: Annotated[float, typer.Option(help="credit of a tied comparison in the pass rate")] = 0.5,
    max_all_tie_share: Annotated[float, typer.Option(help="cap on always-tied pairs, share of the target")] = 0.1,
    judge_chunk_pairs: Annotated[int, typer.Option(help="pairs per judge batch (flushed after each)")] = 256,
) -> None:
    """Curate preference pairs: validate, filter, dedupe, pass-rate filter, balance, split, report."""
    from cerm.train.curate.config import CurateConfig
    from cerm.train.curate.pipeline import curate as run_curate

    if judge_opts.samples != 1:
        raise fail("the pass-rate judge samples --pass-k evaluations; leave --samples at 1.")
    languages = tuple(language or ["en"])
    if "all" in languages:
        languages = ()
    try:
        cfg = CurateConfig(
            target_size=target_size, heldout_size=heldout_size, seed=judge_opts.seed, split=split, strict=strict,
            languages=languages, max_prompt_tokens=max_prompt_tokens, max_response_tokens=max_response_tokens,
            tokenizer=tokenizer, decontaminate=tuple(str(d) for d in decontaminate or ()),
            near_dup_threshold=near_dup_threshold, max_pairs_per_prompt=max_pairs_per_prompt,
            domain_weights=_domain_weights(domain_weight), pass_k=pass_k, pass_temperature=pass_temperature,
            min_pass_rate=min_pass_rate, max_pass_rate=max_pass_rate, tie_credit=tie_credit,
            max_all_tie_share=max_all_tie_share, judge_chunk_pairs=judge_chunk_pairs)
    except ValueError as e:
        raise fail(str(e)) from None
    require("cerm curate", "train", ["datasketch", *(["py3langid"] if languages else []),
                                     *(["transformers"] if tokenizer else [])])
    warn_without_plots("the pass-rate histogram", "train")
    backend = None
    if pass_k:
        if warning := embedded_warning(judge_opts.model):
            console.print(f"[yellow]{warning}[/]")
        try:
            backend = judge_opts.backend_options().build()
        except (ImportError, ValueError, OSError) as e:
            raise fail(str(e)) from None
    logging.getLogger("cerm.train").setLevel(logging.INFO)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(judge_opts.cache or out / "judge-cache.sqlite")
    try:
        result = run_curate(inputs, out, cfg, backend=backend, store=store, judge_config=judge_opts.config())
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise fail(str(e)) from None
    finally:
        if backend is not None:
            backend.close()
    table = Table(title=f"cerm curate -> {out}")
    for col in ("step", "removed", "remaining"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for s in result.steps:
        table.add_row(s.step, str(s.removed), str(s.remaining))
    stdout.print(table)
    stdout.print(f"domains: train {result.report['domains']['train']}, held-out {result.report['domains']['heldout']}")
    for w in result.report["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    if result.problems:
        console.print(f"[yellow]{len(result.problems)} bad input rows listed in {out / 'invalid.jsonl'}; first: "
                      f"{result.problems[0]}[/]")
    stdout.print(f"[bold green]done[/]: {len(result.train)} train, {len(result.heldout)} held-out pairs; "
                  f"report {out / 'report.json'}"
              + (f", histogram {out / 'pass_rate_hist.png'}" if (out / "pass_rate_hist.png").exists() else ""))


@with_judge_options
def distill(
    judge_opts: JudgeOptions,
    pairs_file: Annotated[Path, typer.Argument(help="curated pairs (e.g. OUT/train.jsonl from `cerm curate`)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="SFT rows JSONL (appended; reruns resume)")],
    min_margin: Annotated[float, typer.Option(help="keep a pair iff score(chosen) - score(rejected) > this")] = 0.0,
    chunk_pairs: Annotated[int, typer.Option(help="pairs per teacher batch (flushed after each)")] = 64,
    limit: Annotated[int | None, typer.Option(help="only the first N pairs")] = None,
    skip_bad: Annotated[bool, typer.Option(help="skip malformed pairs (reported) instead of stopping")] = False,
) -> None:
    """Teacher traces for SFT: criteria + one evaluation per response, kept when they order the pair right.

    Use a strong teacher, e.g. --backend openai --base-url http://host:8000/v1 --model NAME.
    """
    from cerm.train.pairs import load_pairs
    from cerm.train.sft.distill import DistillConfig
    from cerm.train.sft.distill import distill as run_distill

    try:
        cfg = DistillConfig(min_margin=min_margin, chunk_pairs=chunk_pairs)
        loaded = load_pairs(pairs_file)
    except (ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    if loaded.problems:
        for p in loaded.problems[:20]:
            console.print(f"[red]{escape(str(p))}[/]")
        if not skip_bad:
            raise fail(f"{len(loaded.problems)} bad row(s) in {pairs_file}; fix them or pass --skip-bad.")
    pairs = loaded.pairs[:limit] if limit is not None else loaded.pairs
    if not pairs:
        raise fail(f"{pairs_file}: no valid pairs.")
    judge = judge_opts.make_judge()
    if warning := embedded_warning(judge_opts.model):
        console.print(f"[yellow]{warning}[/]")
    logging.getLogger("cerm.train").setLevel(logging.INFO)
    try:
        result = run_distill(pairs, judge, output, cfg)
    except ValueError as e:
        raise fail(str(e)) from None
    finally:
        judge.backend.close()
    failed = sum(n for reason, n in result.rejected.items() if reason.endswith(_FAILED))
    colour = "bold red" if failed else "bold green"
    stdout.print(f"[{colour}]done[/]: {result.kept} of {result.judged} pairs kept ({2 * result.kept} rows) "
                  f"-> {output}; {result.skipped} already done; rejected {result.rejected or 'none'} "
                  f"(see {output}.rejected.jsonl, {output}.summary.json)")
    if failed:  # the teacher failed, which is no verdict on the pair: the run did not do its work
        raise fail(f"{failed} of {result.judged} pairs failed in the teacher backend (not judged); rerun to "
                   "retry them (finished pairs are kept).", code=1)


# rejection reasons that are backend failures, not the teacher's verdict (see cerm.train.sft.distill)
_FAILED = ("_error", "_backend_error")
