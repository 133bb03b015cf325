"""The difficulty filter: how often the current judge orders a pair as labelled (docs/training.md §1 step 4).

The judge writes the criteria once (greedy, cached) and samples k evaluations of each response at
temperature 1. Every valid chosen sample is compared with every valid rejected sample (k x k comparisons,
all under the same criteria). Failed samples are left out of the comparisons and counted; a pair with no
valid comparison has no pass rate and is dropped as such, never given a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cerm.judge import Judge
from cerm.train.pairs import PreferencePair
from cerm.types import Judgment


@dataclass(frozen=True)
class PassRate:
    """Outcome of the k x k comparisons for one pair. ``rate`` is None when no comparison was valid."""

    rate: float | None
    wins: int
    ties: int
    losses: int
    failed_samples: int

    @property
    def comparisons(self) -> int:
        """Chosen-vs-rejected comparisons made."""
        return self.wins + self.ties + self.losses

    @property
    def is_all_tie(self) -> bool:
        """Whether every comparison was a tie."""
        return self.comparisons > 0 and self.ties == self.comparisons


def pass_rate(chosen: Sequence[float | None], rejected: Sequence[float | None], tie_credit: float) -> PassRate:
    """Share of (chosen sample, rejected sample) comparisons won by chosen; a tie earns ``tie_credit``."""
    good_c = [s for s in chosen if s is not None]
    good_r = [s for s in rejected if s is not None]
    failed = len(chosen) - len(good_c) + len(rejected) - len(good_r)
    wins = sum(c > r for c in good_c for r in good_r)
    ties = sum(c == r for c in good_c for r in good_r)
    total = len(good_c) * len(good_r)
    if total == 0:
        return PassRate(None, 0, 0, 0, failed)
    return PassRate((wins + tie_credit * ties) / total, wins, ties, total - wins - ties, failed)


def sample_scores(judgment: Judgment) -> list[float | None]:
    """Per-sample scores of one aggregated judgment (a single greedy judgment is its own sample)."""
    samples = judgment.samples or (judgment,)
    return [s.score for s in samples]


def judge_pass_rates(judge: Judge, pairs: Sequence[PreferencePair], tie_credit: float) -> list[PassRate]:
    """Score every pair's two responses with ``judge`` (configured with ``samples=k``) in one batch."""
    items = judge.score_batch([(p.prompt, [p.chosen, p.rejected]) for p in pairs])
    return [pass_rate(sample_scores(it.judgments[0]), sample_scores(it.judgments[1]), tie_credit) for it in items]
