"""transformers backend: the model's own chat template, batched generation, shared-prefix KV reuse.

The N evaluation prompts of one query share their opening (criteria prompt + criteria text + the evaluation
prompt up to the response). We run that prefix through the model once, copy its KV cache to the batch, and
generate only the suffixes: rows are laid out ``[prefix | pad | suffix]`` with the pads masked, so positions
stay consecutive (transformers derives position ids from the attention mask).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerm.backends.base import OnDone, missing_extra
from cerm.backends.embedded import (
    EMBEDDED_ID,
    embedded_gguf,
    is_embedded,
    quiet_gguf_conversion,
    warn_embedded,
)
from cerm.readout import ReadoutRequest, ScoreDistribution, continuation_ids, from_logprobs
from cerm.types import Generation, Message, SamplingParams

logger = logging.getLogger(__name__)

# a shared prefix shorter than this is not worth a separate forward pass
MIN_SHARED_PREFIX = 32


@dataclass(frozen=True)
class _Encoded:
    index: int
    ids: list[int]


class HFBackend:
    """A transformers causal LM.

    Args:
        model: HF id or local directory, a ``.gguf`` file path, or "embedded" (packaged SmolLM2).
        revision: hub revision (enters ``model_id`` and so every cache key).
        dtype: torch dtype name or "auto".
        batch_size: rows per ``generate`` call.
        reuse_prefix: run a shared prompt prefix once and reuse its KV cache across the batch.
    """

    def __init__(self, model: str, *, revision: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 reuse_prefix: bool = True, device: str | None = None, trust_remote_code: bool = False) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise missing_extra("hf", "torch and transformers") from None
        self._torch = torch
        load: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if is_embedded(model):
            warn_embedded()
            gguf = embedded_gguf()
            source, load["gguf_file"] = str(gguf.parent), gguf.name
            self.model_id = EMBEDDED_ID
        elif model.endswith(".gguf"):
            source, load["gguf_file"] = str(Path(model).parent), Path(model).name
            self.model_id = f"gguf:{Path(model).resolve()}"
        else:
            source = model
            load["revision"] = revision
            self.model_id = model if revision is None else f"{model}@{revision}"
        with quiet_gguf_conversion():
            self.tokenizer = AutoTokenizer.from_pretrained(source, **load)
            model_obj = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **load)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model_obj.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.reuse_prefix = reuse_prefix
        self.context_length: int | None = getattr(self.model.config, "max_position_embeddings", None)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(self.tokenizer.eos_token_id)
        self._eos = sorted(i for i in eos_ids if i is not None)
        self._lock = threading.Lock()

    # ---- protocol ---------------------------------------------------------------------------------
    def render(self, messages: list[Message]) -> str:
        # enable_thinking=False matters for Qwen3 templates (protocol §1) and is ignored by others
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)

    def encode(self, messages: list[Message]) -> list[int]:
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def count_tokens(self, messages: list[Message]) -> int | None:
        return len(self.encode(messages))

    def generate(self, prompts: list[list[Message]], params: SamplingParams,
                 on_done: OnDone | None = None) -> list[Generation]:
        encoded = [_Encoded(i, self.encode(m)) for i, m in enumerate(prompts)]
        out: list[Generation | None] = [None] * len(prompts)
        with self._lock, self._torch.inference_mode():
            if params.seed is not None:
                self._torch.manual_seed(params.seed)
            for group in self._prefix_groups(encoded):
                prefix_len = _common_prefix_len([e.ids for e in group]) if len(group) > 1 else 0
                # keep at least one token of every row outside the prefix, so each row has input to extend
                prefix_len = min(prefix_len, min(len(e.ids) for e in group) - 1)
                use_prefix = self.reuse_prefix and prefix_len >= MIN_SHARED_PREFIX
                for chunk in _chunks(sorted(group, key=lambda e: len(e.ids)), self.batch_size):
                    for e, g in zip(chunk, self._run(chunk, params, prefix_len if use_prefix else 0)):
                        out[e.index] = g
                        if on_done is not None:
                            on_done(e.index, g)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        r"""The 21-value distribution after each request's final ``\boxed{`` (cerm/readout.py) [R].

        One forward of the prefix (prompt + assistant text), then one batched forward of the continuations
        ``v}`` over its KV cache; each continuation's log-prob is the sum of its tokens' log-probs.
        """
        out = []
        with self._lock, self._torch.inference_mode():
            for r in requests:
                try:
                    out.append(self._read(self.render(r.messages) + r.assistant_prefix))
                except ValueError as e:
                    out.append(ScoreDistribution(error=str(e)))
        return out

    def _read(self, prefix_text: str) -> ScoreDistribution:
        from transformers import DynamicCache

        torch = self._torch
        prefix, tails = continuation_ids(
            lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"], prefix_text)
        if self.context_length is not None and len(prefix) + max(map(len, tails)) > self.context_length:
            raise ValueError(f"the readout needs {len(prefix) + max(map(len, tails))} tokens; "
                             f"the context is {self.context_length}")
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=torch.tensor([prefix], device=self.device), past_key_values=cache,
                            use_cache=True).logits[0, -1].float()
        first = torch.log_softmax(logits, -1)
        scores = [first[t[0]].item() for t in tails]
        longer = [k for k, t in enumerate(tails) if len(t) > 1]
        if longer:
            # rows = each continuation minus its last token, right-padded; row position j predicts token j+1
            width = max(len(tails[k]) - 1 for k in longer)
            pad = self.tokenizer.pad_token_id
            rows = [tails[k][:-1] + [pad] * (width - len(tails[k]) + 1) for k in longer]
            masks = [[1] * len(prefix) + [1] * (len(tails[k]) - 1) + [0] * (width - len(tails[k]) + 1)
                     for k in longer]
            cache.batch_repeat_interleave(len(longer))  # the prefix's KV, once per row (used once, in place)
            logp = torch.log_softmax(self.model(
                input_ids=torch.tensor(rows, device=self.device), past_key_values=cache, use_cache=True,
                attention_mask=torch.tensor(masks, device=self.device)).logits.float(), -1)
            for row, k in enumerate(longer):
                scores[k] += sum(logp[row, j, tok].item() for j, tok in enumerate(tails[k][1:]))
        return from_logprobs(scores)

    # ---- internals --------------------------------------------------------------------------------
    def _prefix_groups(self, encoded: list[_Encoded]) -> list[list[_Encoded]]:
        """Group prompts by their first 32 tokens; evaluation turns of one query land together."""
        groups: dict[tuple[int, ...], list[_Encoded]] = {}
        for e in encoded:
            groups.setdefault(tuple(e.ids[:MIN_SHARED_PREFIX]), []).append(e)
        return list(groups.values())

    def _run(self, chunk: list[_Encoded], params: SamplingParams, prefix_len: int) -> list[Generation]:
        torch = self._torch
        start = time.perf_counter()
        longest = max(len(e.ids) for e in chunk)
        budget = params.max_new_tokens
        if self.context_length is not None:
            budget = max(1, min(budget, self.context_length - longest))
        pad = self.tokenizer.pad_token_id
        rows, masks = [], []
        for e in chunk:
            prefix, suffix = e.ids[:prefix_len], e.ids[prefix_len:]
            fill = longest - len(e.ids)
            rows.append(prefix + [pad] * fill + suffix)
            masks.append([1] * len(prefix) + [0] * fill + [1] * len(suffix))
        input_ids = torch.tensor(rows, device=self.device)
        attention_mask = torch.tensor(masks, device=self.device)
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=budget, pad_token_id=pad,
            eos_token_id=self._eos, do_sample=not params.is_greedy,
        )
        if params.is_greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if prefix_len:
            kwargs["past_key_values"] = self._prefix_cache(chunk[0].ids[:prefix_len], len(chunk))
        sequences = self.model.generate(**kwargs)
        seconds = (time.perf_counter() - start) / len(chunk)
        results = []
        for e, seq in zip(chunk, sequences[:, longest:].tolist()):
            n, finished = len(seq), False
            for k, tok in enumerate(seq):
                if tok in self._eos:
                    n, finished = k, True
                    break
            text = self.tokenizer.decode(seq[:n], skip_special_tokens=True)
            results.append(Generation(text=text, finish_reason="stop" if finished or n < budget else "length",
                                      tokens_in=len(e.ids), tokens_out=n + int(finished), seconds=seconds))
        return results

    def _prefix_cache(self, prefix: list[int], batch: int) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        ids = self._torch.tensor([prefix], device=self.device)
        self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache


def _common_prefix_len(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for k in range(n):
        tok = first[k]
        if any(s[k] != tok for s in seqs[1:]):
            return k
    return n


def _chunks(items: list[_Encoded], size: int) -> list[list[_Encoded]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
