"""RMB (Zhou-Zoey/RMB-Reward-Model-Benchmark): pairwise and Best-of-N sets, helpfulness and harmlessness.

Pairwise: correct iff s(chosen) > s(reject). BoN: correct iff s(bon_best) > s(loser) for every loser.
Four micro-averages (Helpfulness/Harmlessness × Pairwise/BoN) and their mean, as in the RM-R1
re-implementation (RM-R1-UIUC/RM-R1, eval/RMB-Reward-Model-Benchmark); plus accuracy per category path.
Multi-turn conversations go in as message lists (rendered by ``cerm.prompts.render_query``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from cerm.bench.common import BenchItem, Benchmark, Outcome, Row, first_present
from cerm.bench.metrics import bon_correct, is_better, mean

NAME = "rmb"
GOALS = ("Helpfulness", "Harmlessness")
HEADLINE_KEYS = tuple(f"{g}-{k}" for k in ("Pairwise", "BoN") for g in GOALS)


def _answer(row: Row, name: str, value: object) -> str:
    if not isinstance(value, Mapping) or not isinstance(value.get("answer"), str):
        raise row.error(name, "expected {llm_name, answer: str}.")
    return value["answer"]


def parse(rows: Iterable[Row], source: str) -> list[BenchItem]:
    """RMB rows (Pairwise_set and BoN_set) as pairwise or best-of-N items with their category path."""
    items = []
    for row in rows:
        path = row.str("category_path")
        parts = path.split("/")
        if len(parts) < 2 or parts[0] not in ("Pairwise_set", "BoN_set") or parts[1] not in GOALS:
            raise row.error("category_path", f"expected 'Pairwise_set|BoN_set/Helpfulness|Harmlessness/...', "
                                             f"got {path!r}.")
        prompt = row.messages("conversation_input")
        if parts[0] == "Pairwise_set":
            uid = row.get("pair_uid", (str, int))
            cands: tuple[str, ...] = (_answer(row, "chosen", row.get("chosen", dict)),
                                      _answer(row, "reject", row.get("reject", dict)))
            roles: tuple[str, ...] = ("chosen", "reject")
            mode: Literal["pairwise", "bon"] = "pairwise"
            kind = "pair"
        else:
            uid = row.get("bon_uid", (str, int))
            losers = row.get("loser_list", list)
            if not losers:
                raise row.error("loser_list", "empty; a BoN item needs at least one loser.")
            cands = (_answer(row, "bon_best", row.get("bon_best", dict)),
                     *(_answer(row, f"loser_list[{i}]", v) for i, v in enumerate(losers)))
            roles = ("bon_best", *(f"loser[{i}]" for i in range(len(losers))))
            mode = "bon"
            kind = "bon"
        items.append(BenchItem(id=f"{kind}:{uid}", benchmark=NAME, subset=path, prompt=prompt,
                               candidates=cands, correct=(0,), roles=roles, mode=mode,
                               meta={"turns": len(prompt)}, where=row.where))
    return items


def is_correct(o: Outcome) -> bool:
    """Pairwise: chosen beats rejected; best-of-N: the best beats every loser."""
    return is_better(o.scores[0], o.scores[1]) if o.mode == "pairwise" else bon_correct(o.scores[0], o.scores[1:])


def aggregate(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """The four goal × set micro-averages, "overall" = their mean (when all four exist), per-path accuracy."""
    by: dict[str, list[float]] = {}
    for o in outcomes:
        ok = float(is_correct(o))
        kind, goal = o.subset.split("/")[:2]
        by.setdefault(f"{goal}-{'Pairwise' if kind == 'Pairwise_set' else 'BoN'}", []).append(ok)
        by.setdefault(o.subset, []).append(ok)
    out = {k: mean(v) for k, v in sorted(by.items())}
    present = [k for k in HEADLINE_KEYS if k in out]
    if present:
        out["overall" if len(present) == 4 else f"mean[{'+'.join(present)}]"] = mean([out[k] for k in present])
    return out


def headline(metrics: Mapping[str, float]) -> str:
    """The headline metric: the overall score."""
    return first_present(metrics, ["overall"] + [k for k in metrics if k.startswith("mean[")])


BENCHMARK = Benchmark(
    name=NAME, title="RMB", parse=parse, aggregate=aggregate, headline=headline,
    subsets=tuple(f"{s}/{g}" for s in ("Pairwise_set", "BoN_set") for g in GOALS),
    local_dir="rmb", file_glob="*.json",
    notes=("Local pairwise files miss Harmlessness/S11, Helpfulness/Brainstorming/Idea Development and "
           "Helpfulness/Generation/Creative Writing: pairwise numbers are not comparable with published ones.",
           "Overall = mean of the 4 goal x set micro-averages (RM-R1 re-implementation); the official repo "
           "scores pairwise files only.",
           "Strict '>': ties and parse failures are wrong; BoN needs the best above every loser."),
)
