"""JudgeBench (ScalerLab/JudgeBench): pairs of responses to hard objective questions, labelled A>B or B>A.

A pointwise judge is order-free, so each response is scored once: this is upstream's ``--single_game``
(both games would give the same verdict). Ties and failures are not correct; we do not copy upstream's
scalar-RM habit of mapping equal scores to ``B>A``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cerm.bench.common import BenchItem, Benchmark, Outcome, Row, first_present
from cerm.bench.metrics import judgebench_correct, judgebench_decision, mean

NAME = "judgebench"
CATEGORIES = ("Knowledge", "Reasoning", "Math", "Coding")


def category(source: str) -> str | None:
    """The paper's reporting category for a ``source`` value (utils/metrics.py groups)."""
    if source.startswith("mmlu-pro"):
        return "Knowledge"
    return {"livebench-reasoning": "Reasoning", "livebench-math": "Math", "livecodebench": "Coding"}.get(source)


def split_name(response_model: str) -> str:
    """Short split name from the response model (``gpt-4o-2024-05-13`` → ``gpt-4o``)."""
    for short in ("gpt-4o", "claude-3-5-sonnet"):
        if response_model.startswith(short):
            return short
    return response_model


def parse(rows: Iterable[Row], source: str) -> list[BenchItem]:
    items = []
    for row in rows:
        src = row.str("source")
        cat = category(src)
        if cat is None:
            raise row.error("source", f"unknown source {src!r}; expected mmlu-pro-*, livebench-reasoning, "
                                      "livebench-math or livecodebench.")
        label = row.str("label")
        if label not in ("A>B", "B>A"):
            raise row.error("label", f"expected 'A>B' or 'B>A', got {label!r}.")
        split = split_name(row.str("response_model"))
        items.append(BenchItem(
            id=f"{split}:{row.str('pair_id')}", benchmark=NAME, subset=f"{split}/{cat}",
            prompt=row.str("question"), candidates=(row.str("response_A"), row.str("response_B")),
            correct=(0,) if label == "A>B" else (1,), roles=("A", "B"), mode="pairwise",
            meta={"label": label, "source": src, "split": split}))
    return items


def aggregate(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Accuracy per split and category, per split overall, and over all pairs of every split loaded."""
    by: dict[str, list[bool]] = {}
    for o in outcomes:
        ok = judgebench_correct([judgebench_decision(o.scores[0], o.scores[1])], o.meta["label"])
        split, cat = o.subset.split("/", 1)
        for key in (f"{split}/overall", f"{split}/{cat}", "all/overall"):
            by.setdefault(key, []).append(ok)
    splits = {k.split("/")[0] for k in by if k != "all/overall"}
    if len(splits) < 2:
        by.pop("all/overall", None)  # identical to the one split's overall
    return {k: mean([float(x) for x in v]) for k, v in sorted(by.items())}


def headline(metrics: Mapping[str, float]) -> str:
    return first_present(metrics, ["gpt-4o/overall", "all/overall"] + sorted(k for k in metrics
                                                                           if k.endswith("/overall")))


BENCHMARK = Benchmark(
    name=NAME, title="JudgeBench", parse=parse, aggregate=aggregate, headline=headline,
    subsets=tuple(f"{s}/{c}" for s in ("gpt-4o", "claude-3-5-sonnet") for c in CATEGORIES),
    local_dir="judgebench", file_glob="*.jsonl",
    notes=("Single game: a pointwise judge scores each response once (upstream --single_game); ties and "
           "parse failures are not correct.",
           "Most papers report the gpt-4o split (350 pairs): that is the headline when present."),
)
