"""RM-Bench (THU-KEG/RM-Bench): 3 chosen × 3 rejected responses per prompt in three styles.

Styles are ordered [concise, detailed plain, detailed markdown]. The official ``compute_accuracy``
builds one 3×3 matrix of strict ``chosen[i] > rejected[j]`` per domain; the safety domain pools both
safety files into one matrix. Failed scores make their comparisons wrong (ours [R]; upstream has none).
The domain comes from the file name (these files have no ``domain`` field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cerm.bench.common import BenchItem, Benchmark, Outcome, Row, first_present
from cerm.bench.metrics import mean, rm_bench_levels, rm_bench_matrix

NAME = "rm-bench"
DOMAINS = ("chat", "code", "math", "safety")
STYLES = ("concise", "detailed_plain", "detailed_markdown")
# file stem → subset; safety keeps its two files apart for selection but pools them in the metric
_FILES = {"chat_filtered": "chat", "code_filtered": "code", "math_filtered": "math",
          "safety-refuse_filtered": "safety/refuse", "safety-response_filtered": "safety/response"}
_TOTAL_DOMAINS = {"chat": "chat", "code": "code", "math": "math", "safety-refuse": "safety/refuse",
                  "safety-response": "safety/response"}


def parse(rows: Iterable[Row], source: str) -> list[BenchItem]:
    """RM-Bench rows as 3x3 items (three chosen, three rejected styles), the domain from the file name."""
    stem = Path(source).stem
    if stem not in _FILES and stem != "total_dataset":
        raise ValueError(f"{source}: unknown RM-Bench file; expected one of "
                         f"{', '.join(sorted(_FILES))}.json or total_dataset.json (the domain comes from the name).")
    items = []
    for row in rows:
        if stem == "total_dataset":
            domain = row.str("domain")
            if domain not in _TOTAL_DOMAINS:
                raise row.error("domain", f"unknown domain {domain!r}; expected {', '.join(_TOTAL_DOMAINS)}.")
            subset = _TOTAL_DOMAINS[domain]
        else:
            subset = _FILES[stem]
        chosen = row.str_list("chosen", length=3)
        rejected = row.str_list("rejected", length=3)
        raw_id = row.get("id", (int, str))
        items.append(BenchItem(
            id=f"{subset.replace('/', '-')}:{raw_id}", benchmark=NAME, subset=subset, prompt=row.str("prompt"),
            candidates=tuple(chosen + rejected), correct=(0, 1, 2),
            roles=tuple(f"{kind}[{s}]" for kind in ("chosen", "rejected") for s in STYLES), mode="ratings",
            meta={"source_subset": row.str("subset")}, where=row.where))
    return items


def aggregate(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Per-domain score, hard/normal/easy; "overall" only when all four domains (with Math) are present."""
    by: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by.setdefault(o.subset.split("/")[0], []).append(o)
    out: dict[str, float] = {}
    levels: dict[str, dict[str, float]] = {}
    for domain in [d for d in DOMAINS if d in by]:
        os_ = by[domain]
        matrix = rm_bench_matrix([o.scores[:3] for o in os_], [o.scores[3:] for o in os_])
        levels[domain] = rm_bench_levels(matrix)
        out[domain] = mean([v for row in matrix for v in row])
        for level, v in levels[domain].items():
            out[f"{domain}/{level}"] = v
    if not levels:
        return out
    # never call a Math-less average "overall" (docs/benchmarks.md, RM-Bench): name the domains it covers
    tag = "overall" if set(levels) == set(DOMAINS) else f"mean[{'+'.join(levels)}]"
    out[tag] = mean([out[d] for d in levels])
    for level in ("hard", "normal", "easy"):
        out[f"{tag}/{level}"] = mean([lv[level] for lv in levels.values()])
    return out


def headline(metrics: Mapping[str, float]) -> str:
    """The headline metric: ``mean[chat+code+safety]`` (never "Overall": Math is not included)."""
    return first_present(metrics, ["overall"] + sorted(k for k in metrics if k.startswith("mean[") and "/" not in k))


BENCHMARK = Benchmark(
    name=NAME, title="RM-Bench", parse=parse, aggregate=aggregate, headline=headline,
    subsets=("chat", "code", "math", "safety", "safety/refuse", "safety/response"),
    local_dir="rm-bench", file_glob="*.json",
    notes=("The local copy lacks math_filtered.json: the average covers chat+code+safety only and is "
           "NOT the leaderboard Overall (which includes Math).",
           "Safety pools safety-refuse and safety-response into one 3x3 matrix, as upstream.",
           "Strict '>': ties are wrong; a failed score makes its comparisons wrong [R]."),
)
