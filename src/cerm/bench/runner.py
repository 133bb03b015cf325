"""Run a scorer over benchmark items: chunked, resumable, flushed per item, then summary and report.

Output directory layout (``RunConfig.out_dir``):

- ``config.json``: benchmark, scorer description, data sources, selection; a rerun into the same
  directory must describe the same benchmark and scorer, or it is refused.
- ``items.jsonl``: one line per item, written and flushed as soon as the item is scored (schema in
  ``cerm.bench.records``). A rerun skips ids already present, except items that ended in a backend
  error (not a result: scored again); the judge's SQLite cache makes the items of an interrupted chunk
  cheap too. The file is locked while a run appends to it: a second run into it fails at once.
- ``summary.json``, ``report.md``, ``plots/*.png``: see ``cerm.bench.summary`` and ``cerm.bench.report``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cerm.backends.embedded import embedded_warning
from cerm.bench.common import BenchItem, Benchmark, Outcome
from cerm.bench.records import has_backend_error, item_record, outcome_from_record, read_records
from cerm.bench.summary import group_rates, summarize
from cerm.io import append_line, locked_append
from cerm.judge import Judge
from cerm.prompts import MULTI_TURN_FORMAT, PROMPT_VERSION
from cerm.types import Query, ScoredItem, ScoreMode

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    """Anything that scores (query, candidates) items; ``cerm.Judge`` and the baselines qualify."""

    def score_batch(self, items: Sequence[tuple[Query, Sequence[str]]]) -> list[ScoredItem]:
        """One ``ScoredItem`` per (query, responses) item, in order."""


@dataclass(frozen=True)
class RunConfig:
    """Where a run writes and how it batches.

    Args:
        out_dir: run directory (created).
        seed: seeds the bootstrap (selection is seeded by the caller through ``select_items``).
        chunk_size: items per ``score_batch`` call; all candidates of an item are in the same call.
            Larger chunks keep a pool of servers busy; smaller ones lose less work if killed.
        workers: chunks scored concurrently (threads); >1 overlaps one chunk's criteria phase with
            another's evaluations on remote backends. Keep 1 for in-process engines (hf, llamacpp).
        bootstrap: resamples for the 95% CIs (0 = no intervals).
    """

    out_dir: Path
    seed: int = 0
    chunk_size: int = 32
    workers: int = 1
    bootstrap: int = 1000
    selection: dict[str, Any] = field(default_factory=dict)  # recorded in config.json/summary.json

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size ({self.chunk_size}) must be >= 1.")
        if self.workers < 1:
            raise ValueError(f"workers ({self.workers}) must be >= 1.")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap ({self.bootstrap}) must be >= 0.")


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the summary dict (as written) and how much work was new."""

    out_dir: Path
    summary: dict[str, Any]
    n_scored: int  # items scored in this call
    n_resumed: int  # items found in items.jsonl and skipped
    n_backend_errors: int = 0  # items with a backend error: not results; a rerun scores them again


def describe_scorer(scorer: Scorer) -> dict[str, Any]:
    """The scorer's identity for config.json: model, prompt version and decoding for a ``Judge``."""
    if isinstance(scorer, Judge):
        return {"kind": "judge", "model": scorer.backend.model_id, "prompt_version": PROMPT_VERSION,
                "multi_turn_format": MULTI_TURN_FORMAT, "config": asdict(scorer.config)}
    return scorer.describe()  # type: ignore[attr-defined]


def scorer_stats(scorer: Scorer) -> dict[str, Any]:
    """The judge's counters (criteria, evaluations, cache hits, statuses); a baseline has none."""
    if isinstance(scorer, Judge):
        return scorer.stats.as_dict()
    return {}


def run_benchmark(bench: Benchmark, items: Sequence[BenchItem], scorer: Scorer, config: RunConfig, *,
                  sources: Sequence[str] = (), warnings: Sequence[str] = (),
                  baseline_rows: Sequence[dict[str, Any]] = (),
                  progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Score every item not yet in ``items.jsonl``, then write summary.json, report.md and plots.

    Args:
        bench: the benchmark (from ``BENCHMARKS``).
        items: the selected items, in benchmark order.
        scorer: a ``Judge`` or a baseline.
        config: output directory and batching.
        sources: data sources, recorded in the summary.
        warnings: shown at the top of the summary and report (e.g. ``EMBEDDED_WARNING``).
        baseline_rows: other runs' summaries, shown as rows of the report's headline table.
        progress: called with (items done, items total) after each chunk.
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = describe_scorer(scorer)
    _check_or_write_config(out, bench, info, sources, config)
    records_path = out / "items.jsonl"
    done = read_records(records_path)
    failed = [k for k, rec in done.items() if has_backend_error(rec)]
    if failed:  # a backend error is not a result: score those items again
        logger.warning("%s: %d item(s) in %s ended in backend errors; scoring them again", bench.name, len(failed),
                       records_path)
        for k in failed:
            del done[k]
        tmp = records_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()), encoding="utf-8")
        os.replace(tmp, records_path)
    wanted = {it.id for it in items}
    resumed = len(wanted & done.keys())
    pending = [it for it in items if it.id not in done]
    if resumed:
        logger.info("%s: resuming, %d of %d items already in %s", bench.name, resumed, len(items), records_path)
    started = time.time()
    samples = info.get("config", {}).get("samples", 1)
    chunks = [pending[i:i + config.chunk_size] for i in range(0, len(pending), config.chunk_size)]
    n_done = resumed
    with locked_append(records_path) as f:
        for chunk, scored in _score_chunks(scorer, chunks, config.workers):
            for it, s in zip(chunk, scored):
                rec = item_record(it, s, samples)
                append_line(f, json.dumps(rec, ensure_ascii=False))  # a killed run keeps every finished item
                done[it.id] = rec
            n_done += len(chunk)
            if progress:
                progress(n_done, len(items))
    records = [done[it.id] for it in items]
    score_mode: ScoreMode = "expected" if info.get("config", {}).get("expected_score") else "greedy"
    outcomes = [outcome_from_record(r, score_mode) for r in records]
    all_warnings = list(warnings)
    embedded = embedded_warning(info.get("model"))
    if embedded and embedded not in all_warnings:
        all_warnings.append(embedded)
    summary = summarize(bench, outcomes, records, n_resamples=config.bootstrap, seed=config.seed)
    summary["score_mode"] = score_mode
    if score_mode == "expected":  # both tie rates side by side, over the same comparisons [R]
        summary["tie_rates"] = {m: group_rates([outcome_from_record(r, m) for r in records])["all"]["tie_rate"]
                                for m in ("greedy", "expected")}
    summary.update({
        "scorer": info, "data": list(sources), "selection": config.selection, "seed": config.seed,
        "warnings": all_warnings, "prompt_version": PROMPT_VERSION, "multi_turn_format": MULTI_TURN_FORMAT,
        "run_stats": {**scorer_stats(scorer), "items_scored": len(pending), "items_resumed": resumed},
        "timing": {"wall_seconds": time.time() - started, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    from cerm.bench.report import write_report

    write_report(out, summary, records, baseline_rows)
    n_errors = sum(has_backend_error(r) for r in records)
    return RunResult(out, summary, len(pending), resumed, n_errors)


def _score_chunks(scorer: Scorer, chunks: list[list[BenchItem]], workers: int):
    """Yield (chunk, scored items) in chunk order; with workers > 1 later chunks run meanwhile."""
    def score(chunk: list[BenchItem]) -> list[ScoredItem]:
        scored = scorer.score_batch([(it.prompt, list(it.candidates)) for it in chunk])
        if len(scored) != len(chunk):
            raise RuntimeError(f"scorer returned {len(scored)} results for {len(chunk)} items.")
        return scored

    if workers == 1:
        for chunk in chunks:
            yield chunk, score(chunk)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # submit at most `workers` chunks ahead so a kill loses little and memory stays bounded
        futures = []
        for chunk in chunks:
            futures.append((chunk, pool.submit(score, chunk)))
            if len(futures) > workers:
                c, fut = futures.pop(0)
                yield c, fut.result()
        for c, fut in futures:
            yield c, fut.result()


def _check_or_write_config(out: Path, bench: Benchmark, info: dict[str, Any], sources: Sequence[str],
                           config: RunConfig) -> None:
    path = out / "config.json"
    fingerprint = {"benchmark": bench.name, "scorer": info}
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        now = json.loads(json.dumps(fingerprint))
        if old.get("fingerprint") != now:
            diffs = _differences(old.get("fingerprint") or {}, now)
            what = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in list(diffs.items())[:6])
            raise ValueError(f"{out} holds a run with other settings ({what or 'see ' + str(path)}); resuming "
                             "would mix results. Use a new --out directory, or the same flags as that run.")
    path.write_text(json.dumps({"fingerprint": fingerprint, "sources": list(sources), "selection": config.selection,
                                "seed": config.seed, "chunk_size": config.chunk_size, "workers": config.workers},
                               indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two JSON objects (``scorer.model``, ``scorer.config.seed``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(old.keys() | new.keys()):
            out.update(_differences(old.get(key), new.get(key), f"{prefix}{key}."))
        return out
    return {} if old == new else {prefix.rstrip("."): (old, new)}


def load_outcomes(run_dir: Path) -> tuple[dict[str, Any], list[Outcome]]:
    """A finished run's summary and its outcomes (in summary order), for ``bench compare``."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path} not found; is {run_dir} a finished `cerm bench run` directory?")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    records = read_records(run_dir / "items.jsonl")
    missing = [i for i in summary["item_ids"] if i not in records]
    if missing:
        raise ValueError(f"{run_dir}/items.jsonl lacks {len(missing)} items listed in summary.json "
                         f"(e.g. {missing[0]!r}); rerun the benchmark to complete it.")
    return summary, [outcome_from_record(records[i]) for i in summary["item_ids"]]
