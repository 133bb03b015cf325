"""Group-normalised advantages (spec/training.md §3.3: group names [T], the maths ours [R]).

``A_i = (r_i - mean_G) / (std_G + 1e-6)`` with the population std; a group whose rewards are all equal
gets ``A = 0`` throughout (nothing to learn from it). The advantage is broadcast to every generated token
of its trajectory by the loss.

Groupings per preference pair:

- ``three_group`` (default): criteria (C) / chosen judgments (C*J) / rejected judgments (C*J). The judgment
  groups knowingly mix trajectories conditioned on different criteria samples.
- ``single_group``: all C + 2CJ trajectories of the pair in one group: plain GRPO, the ablation.
- ``per_criteria``: criteria (C), then one group per (criteria sample, side) of J judgments: the vanilla-GRPO
  reading where every group shares its exact prompt (tiny groups; ablation).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Literal

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
