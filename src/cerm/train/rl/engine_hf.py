"""Rollout engine on transformers ``generate`` (CPU tests, small GPU runs): samples from the training module.

It generates with the very module being trained (unwrapped from DDP / gathered under ZeRO-3 by TRL's
``unwrap_model_for_generation``), so there is nothing to sync. The vLLM engine lives in ``engine_vllm.py``.
Sampling is plain ``softmax(logits / temperature)`` with top-p: the model's own generation defaults (Qwen3
ships top_k=20) are overridden so the sampler matches the policy the loss differentiates. The sampled tokens'
log-probs under that policy are recorded on the way (:class:`SampledLogprobs`), for the trainer's old log-probs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from trl.models.utils import unwrap_model_for_generation

from cerm.train.rl.logprobs import left_pad
from cerm.train.rl.rollout import Completion
from cerm.types import FinishReason, SamplingParams


def cut_at_stop(ids: Sequence[int], stop_ids: frozenset[int], max_new_tokens: int,
                logprobs: Sequence[float] | None = None) -> Completion:
    """Keep tokens (and their log-probs) up to and including the first stop token.

    Without one, a turn of ``max_new_tokens`` tokens hit the length limit; a shorter one ended on an engine
    stop rule that leaves its token out (still a normal stop).
    """
    if logprobs is not None and len(logprobs) != len(ids):
        raise ValueError(f"the engine returned {len(logprobs)} log-probs for {len(ids)} tokens.")
    end = next((i + 1 for i, tok in enumerate(ids) if tok in stop_ids), None)
    reason: FinishReason = "stop"
    if end is None:
        end, reason = max_new_tokens, "length" if len(ids) >= max_new_tokens else "stop"
    return Completion(tuple(ids[:end]), reason, None if logprobs is None else tuple(logprobs[:end]))


class SampledLogprobs(LogitsProcessor):
    """Records ``log_softmax(logits / temperature)[sampled token]`` per step while ``generate`` runs.

    transformers runs custom processors after its own non-sampling ones (none are configured here: no
    repetition penalty, no bad words) and before the sampling warpers (temperature, top-p), so ``scores`` are
    the raw logits: the full-vocabulary distribution of the loss, not the top-p truncated one. The token drawn
    from step t's scores is the last input id at step t + 1, so one (B, V) tensor is held at a time instead of
    ``output_logits``' (B, steps, V). Greedy decoding has no temperature: T = 1 (the model's own distribution,
    as vLLM reports for a greedy request).
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature or 1.0
        self.pending: torch.Tensor | None = None  # (B, V) log-probs of the last step, its token not yet known
        self.picked: list[torch.Tensor] = []  # one (B,) per step whose token is known

    def _take(self, tokens: torch.Tensor) -> None:
        if self.pending is not None:
            self.picked.append(self.pending.gather(-1, tokens[:, None]).squeeze(-1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Record the log-prob of the token just sampled; the scores pass through unchanged."""
        self._take(input_ids[:, -1])
        # the ops of logprobs.completion_logprobs (scale, token_logprobs) on one step
        scaled = scores if self.temperature == 1.0 else scores / self.temperature
        self.pending = torch.log_softmax(scaled, dim=-1)
        return scores

    def finish(self, new_ids: torch.Tensor) -> torch.Tensor:
        """(B, n) log-probs of the n generated tokens ``new_ids`` (generate may have run undone extra steps)."""
        n = new_ids.shape[1]
        if len(self.picked) < n:  # the last step's token is only in the output
            self._take(new_ids[:, len(self.picked)])
        self.pending = None
        return torch.stack(self.picked[:n], dim=1)


class HFEngine:
    """Batched ``model.generate`` over token ids; ``batch_size`` prompts per call bound the memory.

    With ``logprobs`` on, every completion carries its tokens' log-probs (:class:`SampledLogprobs`).
    """

    def __init__(self, model: Any, accelerator: Any, stop_ids: Iterable[int], pad_id: int, batch_size: int = 64,
                 logprobs: bool = True):
        self.model = model
        self.accelerator = accelerator
        self.stop_ids = frozenset(stop_ids)
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.logprobs = logprobs

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
                recorder = SampledLogprobs(params.temperature) if self.logprobs else None
                # a private RNG stream: the global one (dropout, data order) is left as it was
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    if seed is not None:
                        torch.manual_seed(seed)
                    seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                          generation_config=config,
                                          logits_processor=LogitsProcessorList([recorder] if recorder else []))
                new = seqs[:, ids.shape[1]:]
                logprobs = recorder.finish(new).tolist() if recorder else [None] * len(new)
                for row, row_logprobs in zip(new.tolist(), logprobs, strict=True):
                    out.append(cut_at_stop(row, self.stop_ids, params.max_new_tokens, row_logprobs))
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
