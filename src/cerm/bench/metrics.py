"""Official benchmark metrics as pure functions over plain sequences (docs/benchmarks.md).

A score is a float or ``None`` (the judge failed). Each function applies its benchmark's own rule for
ties and failures; none of them turns a failure into a number silently: the rule is in the docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from math import comb
from typing import Literal

from cerm.metrics import Score, is_better
from cerm.metrics import pairwise_accuracy as pairwise_accuracy  # re-exported: the rule bench and RL share

# reward-bench's failed-rating sentinel (rewardbench/utils.py, RB2 ratings path): below every valid score
FAILED = -1.0


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence (an absent group, never a silent 0)."""
    return sum(values) / len(values) if values else math.nan


# ---- RewardBench 1 ---------------------------------------------------------------------------
def rb1_credit(chosen: Score, rejected: Score) -> float:
    """1 if chosen > rejected, 0 if rejected > chosen, 0.5 for a tie or a failed score (reward-bench)."""
    if chosen is None or rejected is None or chosen == rejected:
        return 0.5
    return 1.0 if chosen > rejected else 0.0


def section_scores(subset_accuracy: Mapping[str, float], example_counts: Mapping[str, int],
                   subset_mapping: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """reward-bench ``calculate_scores_per_section``: subset accuracies weighted by ``example_counts``.

    Unlike upstream (which reports 0), a section with no subset present is left out.
    """
    out = {}
    for section, subsets in subset_mapping.items():
        present = [s for s in subsets if s in subset_accuracy]
        total = sum(example_counts[s] for s in present)
        if total:
            out[section] = sum(subset_accuracy[s] * example_counts[s] for s in present) / total
    return out


# ---- RewardBench 2 ---------------------------------------------------------------------------
def best_of_n_credit(scores: Sequence[Score], chosen_index: int = 0, all_failed_credit: float = 0.25) -> float:
    """RB2 non-Ties ratings rule: 1/k if the chosen is among the k candidates with the top valid score.

    Failed scores are left out of the max; if every score failed, the credit is ``all_failed_credit``
    (reward-bench returns 0.25, "effectively a tie", for its 4-way items).
    """
    valid = [s for s in scores if s is not None]
    if not valid:
        return all_failed_credit
    top = max(valid)
    winners = [i for i, s in enumerate(scores) if s is not None and s == top]
    return (chosen_index in winners) / len(winners)


def prompt_stats(scores: Sequence[Score], num_correct: int) -> tuple[bool, float | None, float]:
    """reward-bench ``_compute_prompt_stats`` over ratings whose first ``num_correct`` are correct.

    Returns (accurate, spread between best and worst correct or None with one correct, worst correct
    minus best incorrect). Failed scores take the sentinel -1, as in reward-bench.
    """
    s = [FAILED if x is None else x for x in scores]
    correct, incorrect = s[:num_correct], s[num_correct:]
    if not correct or not incorrect:
        raise ValueError(f"a Ties prompt needs correct and incorrect answers (num_correct={num_correct}, "
                         f"{len(s)} scores).")
    spread = max(correct) - min(correct) if len(correct) > 1 else None
    margin = min(correct) - max(incorrect)
    return margin > 0, spread, margin


def ties_score(prompts: Sequence[tuple[str, int, Sequence[Score], int]]) -> float:
    """RB2 Ties subset score (reward-bench ``process_single_model``).

    Args:
        prompts: (kind "ref" or "tied", prompt number, scores, num_correct) per row.

    Returns:
        0.30·tied_acc + 0.30·ref_acc + 0.20·mean(m_tied > d) + 0.20·mean(min(m_ref, m_tied) > d)
        + 0.01·mean(tanh(min(m_ref, m_tied)/d − 1)), NaN terms set to 0, margins over prompt numbers
        that have both a ref and a tied row.
    """
    import numpy as np

    ref: dict[int, tuple[bool, float | None, float]] = {}
    tied: dict[int, tuple[bool, float | None, float]] = {}
    for kind, number, scores, num_correct in prompts:
        if kind not in ("ref", "tied"):
            raise ValueError(f"Ties row kind {kind!r} must be 'ref' or 'tied'.")
        (ref if kind == "ref" else tied)[number] = prompt_stats(scores, num_correct)
    ref_acc = float(np.mean([s[0] for s in ref.values()])) if ref else 0.0
    tied_acc = float(np.mean([s[0] for s in tied.values()])) if tied else 0.0
    both = sorted(set(ref) & set(tied))
    if both:
        d = np.array([tied[p][1] for p in both], dtype=float)  # a tied prompt with 1 correct gives NaN
        m_tied = np.array([tied[p][2] for p in both], dtype=float)
        m_hard = np.minimum(np.array([ref[p][2] for p in both], dtype=float), m_tied)
        preferred = float(np.mean(m_tied > d))
        preferred_hard = float(np.mean(m_hard > d))
        with np.errstate(divide="ignore", invalid="ignore"):
            margin = float(np.mean(np.nan_to_num(np.tanh(m_hard / d - 1), nan=0.0)))
    else:
        # upstream takes np.mean of empty arrays (NaN); we report the accuracy terms only
        preferred = preferred_hard = margin = 0.0
    return 0.30 * tied_acc + 0.30 * ref_acc + 0.20 * preferred + 0.20 * preferred_hard + 0.01 * margin


# ---- RM-Bench --------------------------------------------------------------------------------
def rm_bench_matrix(chosen: Sequence[Sequence[Score]], rejected: Sequence[Sequence[Score]]
                    ) -> list[list[float]]:
    """``M[i][j]`` = share of prompts with score(chosen[i]) > score(rejected[j]) (strict; failures wrong)."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError("need the same non-zero number of chosen and rejected score triples.")
    n = len(chosen)
    k = len(chosen[0])
    return [[sum(is_better(c[i], r[j]) for c, r in zip(chosen, rejected)) / n for j in range(k)]
            for i in range(k)]


def rm_bench_levels(matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """Hard = upper triangle (chosen plainer than rejected), normal = diagonal, easy = lower triangle."""
    k = len(matrix)
    upper = [matrix[i][j] for i in range(k) for j in range(k) if i < j]
    lower = [matrix[i][j] for i in range(k) for j in range(k) if i > j]
    return {"hard": mean(upper), "normal": mean([matrix[i][i] for i in range(k)]), "easy": mean(lower)}


# ---- JudgeBench ------------------------------------------------------------------------------
Decision = Literal["A>B", "B>A", "A=B"] | None


def judgebench_decision(score_a: Score, score_b: Score) -> Decision:
    """A pointwise verdict: strict comparison; equal scores tie, a failed score gives None."""
    if score_a is None or score_b is None:
        return None
    return "A>B" if score_a > score_b else "B>A" if score_b > score_a else "A=B"


def judgebench_single_game_decision(score_a: Score, score_b: Score) -> Decision:
    """Upstream's ``--single_game`` rule for reward models: ``A>B if s_A > s_B else B>A`` (a tie counts as
    B>A). A failed score gives None (ours [R]: upstream's reward models never fail to score).
    """
    if score_a is None or score_b is None:
        return None
    return "A>B" if score_a > score_b else "B>A"


def judgebench_correct(decisions: Sequence[Decision], label: str) -> bool:
    """JudgeBench ``compute_final_metrics``: #decisions == label − #decisions == flipped label > 0."""
    if label not in ("A>B", "B>A"):
        raise ValueError(f"JudgeBench label {label!r} must be 'A>B' or 'B>A'.")
    flipped = "B>A" if label == "A>B" else "A>B"
    return sum(d == label for d in decisions) - sum(d == flipped for d in decisions) > 0


# ---- RMB -------------------------------------------------------------------------------------
def bon_correct(best: Score, losers: Sequence[Score]) -> bool:
    """RMB Best-of-N: the best must score strictly above every loser."""
    return bool(losers) and all(is_better(best, s) for s in losers)


# ---- PPE -------------------------------------------------------------------------------------
def expected_best_of_k(scores: Sequence[Score], correct: Sequence[bool], k: int) -> float:
    """Expected correctness of the top-scored response among ``k`` drawn without replacement.

    Exact over all k-subsets, ties at the top broken uniformly. A failed score ranks below every
    valid one [R]. Given that the subset's top level is v, each response at level v is equally likely
    to be picked, so E = Σ_v P(top = v)·mean(correct at v).
    """
    n = len(scores)
    if len(correct) != n:
        raise ValueError(f"{len(scores)} scores but {len(correct)} correctness labels.")
    if not 1 <= k <= n:
        raise ValueError(f"k ({k}) must be in 1..{n}.")
    levels: dict[float, list[bool]] = {}
    for s, c in zip(scores, correct):
        levels.setdefault(-math.inf if s is None else s, []).append(bool(c))
    total, above = 0.0, 0
    for v in sorted(levels, reverse=True):
        at = levels[v]
        p_top = (comb(n - above, k) - comb(n - above - len(at), k)) / comb(n, k)
        total += p_top * sum(at) / len(at)
        above += len(at)
    return total


def correct_pair_accuracy(scores: Sequence[Score], correct: Sequence[bool]) -> float | None:
    """Share of (correct, incorrect) response pairs ranked right (strict; failures wrong) [R].

    None when the prompt has no such pair (all responses correct, or none).
    """
    good = [s for s, c in zip(scores, correct) if c]
    bad = [s for s, c in zip(scores, correct) if not c]
    if not good or not bad:
        return None
    return sum(is_better(g, b) for g in good for b in bad) / (len(good) * len(bad))


# ---- reporting -------------------------------------------------------------------------------
def decisive_comparisons(scores: Sequence[Score], correct: Sequence[int]) -> tuple[int, int]:
    """(number of correct-vs-incorrect candidate pairs, how many of them tie with two valid scores).

    Our tie rate [R] is the second over the first: the comparisons a benchmark decides on.
    """
    bad = [i for i in range(len(scores)) if i not in correct]
    pairs = [(scores[g], scores[b]) for g in correct for b in bad]
    return len(pairs), sum(a is not None and a == b for a, b in pairs)
