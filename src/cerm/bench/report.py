"""``report.md`` with matplotlib plots: score histograms, tie rate per subset, metric bars with CIs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_BARS = 40


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(m: dict[str, Any]) -> str:
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return "–"
    return f"[{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"


def scorer_label(summary: dict[str, Any]) -> str:
    """The scorer as a report names it: model and decoding, or the baseline; scripted runs are marked."""
    s = summary.get("scorer", {})
    if s.get("kind") == "judge":
        k = s.get("config", {}).get("samples", 1)
        scripted = " [SCRIPTED fake backend, not a judge]" if str(s["model"]).startswith("fake:") else ""
        return f"{s['model']}" + (f" (k={k} sampled evaluations)" if k > 1 else " (greedy)") + scripted
    return s.get("name", s.get("kind", "?"))


def _bar_keys(keys: Sequence[str], limit: int = MAX_BARS) -> list[str]:
    """The shallowest keys (fewest '/'), as many depth levels as fit in ``limit`` bars."""
    keep: list[str] = []
    for depth in sorted({k.count("/") for k in keys}):
        level = [k for k in keys if k.count("/") == depth]
        if keep and len(keep) + len(level) > limit:
            break
        keep.extend(level[: limit - len(keep)])
    return keep


def rate_groups(summary: dict[str, Any]) -> list[str]:
    """Subset groups for the rates table/plot: the item subsets, or shallower prefixes when there are many."""
    groups = [g for g in summary["groups"] if g != "all"]
    return _bar_keys(groups)


PLOTS_SKIPPED = "Plots skipped: matplotlib is not installed (pip install 'cerm[bench]'); rerun the command to add them."


def _plots(out: Path, summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> list[tuple[str, str]] | None:
    """The plots made (title, path), or None without matplotlib: the report is written all the same."""
    try:
        import matplotlib
    except ImportError:
        logger.info("%s", PLOTS_SKIPPED)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    made = []
    good = [c["score"] for r in records for c in r["candidates"] if c["is_correct"] and c["score"] is not None]
    bad = [c["score"] for r in records for c in r["candidates"] if not c["is_correct"] and c["score"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    values = good + bad
    on_grid = values and all(0 <= v <= 10 and (2 * v).is_integer() for v in values)
    bins = [x / 2 - 0.25 for x in range(22)] if on_grid else 30
    scorer = summary.get("scorer", {})
    unit = scorer.get("unit")  # the length baseline scores characters, the cosine baseline a similarity
    ax.set_xlabel(f"score ({unit})" if unit else "score" if scorer.get("kind") != "baseline" else
                  f"{scorer.get('name', 'baseline')} score")
    ax.set_ylabel("candidates")
    ax.set_title(f"{summary['title']}: scores of chosen vs rejected")
    if values:
        ax.hist([good, bad], bins=bins, label=[f"chosen/correct (n={len(good)})",
                                               f"rejected/incorrect (n={len(bad)})"],
                color=["tab:green", "tab:red"], alpha=0.8)
        ax.legend()
    else:  # an empty axis would read as a plotting bug; say why there is nothing to draw
        n = sum(len(r["candidates"]) for r in records)
        ax.text(0.5, 0.5, f"no valid score among {n} candidates\n(every judgment failed to parse; see statuses)",
                ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(plots / "scores.png", dpi=100)
    plt.close(fig)
    made.append(("Score histogram, chosen vs rejected", "plots/scores.png"))

    groups = rate_groups(summary)
    rates = [summary["groups"][g]["tie_rate"] or 0.0 for g in groups]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(groups) + 1.5))
    ax.barh(groups, [100 * r for r in rates], color="tab:orange")
    ax.invert_yaxis()
    ax.set_xlabel("tie rate (% of correct-vs-incorrect comparisons)")
    ax.set_title("Tie rate per subset")
    fig.tight_layout()
    fig.savefig(plots / "tie_rate.png", dpi=100)
    plt.close(fig)
    made.append(("Tie rate per subset", "plots/tie_rate.png"))

    keys = _bar_keys(list(summary["metrics"]))
    vals = [summary["metrics"][k] for k in keys]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(keys) + 1.5))
    centers = [100 * (m["value"] or 0.0) for m in vals]
    err = [[max(0.0, c - 100 * m["ci_low"]) if m["ci_low"] is not None else 0.0 for c, m in zip(centers, vals)],
           [max(0.0, 100 * m["ci_high"] - c) if m["ci_high"] is not None else 0.0 for c, m in zip(centers, vals)]]
    ax.barh(keys, centers, xerr=err, color="tab:blue", capsize=2)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("official metric (%) with 95% bootstrap CI")
    ax.set_title(f"{summary['title']}: metrics per subset")
    fig.tight_layout()
    fig.savefig(plots / "accuracy.png", dpi=100)
    plt.close(fig)
    made.append(("Official metric per subset", "plots/accuracy.png"))
    return made


def headline_row(summary: dict[str, Any]) -> str:
    """One markdown row of the headline table for a run summary."""
    h = summary["headline"]
    return (f"| {scorer_label(summary)} | {h['key']} | {_pct(h['value'])} | {_ci(h)} | {_pct(summary['tie_rate'])} "
            f"| {_pct(summary['parse_failure_rate'])} | {summary['n_items']} |")


def _score_mode_lines(summary: dict[str, Any]) -> list[str]:
    """The expected-score run's two tie rates side by side, and its closed verdicts [R]."""
    rates = summary.get("tie_rates")
    if not rates:
        return []
    lines = [f"Scores ranked by the **expected score** at the box [R]. Tie rate: greedy {_pct(rates['greedy'])}% "
             f"vs expected {_pct(rates['expected'])}% (same comparisons)."]
    completed = summary["statuses"].get("completed", 0)
    if completed:
        lines.append(f"{completed} candidate(s) had no readable box and were closed by our closing text "
                     "(status `completed`, not `ok`).")
    return [*lines, ""]


def write_report(out: Path, summary: dict[str, Any], records: Sequence[dict[str, Any]],
                 baseline_rows: Sequence[dict[str, Any]] = ()) -> Path:
    """Render ``report.md`` (and its plots) from a summary and the per-item records."""
    out = Path(out)
    plots = _plots(out, summary, records)
    lines = [f"# {summary['title']}: {scorer_label(summary)}", ""]
    for w in summary.get("warnings", []):
        lines += [f"> **{w}**", ""]
    sel = summary.get("selection", {})
    lines += [
        f"- Data: {', '.join(summary.get('data', [])) or '–'}",
        f"- Selection: subsets {sel.get('subsets') or 'all'}, limit {sel.get('limit') or 'none'}, "
        f"seed {summary.get('seed')}",
        f"- Prompt version: `{summary.get('prompt_version')}` (multi-turn format `{summary.get('multi_turn_format')}`)",
        f"- Items: {summary['n_items']}, candidates: {summary['n_candidates']}",
        "",
        "## Headline",
        "",
        "| scorer | metric | value (%) | 95% CI | tie rate (%) | parse failures (%) | items |",
        "|---|---|---|---|---|---|---|",
        headline_row(summary),
        *(headline_row(b) for b in baseline_rows),
        "",
        "## Metrics",
        "",
        "| metric | value (%) | 95% CI |",
        "|---|---|---|",
        *(f"| {k} | {_pct(m['value'])} | {_ci(m)} |" for k, m in summary["metrics"].items()),
        "",
        "## Ties and parse failures",
        "",
        "| subset | items | tie rate (%) | parse failures (%) |",
        "|---|---|---|---|",
        *(f"| {g} | {summary['groups'][g]['n_items']} | {_pct(summary['groups'][g]['tie_rate'])} | "
          f"{_pct(summary['groups'][g]['parse_failure_rate'])} |" for g in ["all", *rate_groups(summary)]),
        "",
        f"Statuses: {', '.join(f'{k} {v}' for k, v in summary['statuses'].items())}.",
        "",
        *_score_mode_lines(summary),
        "## Cost",
        "",
        f"Per item: {summary['cost']['tokens_in_per_item'] or 0:.0f} tokens in, "
        f"{summary['cost']['tokens_out_per_item'] or 0:.0f} tokens out, "
        f"{summary['cost']['seconds_per_item'] or 0:.2f} s of generation (criteria counted once per item).",
        "",
        "## Notes",
        "",
        *(f"- {n}" for n in summary["notes"]),
        "- Tie rate: share of correct-vs-incorrect candidate comparisons with two valid, equal scores (ours).",
        "",
        "## Plots",
        "",
        *(f"![{title}]({path})\n" for title, path in plots or ()),
        *([PLOTS_SKIPPED, ""] if plots is None else []),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
