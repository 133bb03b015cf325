"""JudgeBench (ScalerLab/JudgeBench): pairs of responses to hard objective questions, labelled A>B or B>A.

Both of upstream's protocols (ScalerLab/JudgeBench ``run_judge.py`` for reward models), from one score per
response (a pointwise judge is order-free, so the swapped game needs no second judgment):

- default, two games (the unprefixed metrics, and the headline): the pair is judged in both orders and is
  correct iff more verdicts agree with the label than contradict it; equal scores give one verdict each
  way, so a tie nets to wrong.
- ``--single_game`` (metrics prefixed ``single_game/``): ``A>B if s_A > s_B else B>A``, so a tie counts as
  B>A. For a judge with many ties the two differ by up to half the tie rate.

A failed score is never correct under either protocol (ours [R]).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cerm.bench.common import BenchItem, Benchmark, Outcome, Row, first_present
from cerm.bench.metrics import judgebench_correct, judgebench_decision, judgebench_single_game_decision, mean

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
    """JudgeBench rows (both response-model files) as pairwise items, one per pair_id."""
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
            meta={"label": label, "source": src, "split": split}, where=row.where))
    return items


def aggregate(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Accuracy per split and category, per split overall, and over all pairs of every split loaded, under
    the two-game protocol (unprefixed) and the single-game one (``single_game/...``).
    """
    by: dict[str, list[bool]] = {}
    for o in outcomes:
        sa, sb = o.scores[0], o.scores[1]
        two_games = judgebench_correct([judgebench_decision(sa, sb)], o.meta["label"])
        single_game = judgebench_single_game_decision(sa, sb) == o.meta["label"]
        split, cat = o.subset.split("/", 1)
        for key in (f"{split}/overall", f"{split}/{cat}", "all/overall"):
            by.setdefault(key, []).append(two_games)
            by.setdefault(f"single_game/{key}", []).append(single_game)
    splits = {o.subset.split("/", 1)[0] for o in outcomes}
    if len(splits) < 2:  # identical to the one split's overall
        by.pop("all/overall", None)
        by.pop("single_game/all/overall", None)
    return {k: mean([float(x) for x in v]) for k, v in sorted(by.items())}


def headline(metrics: Mapping[str, float]) -> str:
    """The headline metric: gpt-4o overall (the paper's number), else all overall."""
    return first_present(metrics, ["gpt-4o/overall", "all/overall"] + sorted(k for k in metrics
                                                                           if k.endswith("/overall")))


BENCHMARK = Benchmark(
    name=NAME, title="JudgeBench", parse=parse, aggregate=aggregate, headline=headline,
    subsets=tuple(f"{s}/{c}" for s in ("gpt-4o", "claude-3-5-sonnet") for c in CATEGORIES),
    local_dir="judgebench", file_glob="*.jsonl",
    notes=("Protocol: upstream's default two games (a tie nets to wrong) unprefixed and in the headline; "
           "upstream's --single_game (a tie counts as B>A) under single_game/. One score per response serves "
           "both; parse failures are never correct [R].",
           "Most papers report the gpt-4o split (350 pairs): that is the headline when present."),
)
