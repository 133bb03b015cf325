"""PPE, Preference Proxy Evaluations (lmarena, arXiv 2410.14872): human preference and correctness sets.

Our choices, all [R] because lmarena/PPE's aggregation code was not verified (docs/benchmarks.md §6):
- Preference: rows whose ``winner`` is a tie are dropped at load (their count is logged); accuracy is strict ``>`` on decisive pairs, judge ties and failures wrong.
- Correctness: per prompt, the share of (correct, incorrect) response pairs ranked right (strict),
  averaged over prompts that have both kinds; the headline averages the 5 sets. Best-of-K is the exact
  expected correctness of the top-scored of K random responses (ties at the top broken uniformly).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cerm.bench.common import BenchItem, Benchmark, HFSource, Outcome, Row, first_present
from cerm.bench.metrics import correct_pair_accuracy, expected_best_of_k, is_better, mean

logger = logging.getLogger(__name__)

NAME = "ppe"
PREFERENCE = "human-preference"
CORRECTNESS_SETS = ("MMLU-Pro", "MATH", "GPQA", "IFEval", "MBPP-Plus")
BEST_OF_K = (2, 4, 8, 16, 32)
DECISIVE = {"model_a": 0, "model_b": 1}


def _correctness_set(source: str) -> str:
    """The correctness set named in an HF id or file name, e.g. ``lmarena-ai/PPE-MMLU-Pro-Best-of-K``."""
    name = Path(source).name.lower()
    for s in sorted(CORRECTNESS_SETS, key=len, reverse=True):
        if s.lower() in name:
            return s
    return Path(source).stem


def _prompt(row: Row) -> str | list:
    value = row.data.get("prompt")
    return row.messages("prompt") if isinstance(value, list) else row.str("prompt")


def parse(rows: Iterable[Row], source: str) -> list[BenchItem]:
    """PPE rows (human preference pairs, correctness best-of-K sets) as benchmark items."""
    items = []
    dropped = 0
    for row in rows:
        qid = str(row.get("question_id", (str, int)))
        if "winner" in row.data:
            winner = row.str("winner")
            if winner not in DECISIVE:
                if "tie" not in winner:
                    raise row.error("winner", f"expected model_a, model_b or a tie value, got {winner!r}.")
                dropped += 1
                continue
            items.append(BenchItem(
                id=f"pref:{qid}", benchmark=NAME, subset=PREFERENCE, prompt=_prompt(row),
                candidates=(row.str("response_1"), row.str("response_2")), correct=(DECISIVE[winner],),
                roles=("response_1", "response_2"), mode="pairwise",
                meta={"language": row.data.get("language")}, where=row.where))
            continue
        labels = row.get("scores", (list, tuple))
        k = len(labels)
        if k < 2 or any(not isinstance(x, bool) for x in labels):
            raise row.error("scores", "expected a list of at least 2 booleans (per-response correctness).")
        names = [f"response_{i}" for i in range(1, k + 1)]
        missing = [n for n in names if n not in row.data]
        if missing or any(re.fullmatch(r"response_\d+", key) and key not in names for key in row.data):
            raise row.error(missing[0] if missing else "scores",
                            f"scores has {k} labels but the response_N columns do not match.")
        set_name = _correctness_set(source)
        items.append(BenchItem(
            id=f"{set_name}:{qid}", benchmark=NAME, subset=f"correctness/{set_name}", prompt=_prompt(row),
            candidates=tuple(row.str(n) for n in names), correct=tuple(i for i, x in enumerate(labels) if x),
            roles=tuple(names), mode="ratings", where=row.where))
    if dropped:
        logger.info("%s: dropped %d preference rows with a tie winner (PPE accuracy uses decisive pairs) [R]",
                    source, dropped)
    return items


def aggregate(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Preference accuracy; per correctness set the pair accuracy and best-of-K; their mean."""
    pref: list[float] = []
    pair_acc: dict[str, list[float]] = {}
    bok: dict[str, dict[int, list[float]]] = {}
    for o in outcomes:
        if o.subset == PREFERENCE:
            w = o.correct[0]
            pref.append(float(is_better(o.scores[w], o.scores[1 - w])))
            continue
        labels = [i in o.correct for i in range(len(o.scores))]
        acc = correct_pair_accuracy(o.scores, labels)
        if acc is not None:
            pair_acc.setdefault(o.subset, []).append(acc)
        for k in BEST_OF_K:
            if k <= len(o.scores):
                bok.setdefault(o.subset, {}).setdefault(k, []).append(expected_best_of_k(o.scores, labels, k))
    out: dict[str, float] = {}
    if pref:
        out[PREFERENCE] = mean(pref)
    for subset in sorted(set(pair_acc) | set(bok)):
        if subset in pair_acc:
            out[f"{subset}/accuracy"] = mean(pair_acc[subset])
        for k, v in sorted(bok.get(subset, {}).items()):
            out[f"{subset}/best_of_{k}"] = mean(v)
    accs = [v for k, v in out.items() if k.endswith("/accuracy")]
    if accs:
        n = len(accs)
        out["correctness/accuracy" if n == len(CORRECTNESS_SETS) else f"correctness/mean[{n} sets]"] = mean(accs)
    return out


def headline(metrics: Mapping[str, float]) -> str:
    """The headline metric: correctness accuracy, else their mean, else human preference."""
    return first_present(metrics, ["correctness/accuracy"] + [k for k in metrics if k.startswith(
        "correctness/mean[")] + [PREFERENCE])


BENCHMARK = Benchmark(
    name=NAME, title="PPE", parse=parse, aggregate=aggregate, headline=headline,
    subsets=(PREFERENCE, *(f"correctness/{s}" for s in CORRECTNESS_SETS)), local_dir="ppe", file_glob="*",
    hf=(HFSource("lmarena-ai/PPE-Human-Preference-V1", "test", PREFERENCE),
        *(HFSource(f"lmarena-ai/PPE-{s}-Best-of-K", "train", f"correctness/{s}") for s in CORRECTNESS_SETS)),
    notes=("PPE aggregation not verified against lmarena/PPE: preference drops tie-winner rows and counts "
           "judge ties as wrong; correctness accuracy = per-prompt share of correct-vs-incorrect pairs "
           "ranked right, averaged over prompts and then over the 5 sets [R].",
           "Best-of-K = exact expected correctness of the top-scored of K random responses, ties at the "
           "top broken uniformly; failed scores rank last [R]."),
)
