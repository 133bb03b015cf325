"""RewardBench 2 (``allenai/reward-bench-2``, split ``test``): best-of-4 subsets plus the Ties subset.

Non-Ties: one chosen and three rejected are rated; credit is 1/k when the chosen is among the k
candidates with the top valid score, 0.25 when every rating failed. Ties: the first ``num_correct`` of
``chosen + rejected`` are correct and the subset score is reward-bench's ``process_single_model``
formula (failed ratings are the sentinel −1). Overall is the unweighted mean of the six subsets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cerm.bench.common import BenchItem, Benchmark, HFSource, Outcome, Row, first_present
from cerm.bench.metrics import best_of_n_credit, mean, ties_score

NAME = "rewardbench2"
SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")


def parse(rows: Iterable[Row], source: str) -> list[BenchItem]:
    """RewardBench 2 rows (one chosen, three rejected; Ties: several correct) as benchmark items."""
    items = []
    for row in rows:
        subset = row.str("subset")
        if subset not in SUBSETS:
            raise row.error("subset", f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}.")
        raw_id = str(row.get("id", (int, str)))
        chosen = row.str_list("chosen")
        rejected = row.str_list("rejected")
        meta: dict = {}
        if subset == "Ties":
            kind, _, number = raw_id.partition(":")
            if kind not in ("ref", "tied") or not number.isdigit():
                raise row.error("id", f"a Ties id must be 'ref:N' or 'tied:N', got {raw_id!r}.")
            num_correct = row.get("num_correct", int)
            if not 0 < num_correct < len(chosen) + len(rejected):
                raise row.error("num_correct", f"{num_correct} must leave correct and incorrect answers among "
                                               f"{len(chosen) + len(rejected)}.")
            correct = tuple(range(num_correct))
            meta = {"kind": kind, "number": int(number), "num_correct": num_correct}
        else:
            if len(chosen) != 1:
                raise row.error("chosen", f"a {subset} item has exactly 1 chosen answer, got {len(chosen)}.")
            correct = (0,)
        items.append(BenchItem(
            id=raw_id if subset == "Ties" else f"{subset}:{raw_id}", benchmark=NAME, subset=subset,
            prompt=row.str("prompt"), candidates=tuple(chosen + rejected), correct=correct,
            roles=tuple([f"chosen[{i}]" for i in range(len(chosen))] + [f"rejected[{i}]" for i in range(len(rejected))]),
            mode="ratings", meta=meta, where=row.where))
    return items


def aggregate(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Per-subset scores and "overall" (the mean of all six) when every subset is present."""
    credits: dict[str, list[float]] = {}
    ties = []
    for o in outcomes:
        if o.subset == "Ties":
            ties.append((o.meta["kind"], o.meta["number"], o.scores, o.meta["num_correct"]))
        else:
            credits.setdefault(o.subset, []).append(best_of_n_credit(o.scores, chosen_index=0))
    out = {s: mean(v) for s, v in credits.items()}
    if ties:
        out["Ties"] = ties_score(ties)
    out = {s: out[s] for s in SUBSETS if s in out}
    if len(out) == len(SUBSETS):
        out["overall"] = mean(list(out.values()))
    elif out:
        out[f"mean[{'+'.join(out)}]"] = mean(list(out.values()))
    return out


def headline(metrics: Mapping[str, float]) -> str:
    """The headline metric: the overall score."""
    return first_present(metrics, ["overall"] + [k for k in metrics if k.startswith("mean[")])


def cluster(o: Outcome) -> str:
    """A Ties prompt's ref and tied rows are resampled together (the margins pair them)."""
    return f"ties:{o.meta['number']}" if o.subset == "Ties" else o.id


BENCHMARK = Benchmark(
    name=NAME, title="RewardBench 2", parse=parse, aggregate=aggregate, headline=headline,
    subsets=SUBSETS, local_dir="reward-bench-2", file_glob="*", cluster=cluster,
    hf=(HFSource("allenai/reward-bench-2", "test"),),
    notes=("Best-of-4 with 1/k credit for a k-way tie at the top; 0.25 when all four ratings failed.",
           "Ties subset: reward-bench process_single_model formula; a failed rating is the sentinel -1.",
           "Overall = unweighted mean of the 6 subsets (RB2 paper)."),
)
