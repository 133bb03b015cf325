"""Rollout engine on transformers ``generate`` (CPU tests, small GPU runs): samples from the training module.

It generates with the very module being trained (unwrapped from DDP / gathered under ZeRO-3 by TRL's
``unwrap_model_for_generation``), so there is nothing to sync. The vLLM engine lives in ``engine_vllm.py``.
Sampling is plain ``softmax(logits / temperature)`` with top-p: the model's own generation defaults (Qwen3
ships top_k=20) are overridden so the sampler matches the policy the loss differentiates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import GenerationConfig
from trl.models.utils import unwrap_model_for_generation

from cerm.train.rl.rollout import Completion
from cerm.types import SamplingParams


def cut_at_stop(ids: Sequence[int], stop_ids: frozenset[int], max_new_tokens: int) -> Completion:
    """Keep tokens up to and including the first stop token.

    Without one, a turn of ``max_new_tokens`` tokens hit the length limit; a shorter one ended on an engine
    stop rule that leaves its token out (still a normal stop).
    """
    for i, tok in enumerate(ids):
        if tok in stop_ids:
            return Completion(tuple(ids[: i + 1]), "stop")
    return Completion(tuple(ids[:max_new_tokens]), "length" if len(ids) >= max_new_tokens else "stop")


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), padded on the left so every row ends at T."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


class HFEngine:
    """Batched ``model.generate`` over token ids; ``batch_size`` prompts per call bound the memory."""

    def __init__(self, model: Any, accelerator: Any, stop_ids: Iterable[int], pad_id: int, batch_size: int = 64):
        self.model = model
        self.accelerator = accelerator
        self.stop_ids = frozenset(stop_ids)
        self.pad_id = pad_id
        self.batch_size = batch_size

    def sync_weights(self) -> None:
        """Nothing to do: generation runs on the training module itself."""

    def _config(self, params: SamplingParams) -> GenerationConfig:
        common = {"max_new_tokens": params.max_new_tokens, "eos_token_id": sorted(self.stop_ids),
                  "pad_token_id": self.pad_id, "return_dict_in_generate": False, "repetition_penalty": 1.0}
        if params.is_greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0,
                                **common)

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """Completions in prompt order; with ``params.seed`` each prompt copy samples alone from its own seed."""
        config = self._config(params)
        out: list[Completion] = []
        device = self.accelerator.device
        seeds: list[int | None]
        batches: list[Sequence[Sequence[int]]]
        if params.seed is not None and not params.is_greedy:
            batches = [[p] for p in prompt_ids]
            seeds = list(prompt_seeds(params.seed, prompt_ids))
        else:
            batches = [prompt_ids[i:i + self.batch_size] for i in range(0, len(prompt_ids), self.batch_size)]
            seeds = [None] * len(batches)
        with unwrap_model_for_generation(self.model, self.accelerator) as model:
            was_training = model.training
            model.eval()
            for batch, seed in zip(batches, seeds, strict=True):
                ids, mask = left_pad(batch, self.pad_id)
                # a private RNG stream: the global one (dropout, data order) is left as it was
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    if seed is not None:
                        torch.manual_seed(seed)
                    seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                          generation_config=config)
                for row in seqs[:, ids.shape[1]:].tolist():
                    out.append(cut_at_stop(row, self.stop_ids, params.max_new_tokens))
            model.train(was_training)
        return out


def prompt_seeds(seed: int, prompt_ids: Sequence[Sequence[int]]) -> list[int]:
    """One seed per prompt from (seed, its tokens, how many identical prompts came before it): the same
    prompt copy gets the same seed whichever process or batch it lands in, and the copies differ.
    """
    seen: dict[tuple[int, ...], int] = {}
    out = []
    for p in prompt_ids:
        key = tuple(p)
        copy = seen.get(key, 0)
        seen[key] = copy + 1
        digest = hashlib.sha256(f"{seed}:{copy}:{','.join(map(str, key))}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "little") % 2**63)
    return out
