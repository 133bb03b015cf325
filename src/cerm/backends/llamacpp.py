"""GGUF models through llama-cpp-python: the packaged SmolLM2, a local file, or a hub ``repo_id:filename``.

Prompts use the chat template stored in the GGUF metadata, rendered with ``enable_thinking=False`` (the
protocol's thinking-off setting; templates without that switch ignore it). llama.cpp has no batching, so a
batch runs prompt by prompt on the one loaded model; consecutive prompts that share a prefix (the criteria
turn before every evaluation) reuse llama.cpp's KV cache for it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from cerm.backends.base import Capabilities, OnDone, missing_extra
from cerm.backends.embedded import embedded_gguf, is_embedded, warn_embedded
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

# "owner/name:file.gguf" names a file in a Hugging Face hub repository
HUB_FILE = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+):(?P<filename>[^:]+\.gguf)$")


class LlamaCppBackend:
    """A GGUF chat model run in-process by llama.cpp. Thread-safe: one prompt at a time.

    Args:
        model: "embedded" (the packaged SmolLM2-135M, a plumbing model), a local ``.gguf`` path, or
            ``"repo_id:filename"`` fetched with ``Llama.from_pretrained`` (needs the hub or its cache).
        n_ctx: context window in tokens; prompt plus generation must fit in it.
        n_threads: CPU threads for both prompt processing and decoding; None lets llama.cpp choose (half
            the cores to decode, all of them for prompts).
        n_gpu_layers: layers to offload when llama.cpp was built with GPU support.
        n_batch: prompt tokens evaluated per step.
        seed: seed for sampled decoding when a call gives none.
    """

    capabilities = Capabilities(readout=True, reports_each=True, counts_tokens=True)

    def __init__(self, model: str, n_ctx: int = 8192, n_threads: int | None = None, n_gpu_layers: int = 0,
                 n_batch: int = 512, seed: int = 0) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as e:
            raise missing_extra("llamacpp", "llama-cpp-python") from e
        if n_ctx < 1:
            raise ValueError(f"n_ctx ({n_ctx}) must be >= 1; CE-RM prompts need thousands of tokens (try 8192).")
        kwargs: dict[str, Any] = dict(n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                                      n_gpu_layers=n_gpu_layers,
                                      n_batch=n_batch, seed=seed, verbose=False)
        hub = HUB_FILE.match(model)
        if is_embedded(model):
            warn_embedded()
            path = embedded_gguf()
            self._llama = Llama(model_path=str(path), **kwargs)
        elif Path(model).is_file():
            path = Path(model)
            self._llama = Llama(model_path=str(path), **kwargs)
        elif hub and not model.startswith(("/", ".")):
            self._llama = Llama.from_pretrained(hub["repo"], hub["filename"], **kwargs)
            path = Path(self._llama.model_path)
        else:
            raise FileNotFoundError(
                f"model {model!r} is not 'embedded', an existing .gguf file or 'owner/repo:file.gguf'.")
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{path} has no chat template in its GGUF metadata (tokenizer.chat_template); "
                             "CE-RM needs an instruction-tuned chat model.")
        eos_id, bos_id = self._llama.token_eos(), self._llama.token_bos()
        # the same formatter llama-cpp-python builds from the metadata, kept so count_tokens renders exactly
        # what generate sends, and so enable_thinking reaches the template (create_chat_completion drops it)
        self._formatter = Jinja2ChatFormatter(template, eos_token=self._token_text(eos_id),
                                              bos_token=self._token_text(bos_id), stop_token_ids=[eos_id])
        self._handler = self._formatter.to_chat_handler()
        self._lock = threading.Lock()
        self._closed = False
        self.context_length: int | None = n_ctx
        self.model_path = path
        # name + size identifies the file without hashing gigabytes on every start
        self.model_id = f"llamacpp:{path.name}:{path.stat().st_size}"

    def _token_text(self, token_id: int) -> str:
        return "" if token_id < 0 else self._llama.detokenize([token_id], special=True).decode("utf-8", "replace")

    def _prompt_tokens(self, messages: list[Message]) -> list[int]:
        rendered = self._formatter(messages=messages, enable_thinking=False)
        # as the chat handler does: a template that writes its own BOS gets none added
        return self._llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special,
                                    special=True)

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Tokens of the chat-formatted prompt, generation prompt included."""
        with self._lock:
            self._check_open()
            return len(self._prompt_tokens(messages))

    def generate(self, prompts: list[list[Message]], params: SamplingParams,
                 on_done: OnDone | None = None) -> list[Generation]:
        """Generate for each prompt in order; a prompt that fails yields an error ``Generation``."""
        with self._lock:
            self._check_open()
            out = []
            for i, messages in enumerate(prompts):
                out.append(self._generate_one(messages, params))
                if on_done is not None:
                    on_done(i, out[-1])
            return out

    def _generate_one(self, messages: list[Message], params: SamplingParams) -> Generation:
        start = time.perf_counter()
        n_prompt = 0
        try:
            n_prompt = len(self._prompt_tokens(messages))
            room = (self.context_length or 0) - n_prompt
            if room < 1:
                return Generation("", "error", tokens_in=n_prompt, seconds=time.perf_counter() - start,
                                  error=f"the prompt has {n_prompt} tokens; n_ctx is {self.context_length}",
                                  error_status=ParseStatus.TOO_LONG)
            out = self._handler(
                llama=self._llama, messages=messages, enable_thinking=False,
                temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                max_tokens=min(params.max_new_tokens, room),
                # plain temperature + top-p, as in HF and vLLM: llama.cpp's default top_k=40 / min_p=0.05 /
                # repeat_penalty would make its samples differ from theirs (our choice [R])
                top_k=0, min_p=0.0, repeat_penalty=1.0)
        # ValueError: the template's raise_exception or llama.cpp's own checks; RuntimeError: decode failures
        except (ValueError, RuntimeError) as e:
            logger.error("llama.cpp generation failed: %s", e)
            return Generation("", "error", tokens_in=n_prompt, seconds=time.perf_counter() - start,
                              error=f"llama.cpp: {e}")
        choice = out["choices"][0]
        finish_reason: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = out.get("usage") or {}
        return Generation(choice["message"].get("content") or "", finish_reason,
                          tokens_in=int(usage.get("prompt_tokens", n_prompt)),
                          tokens_out=int(usage.get("completion_tokens", 0)),
                          seconds=time.perf_counter() - start)

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        r"""The 21-value distribution after each request's final ``\boxed{`` (cerm/readout.py) [R].

        The prefix is evaluated once; each node of the continuations' token trie is then evaluated on top
        of it and rolled back (about 31 one-token steps).
        """
        with self._lock:
            self._check_open()
            out = []
            for r in requests:
                try:
                    out.append(self._read(r))
                except (ValueError, RuntimeError) as e:
                    out.append(ScoreDistribution(error=f"llama.cpp: {e}"))
            return out

    def _read(self, request: ReadoutRequest) -> ScoreDistribution:
        import numpy as np

        ll = self._llama
        rendered = self._formatter(messages=request.messages, enable_thinking=False)
        encode = lambda t: ll.tokenize(t.encode("utf-8"), add_bos=not rendered.added_special, special=True)  # noqa: E731
        prefix, tails = continuation_ids(encode, rendered.prompt + request.assistant_prefix)
        if len(prefix) + max(map(len, tails)) > (self.context_length or 0):
            raise ValueError(f"the readout needs {len(prefix) + max(map(len, tails))} tokens; n_ctx is "
                             f"{self.context_length}")
        # the prefix from an empty cache, one batch; then each trie node token by token. llama.cpp's
        # quantized kernels depend on the batch shape (a reused cache moved probabilities by ~1e-2), so
        # the readout is always computed the same way: the brute-force test holds it to 1e-5
        ll.n_tokens = 0
        ll.eval(prefix)
        base, root = ll.n_tokens, self._last_logits()
        found: dict[tuple[int, ...], dict[int, float]] = {}
        for path, children in trie_nodes(tails).items():
            ll.n_tokens = base  # eval drops the KV cells from n_tokens on
            for tok in path:
                ll.eval([tok])
            logits = self._last_logits() if path else root
            logp = logits - logits.max()
            logp -= np.log(np.exp(logp).sum())
            found[path] = {c: float(logp[c]) for c in children}
        ll.n_tokens = base
        return from_logprobs(sequence_logprobs(tails, found))

    def _last_logits(self) -> Any:
        """The logits after the last ``eval`` (llama-cpp-python keeps none without logits_all)."""
        import numpy as np

        row = np.ctypeslib.as_array(self._llama._ctx.get_logits(), shape=(self._llama.n_vocab(),))
        return row.astype(np.float64)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("LlamaCppBackend is closed; build a new one.")

    def close(self) -> None:
        """Free the model and its context; later calls raise."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._llama.close()

    def __enter__(self) -> LlamaCppBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
