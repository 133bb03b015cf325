"""What the paper reports for CE-RM-4B, benchmark by benchmark, with its source, tag and protocol.

The values and tags are those of docs/benchmarks.md §8 (tags as in docs/protocol.md: [T] = the paper's value
read through a secondary source). ``metric`` names the key of our summary that measures the same quantity;
``cerm bench suite`` sets our headline beside the paper's value and says when the two are not comparable
(another metric key, a sample, another score mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PAPER_MODEL = "PKU-ONELab/CE-RM-4B"
AGGREGATOR = "a third-party aggregator of the paper's tables (docs/benchmarks.md §8)"
PAPER_BENCHMARKS = ("rewardbench2", "rm-bench", "judgebench", "ppe")  # the paper's table, in its order
EXTRA_BENCHMARKS = ("rmb", "rewardbench")
# the paper's Overall: 80.2, the mean of five (RB1's cell is garbled in the aggregator's table)
PAPER_OVERALL = 80.2


@dataclass(frozen=True)
class PaperValue:
    """One cell of the paper's table (``value`` in percent; None = not reported or not recovered)."""

    benchmark: str
    value: float | None
    metric: str  # our summary key for the same quantity
    tag: str  # docs/protocol.md tags: T, C or R
    source: str
    protocol: str
    also: tuple[str, ...] = ()  # our other keys worth showing beside it (another protocol of the same number)

    def as_dict(self) -> dict[str, Any]:
        """The reported value as a JSON-ready dict."""
        return {"value": self.value, "metric": self.metric, "tag": self.tag, "source": self.source,
                "protocol": self.protocol, "also": list(self.also)}


PAPER: dict[str, PaperValue] = {
    "rewardbench2": PaperValue(
        "rewardbench2", 76.3, "overall", "T", AGGREGATOR,
        "greedy; best-of-4 with 1/k credit for ties at the top, the Ties formula; mean of the 6 subsets"),
    "rm-bench": PaperValue(
        "rm-bench", 83.2, "overall", "T", AGGREGATOR,
        "greedy; strict '>' 3x3 matrix; mean of Chat, Code, Math and Safety"),
    "judgebench": PaperValue(
        "judgebench", 76.3, "gpt-4o/overall", "T", AGGREGATOR,
        "greedy; split and game protocol not stated (most papers: the gpt-4o split, 350 pairs)",
        also=("single_game/gpt-4o/overall",)),
    "ppe": PaperValue(
        "ppe", 75.0, "correctness/accuracy", "T", AGGREGATOR,
        "greedy; 'PPE Correctness', which PPE metric is not stated"),
    "rmb": PaperValue("rmb", None, "overall", "T", AGGREGATOR, "not reported or not recovered"),
    "rewardbench": PaperValue(
        "rewardbench", None, "overall", "T", AGGREGATOR,
        "garbled in the aggregator's table; about 90.2 if the Overall 80.2 is the plain mean of five "
        "(inferred, unconfirmed)"),
}


def comparability(paper: PaperValue, summary: Mapping[str, Any], n_available: int | None) -> list[str]:
    """Why our headline and the paper's value are not the same measurement (empty: they are).

    Args:
        paper: the paper's cell.
        summary: the benchmark run's summary.json.
        n_available: items the benchmark's data holds before ``--limit`` (None = unknown).
    """
    reasons = []
    key = (summary.get("headline") or {}).get("key")
    if paper.value is None:
        reasons.append("the paper's value is not recovered")
    if key != paper.metric:
        reasons.append(f"ours is {key!r}, the paper's is {paper.metric!r}")
    limit = (summary.get("selection") or {}).get("limit")
    n = summary.get("n_items")
    if limit is not None or (n_available is not None and n is not None and n < n_available):
        def num(x: int | None) -> str:
            return "?" if x is None else f"{x:,}"

        reasons.append(f"a sample of {num(n)} of {num(n_available)} items")
    if summary.get("score_mode", "greedy") != "greedy":
        reasons.append(f"ours uses the {summary.get('score_mode')} score [R], the paper greedy")
    model = (summary.get("scorer") or {}).get("model")
    if model is not None and PAPER_MODEL.split("/")[-1] not in str(model):
        reasons.append(f"another judge ({model})")
    return reasons
