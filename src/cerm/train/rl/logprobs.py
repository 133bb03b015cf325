"""Token log-probs and the PPO-clip + KL loss over trajectories (docs/training.md §3.4-3.5, choices [R]).

Sequences are padded on the left, so every row ends at the same position and the generated tokens of all
rows sit inside the last ``K = max completion length`` positions: the LM head runs on those K positions
only (``logits_to_keep``), never on the long shared context. The loss mask covers the sampled completion
and nothing else: chat-template tokens, user turns and, inside a judgment, the criteria tokens are context.

Aggregation: token-mean within a trajectory, then mean over trajectories. KL to the frozen reference uses
the k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` inside the loss (GRPO-style), not in the reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cerm.train.rl.rollout import Trajectory


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), padded on the left so every row ends at T."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


@dataclass(frozen=True)
class TrajectoryBatch:
    """Trajectories as padded tensors; the completions sit in the last K positions of every row."""

    input_ids: torch.Tensor  # (B, T) left-padded prompt + completion
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T) positions restart at 0 on each row's first real token
    completion_ids: torch.Tensor  # (B, K) the last K tokens of every row
    completion_mask: torch.Tensor  # (B, K) 1 on generated tokens only

    def to(self, device: torch.device) -> TrajectoryBatch:
        """The batch on ``device``."""
        return TrajectoryBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                                        self.completion_ids, self.completion_mask)))


def collate(trajectories: Sequence[Trajectory], pad_id: int) -> TrajectoryBatch:
    """Left-pad prompt + completion of every trajectory and mask the completions."""
    rows = [list(t.prompt_ids) + list(t.completion_ids) for t in trajectories]
    input_ids, attention_mask = left_pad(rows, pad_id)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    width = max(len(t.completion_ids) for t in trajectories)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, t in enumerate(trajectories):
        completion_mask[i, width - len(t.completion_ids):] = 1.0
    return TrajectoryBatch(input_ids, attention_mask, position_ids, input_ids[:, -width:], completion_mask)


def rollout_logprobs(trajectories: Sequence[Trajectory]) -> torch.Tensor | None:
    """The engine's log-probs laid out like ``collate``'s completions, (B, K) with 0 off the mask; None unless
    every trajectory has them (a micro-batch is then recomputed as a whole).
    """
    if any(t.logprobs is None for t in trajectories):
        return None
    width = max(len(t.completion_ids) for t in trajectories)
    out = torch.zeros((len(trajectories), width), dtype=torch.float32)
    for i, t in enumerate(trajectories):
        if t.logprobs:
            out[i, width - len(t.logprobs):] = torch.tensor(t.logprobs, dtype=torch.float32)
    return out


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[ids]: (B, K, V), (B, K) -> (B, K).

    One fused log_softmax: forward + backward measured 1.6x faster on CPU than ``gather - logsumexp`` (whose
    backward re-materialises the softmax) with the same memory, one (B, K, V) float tensor kept for backward.
    """
    return torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def scale(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` as float32, without a (B, K, V) copy at temperature 1."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def completion_logprobs(model: Any, batch: TrajectoryBatch, temperature: float) -> torch.Tensor:
    """Log-prob of each completion token under ``model``, shape (B, K); the temperature is the sampler's."""
    width = batch.completion_ids.shape[1]
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids, logits_to_keep=width + 1, use_cache=False).logits
    # logits at position t predict token t + 1: drop the last, which predicts past the end
    return token_logprobs(scale(logits[:, :-1], temperature), batch.completion_ids)  # (B, K)
