"""Per-role rewards of the two-stage rollout (spec/training.md §3.2). Every rule here is ours [R].

Under one criteria sample ``c_k`` there are J judgments of the chosen response (scores ``s+``) and J of the
rejected one (``s-``). A judgment is rewarded by how often it ranks the pair correctly against the other
side's judgments under the same criteria; the criteria sample by the pairwise accuracy it induces.

Conventions (all configurable through :class:`RewardConfig`):

- a tie earns ``tie_credit`` (default 0: strict ``>``, as RM-Bench/RMB/JudgeBench score ties);
- an invalid judgment (score None: no box, out of range, truncated...) earns ``format_penalty`` and is left
  out of its partners' comparisons; a valid judgment with no valid partner earns 0;
- a criteria sample with no valid comparison earns 0;
- ``mode="margin"`` (ablation) replaces the indicator by ``clip((s+ - s-) / 10, -1, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RewardConfig:
    mode: Literal["indicator", "margin"] = "indicator"
    tie_credit: float = 0.0
    format_penalty: float = -1.0

    def __post_init__(self) -> None:
        if self.mode not in ("indicator", "margin"):
            raise ValueError(f"reward mode {self.mode!r} must be 'indicator' or 'margin'.")


@dataclass(frozen=True)
class CriteriaRewards:
    """Rewards for one criteria sample and the 2J judgments made under it, plus comparison counts."""

    criteria: float
    chosen: tuple[float, ...]
    rejected: tuple[float, ...]
    num_comparisons: int  # (m, m') pairs with both scores valid
    num_wins: int  # of those, s+ > s-
    num_ties: int  # of those, s+ == s-


def credit(chosen_score: float, rejected_score: float, cfg: RewardConfig) -> float:
    """How well one (chosen, rejected) pair of valid scores is ranked: 1 right, 0 wrong, ties per config."""
    if cfg.mode == "margin":
        return max(-1.0, min(1.0, (chosen_score - rejected_score) / 10.0))
    if chosen_score > rejected_score:
        return 1.0
    return cfg.tie_credit if chosen_score == rejected_score else 0.0


def criteria_rewards(
    chosen_scores: Sequence[float | None], rejected_scores: Sequence[float | None], cfg: RewardConfig
) -> CriteriaRewards:
    """Rewards under one criteria sample from the overall scores of its chosen and rejected judgments."""
    # table[m][m'] = credit of (chosen judgment m, rejected judgment m'), None when either is invalid
    table = [[None if a is None or b is None else credit(a, b, cfg) for b in rejected_scores] for a in chosen_scores]
    chosen = tuple(_judgment_reward(row, score, cfg) for row, score in zip(table, chosen_scores, strict=True))
    columns = [[row[j] for row in table] for j in range(len(rejected_scores))]
    rejected = tuple(_judgment_reward(col, score, cfg) for col, score in zip(columns, rejected_scores, strict=True))
    valid = [c for row in table for c in row if c is not None]
    pairs = [(a, b) for a in chosen_scores for b in rejected_scores if a is not None and b is not None]
    return CriteriaRewards(
        criteria=sum(valid) / len(valid) if valid else 0.0,
        chosen=chosen,
        rejected=rejected,
        num_comparisons=len(pairs),
        num_wins=sum(a > b for a, b in pairs),
        num_ties=sum(a == b for a, b in pairs),
    )


def _judgment_reward(credits: list[float | None], score: float | None, cfg: RewardConfig) -> float:
    if score is None:
        return cfg.format_penalty
    valid = [c for c in credits if c is not None]
    return sum(valid) / len(valid) if valid else 0.0
