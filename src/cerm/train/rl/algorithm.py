"""The paper's RL maths in one place: role rewards, grouped advantages, the PPO-clip + KL loss.

Read top to bottom against the paper (arXiv 2601.20327, §3; docs/training.md): (1) per-role rewards of the
two-stage rollout, (2) group-normalised advantages over three groups, (3) the clipped surrogate with a k3
KL to the frozen reference. Every function is small and pure; torch is imported only by the loss.

**Rewards** (every rule ours [R]). Under one criteria sample ``c_k`` there are J judgments of the chosen
response (scores ``s+``) and J of the rejected one (``s-``). A judgment is rewarded by how often it ranks
the pair correctly against the other side's judgments under the same criteria; the criteria sample by the
pairwise accuracy it induces. Conventions (all configurable through :class:`RoleRewardConfig`):

- a tie earns ``tie_credit`` (default 0: strict ``>``, as RM-Bench/RMB/JudgeBench score ties);
- an invalid judgment (score None: no box, out of range, truncated...) earns ``format_penalty`` and is left
  out of its partners' comparisons; a valid judgment with no valid partner earns 0;
- a criteria sample with no valid comparison earns 0;
- ``mode="margin"`` (ablation) replaces the indicator by ``clip((s+ - s-) / 10, -1, 1)``.

**Advantages** (group names the paper's, the maths ours [R]).
``A_i = (r_i - mean_G) / (std_G + 1e-6)`` with the population std; a group whose rewards are all equal
gets ``A = 0`` throughout (nothing to learn from it). The advantage is broadcast to every generated token
of its trajectory by the loss. Groupings per preference pair:

- ``three_group`` (default): criteria (C) / chosen judgments (C*J) / rejected judgments (C*J). The judgment
  groups knowingly mix trajectories conditioned on different criteria samples.
- ``single_group``: all C + 2CJ trajectories of the pair in one group: plain GRPO, the ablation.
- ``per_criteria``: criteria (C), then one group per (criteria sample, side) of J judgments: the vanilla-GRPO
  reading where every group shares its exact prompt (tiny groups; ablation).

**Loss** [R]: token-mean within a trajectory, then mean over trajectories; KL to the frozen reference uses
the k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` inside the loss (GRPO-style), not in the reward.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from cerm.train.rl.rollout import PairRollout, Trajectory


# (1) rewards per role under one criteria sample

@dataclass(frozen=True)
class RoleRewardConfig:
    """How a judgment and a criteria sample are rewarded (docs/training.md §3.2) [R]."""

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


def credit(chosen_score: float, rejected_score: float, cfg: RoleRewardConfig) -> float:
    """How well one (chosen, rejected) pair of valid scores is ranked: 1 right, 0 wrong, ties per config."""
    if cfg.mode == "margin":
        return max(-1.0, min(1.0, (chosen_score - rejected_score) / 10.0))
    if chosen_score > rejected_score:
        return 1.0
    return cfg.tie_credit if chosen_score == rejected_score else 0.0


def criteria_rewards(
    chosen_scores: Sequence[float | None], rejected_scores: Sequence[float | None], cfg: RoleRewardConfig
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


def _judgment_reward(credits: list[float | None], score: float | None, cfg: RoleRewardConfig) -> float:
    if score is None:
        return cfg.format_penalty
    valid = [c for c in credits if c is not None]
    return sum(valid) / len(valid) if valid else 0.0


# (2) group-normalised advantages

Role = Literal["criteria", "chosen", "rejected"]
EPS = 1e-6


def group_key(pair_index: int, role: Role, criteria_index: int, grouping: str) -> tuple[Hashable, ...]:
    """The advantage group of one trajectory: ``(instance, role)`` and its variants."""
    if grouping == "three_group":
        return (pair_index, role)
    if grouping == "single_group":
        return (pair_index,)
    if grouping == "per_criteria":
        return (pair_index, role) if role == "criteria" else (pair_index, role, criteria_index)
    raise ValueError(f"advantage grouping {grouping!r} must be three_group, single_group or per_criteria.")


def normalize_in_groups(rewards: Sequence[float], keys: Sequence[Hashable]) -> list[float]:
    """Standardise each reward within the group named by its key."""
    if len(rewards) != len(keys):
        raise ValueError(f"{len(rewards)} rewards but {len(keys)} group keys.")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    advantages = [0.0] * len(rewards)
    for idx in members.values():
        values = [rewards[i] for i in idx]
        if max(values) == min(values):  # exact test: a float std of equal values can be 1e-17, not 0
            continue
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        for i in idx:
            advantages[i] = (rewards[i] - mean) / (std + EPS)
    return advantages


# (1) + (2) over a batch of pair rollouts

@dataclass(frozen=True)
class ScoredTrajectories:
    """A rollout's trajectories with their rewards and advantages, and what the rewards came from."""

    trajectories: list[Trajectory]
    rewards: list[float]
    advantages: list[float]


def score_pair_rollouts(rollouts: Sequence[PairRollout], reward_cfg: RoleRewardConfig, grouping: str) -> ScoredTrajectories:
    """Rewards per role under each criteria sample, then advantages normalised within each group."""
    trajectories, rewards = [], []
    for r in rollouts:
        for k, crit in enumerate(r.criteria):
            cr = criteria_rewards(r.scores("chosen", k), r.scores("rejected", k), reward_cfg)
            chosen = [t for t in r.chosen if t.criteria_index == k]
            rejected = [t for t in r.rejected if t.criteria_index == k]
            trajectories += [crit, *chosen, *rejected]
            rewards += [cr.criteria, *cr.chosen, *cr.rejected]
    keys = [group_key(t.pair_index, t.role, t.criteria_index, grouping) for t in trajectories]
    return ScoredTrajectories(trajectories, rewards, normalize_in_groups(rewards, keys))


# (3) the PPO-clip + KL loss

@dataclass(frozen=True)
class LossOutput:
    """The PPO-clip + KL loss of one micro-batch and what it is made of."""

    loss: torch.Tensor  # scalar, differentiable
    policy_loss: float
    kl: float  # mean k3 KL to the reference (trajectory-averaged)
    clip_fraction: float  # share of generated tokens whose ratio was clipped
    ratio_mean: float


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
) -> LossOutput:
    """PPO-clip surrogate with the advantage broadcast over each trajectory's tokens.

    Args:
        logprobs: (B, K) log-probs of the generated tokens under the policy being trained.
        old_logprobs: (B, K) the same under the policy that sampled them.
        ref_logprobs: (B, K) the same under the frozen reference model, or None to skip the KL term.
        advantages: (B,) one value per trajectory.
        mask: (B, K) 1 for a trained (generated) token, 0 for padding and context.
        clip_eps: the PPO clip range around ratio 1.
        kl_coef: weight of the k3 KL estimate against the reference in the loss.
    """
    import torch

    ratio = torch.exp(logprobs - old_logprobs)  # (B, K)
    adv = advantages.unsqueeze(-1)  # (B, 1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None:
        # k3 grows as exp(delta): one sampled tail token the policy pushed far down gives inf/NaN; clamp as
        # verl's low_var_kl does (delta to +-20, the estimate to <= 10)
        delta = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
        kl = (torch.exp(delta) - delta - 1.0).clamp(max=10.0)
    tokens = mask.sum(-1).clamp(min=1.0)  # (B,)

    def traj_mean(x: torch.Tensor) -> torch.Tensor:
        return ((x * mask).sum(-1) / tokens).mean()

    policy = traj_mean(per_token)
    kl_mean = traj_mean(kl)
    loss = policy + kl_coef * kl_mean
    is_clipped = (clipped < unclipped).float()  # the min picked the clipped branch
    with torch.no_grad():
        clip_fraction = float((is_clipped * mask).sum() / mask.sum().clamp(min=1.0))
        ratio_mean = float((ratio * mask).sum() / mask.sum().clamp(min=1.0))
    return LossOutput(loss, float(policy.detach()), float(kl_mean.detach()), clip_fraction, ratio_mean)
