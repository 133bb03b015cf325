"""The curation report: counts removed per step, domain mix, pass-rate statistics and histogram."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cerm.backends.embedded import embedded_warning
from cerm.judge import Judge
from cerm.prompts import PROMPT_VERSION
from cerm.train.curate.config import CurateConfig, StepCount
from cerm.train.curate.passrate import PassRate
from cerm.train.pairs import PreferencePair, RowProblem

logger = logging.getLogger(__name__)

HIST_BINS = 10
MAX_PROBLEMS_IN_REPORT = 50


def pass_rate_histogram(rates: Sequence[float], bins: int = HIST_BINS) -> list[int]:
    """Counts of pass rates in ``bins`` equal bins over [0, 1]; 1.0 falls in the last bin."""
    counts = [0] * bins
    for r in rates:
        counts[min(int(r * bins), bins - 1)] += 1
    return counts


def build_report(cfg: CurateConfig, sources: Sequence[str | Path], steps: Sequence[StepCount],
                 problems: Sequence[RowProblem], candidates: Mapping[str, int], train: Sequence[PreferencePair],
                 heldout: Sequence[PreferencePair], rates: Mapping[str, PassRate], judge: Judge | None,
                 all_tie_kept: int) -> dict[str, Any]:
    """Everything a reader needs to audit one curation run, as one JSON-ready dict."""
    valid = [r.rate for r in rates.values() if r.rate is not None]
    warnings = []
    if judge is not None and (embedded := embedded_warning(judge.backend.model_id)):
        warnings.append(embedded)
    if not cfg.decontaminate:
        warnings.append("no evaluation sets given for decontamination (--decontaminate); the curated pairs may "
                        "overlap benchmark prompts.")
    if len(train) < cfg.target_size:
        warnings.append(f"only {len(train)} training pairs for a target of {cfg.target_size}: not enough "
                        "candidates passed the filters.")
    return {
        "config": {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(cfg).items()},
        "sources": [str(s) for s in sources],
        "prompt_version": PROMPT_VERSION,
        "judge": None if judge is None else {"model": judge.backend.model_id, **judge.stats.as_dict()},
        "steps": [asdict(s) for s in steps],
        "invalid_rows": len(problems),
        "invalid_examples": [str(p) for p in problems[:MAX_PROBLEMS_IN_REPORT]],
        "domains": {"candidates": dict(sorted(candidates.items())),
                    "train": dict(sorted(Counter(p.domain for p in train).items())),
                    "heldout": dict(sorted(Counter(p.domain for p in heldout).items()))},
        "pass_rate": {
            "judged": len(rates),
            "no_valid_judgment": sum(r.rate is None for r in rates.values()),
            "failed_samples": sum(r.failed_samples for r in rates.values()),
            "all_tie": sum(r.is_all_tie for r in rates.values()),
            "all_tie_kept": all_tie_kept,
            "mean": sum(valid) / len(valid) if valid else None,
            "histogram": {"bins": HIST_BINS, "counts": pass_rate_histogram(valid)},
        },
        "train_size": len(train),
        "heldout_size": len(heldout),
        "warnings": warnings,
    }


def write_report(report: dict[str, Any], out: Path, rates: Mapping[str, PassRate], cfg: CurateConfig) -> None:
    """``report.json`` plus ``pass_rate_hist.png`` (the kept band shaded; skipped without matplotlib)."""
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        import matplotlib
    except ImportError:
        logger.info("pass_rate_hist.png skipped: matplotlib is not installed (pip install 'cerm[train]')")
        return
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    valid = [r.rate for r in rates.values() if r.rate is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(valid, bins=HIST_BINS, range=(0, 1), color="#4c72b0", edgecolor="white")
    ax.axvspan(cfg.min_pass_rate, cfg.max_pass_rate, color="#55a868", alpha=0.12, label="kept (open interval)")
    judge = report["judge"]["model"] if report["judge"] else "no judge"
    no_valid = report["pass_rate"]["no_valid_judgment"]
    ax.set_title(f"Pass rate, k={cfg.pass_k}: {len(valid)} pairs ({no_valid} without a valid judgment)",
                 fontsize=9)
    ax.set_xlabel(f"share of chosen-vs-rejected comparisons won (tie = {cfg.tie_credit})\njudge: {judge}",
                  fontsize=8)
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pass_rate_hist.png", dpi=110)
    plt.close(fig)
