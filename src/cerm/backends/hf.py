"""transformers backend: the model's own chat template, batched generation, shared-prefix KV reuse.

The N evaluation prompts of one query share their opening (criteria prompt + criteria text + the evaluation
prompt up to the response). Before a chunk is generated, each run of its prompts that share such a prefix
computes it once; each prompt then computes only its own remainder over a copy, so no prompt token is computed
twice and none is padding (a chunk where nothing is shared is prefilled as one left-padded batch). The per-row caches are stacked right-padded and the rows laid out
``[prompt but its last token | pad | last token]`` with the pads masked: positions stay consecutive
(transformers derives position ids from the attention mask) and generation starts with one token per row.

The score readout (cerm/readout.py) runs on the KV cache ``generate`` just built, before the chunk's cache
is dropped (``read_at``): only the tokens after the cached ones (our closing text, or the 1 token of a
re-tokenised boundary) and the continuations' token trie are computed, in one tree-masked forward.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cerm.backends.base import Capabilities, OnDone, missing_extra
from cerm.backends.embedded import (
    EMBEDDED_ID,
    embedded_hf_dir,
    is_embedded,
    quiet_gguf_conversion,
    warn_embedded,
)
from cerm.readout import (
    ReadAt,
    Readout,
    ReadoutRequest,
    ScoreDistribution,
    continuation_ids,
    from_logprobs,
    sequence_logprobs,
    trie_nodes,
)
from cerm.types import Generation, Message, SamplingParams

logger = logging.getLogger(__name__)

# a shared prefix shorter than this is not worth a separate forward pass
MIN_SHARED_PREFIX = 32


@dataclass(frozen=True)
class _Encoded:
    index: int
    text: str  # the rendered prompt
    ids: list[int]


@dataclass(frozen=True)
class _ReadRow:
    """One readout in a batched forward: the prefix tokens after the cached ones, then the continuations."""

    rest: list[int]  # >= 1 token: the last one's logits give the continuations' first token
    start: int  # prefix tokens already in the KV cache (the position of rest[0])
    tails: list[list[int]]  # the 21 continuations' tokens (cerm.readout.continuation_ids)


class HFBackend:
    """A transformers causal LM.

    Args:
        model: HF id or local directory, a ``.gguf`` file path, or "embedded" (packaged SmolLM2).
        revision: hub revision (enters ``model_id`` and so every cache key).
        dtype: torch dtype name or "auto".
        batch_size: rows per ``generate`` call.
        reuse_prefix: run a shared prompt prefix once and reuse its KV cache across the batch.
    """

    capabilities = Capabilities(readout=True, reads_during_generation=True, reports_each=True, counts_tokens=True)

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
            # the GGUF's fp32 dequantisation, converted once: the same weights, loaded in a second
            source = str(embedded_hf_dir(dtype="float32"))
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
        self.readout_seconds = 0.0  # wall time of the readouts done inside generate (perf/readout_cost.py)

    # ---- protocol ---------------------------------------------------------------------------------
    def render(self, messages: list[Message]) -> str:
        """The prompt text under the model's chat template (thinking off, generation prompt on)."""
        # enable_thinking=False matters for Qwen3 templates (protocol §1) and is ignored by others
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)

    def encode(self, messages: list[Message]) -> list[int]:
        """The prompt's token ids, as ``generate`` feeds them."""
        return self._tokens(self.render(messages))

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens of ``messages`` under the chat template."""
        return len(self.encode(messages))

    def generate(self, prompts: list[list[Message]], params: SamplingParams, on_done: OnDone | None = None,
                 read_at: ReadAt | None = None) -> list[Generation]:
        r"""Generate in chunks of ``batch_size``; with ``read_at``, read each generation's score distribution
        where it says (``Generation.readout``) over the chunk's KV cache, before that cache is dropped.
        """
        encoded = [_Encoded(i, text, self._tokens(text)) for i, text in enumerate(map(self.render, prompts))]
        out: list[Generation | None] = [None] * len(prompts)
        with self._lock, self._torch.inference_mode():
            if params.seed is not None:
                self._torch.manual_seed(params.seed)
            # lexicographic order keeps the prompts that share a prefix (one query's evaluations) together
            for chunk in _chunks(sorted(encoded, key=lambda e: e.ids), self.batch_size):
                for e, g in zip(chunk, self._run(chunk, params, read_at)):
                    out[e.index] = g
                    if on_done is not None:
                        on_done(e.index, g)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Drop the model (its memory is freed when nothing else holds it)."""
        self.model = None

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        r"""The 21-value distribution after each request's final ``\boxed{`` (cerm/readout.py) [R].

        Without a KV cache to reuse: one forward per request of its whole prefix (prompt + assistant text)
        and the continuations' trie (``_score_rows``). The judge avoids this re-read through ``read_at``.
        """
        out = []
        with self._lock, self._torch.inference_mode():
            for r in requests:
                try:
                    prefix, tails = self._continuations(self.render(r.messages) + r.assistant_prefix)
                except ValueError as e:
                    out.append(ScoreDistribution(error=str(e)))
                    continue
                out.extend(self._score_rows([_ReadRow(prefix, 0, tails)]))
        return out

    def _continuations(self, prefix_text: str) -> tuple[list[int], list[list[int]]]:
        """Prefix and continuation tokens, checked (``continuation_ids``) and within the context."""
        prefix, tails = continuation_ids(self._tokens, prefix_text)
        if self.context_length is not None and len(prefix) + max(map(len, tails)) > self.context_length:
            raise ValueError(f"the readout needs {len(prefix) + max(map(len, tails))} tokens; "
                             f"the context is {self.context_length}")
        return prefix, tails

    def _score_rows(self, rows: list[_ReadRow], cache: Any = None, cached: Any = None) -> list[ScoreDistribution]:
        """The distributions of ``rows`` in one forward, over ``cache`` (row b may attend to the cache columns
        where ``cached[b]`` is True) or over nothing.

        Row layout: ``[pad | rest | trie nodes | pad]``. Each trie node (a proper non-empty prefix of the
        continuations) is one query token at its own position that attends to the cached prefix, ``rest``
        and its ancestors only (a 4D mask), so its logits are those of prefix + path: exact, and 31 tokens
        instead of 21 sequences over 21 copies of the KV cache.
        """
        torch = self._torch
        if self.model.config._attn_implementation not in ("sdpa", "eager"):
            # flash-attention kernels take no 4D mask
            return [ScoreDistribution(error=f"the hf readout needs sdpa or eager attention, not "
                                            f"{self.model.config._attn_implementation}")] * len(rows)
        nodes = [trie_nodes(r.tails) for r in rows]
        paths = [[p for p in n if p] for n in nodes]  # the root's children come from rest's last token
        width_rest, width_trie = max(len(r.rest) for r in rows), max(map(len, paths))
        width, seen = width_rest + width_trie, 0 if cache is None else cached.shape[1]
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        allow = torch.zeros((len(rows), width, seen + width), dtype=torch.bool)
        allow[:, range(width), range(seen, seen + width)] = True  # pads attend to themselves (no empty row)
        for b, (r, row_paths) in enumerate(zip(rows, paths)):
            lo, end = width_rest - len(r.rest), r.start + len(r.rest)
            ids[b, lo:width_rest] = torch.tensor(r.rest)
            pos[b, lo:width_rest] = torch.arange(r.start, end)
            allow[b, lo:width_rest, seen + lo:seen + width_rest] = torch.ones(len(r.rest), len(r.rest)).tril().bool()
            query = {p: width_rest + k for k, p in enumerate(row_paths)}
            for p, q in query.items():
                ids[b, q], pos[b, q] = p[-1], end + len(p) - 1
                allow[b, q, seen + lo:seen + width_rest] = True
                allow[b, q, [seen + query[p[:k]] for k in range(1, len(p) + 1)]] = True
            if cache is not None:
                allow[b, lo:width_rest + len(row_paths), :seen] = cached[b]
        dtype = self.model.dtype
        mask = torch.zeros(allow.shape, dtype=dtype).masked_fill(~allow, torch.finfo(dtype).min)[:, None]
        logits = self.model(input_ids=ids.to(self.device), position_ids=pos.to(self.device),
                            attention_mask=mask.to(self.device), past_key_values=cache, use_cache=cache is not None,
                            logits_to_keep=width_trie + 1).logits  # the last rest token, then the trie nodes
        logp = torch.log_softmax(logits.float(), -1).cpu()
        out = []
        for b, (r, row_nodes, row_paths) in enumerate(zip(rows, nodes, paths)):
            at = {(): 0} | {p: 1 + k for k, p in enumerate(row_paths)}
            lp = {p: {c: logp[b, at[p], c].item() for c in children} for p, children in row_nodes.items()}
            out.append(from_logprobs(sequence_logprobs(r.tails, lp)))
        return out

    def _read_generated(self, chunk: list[_Encoded], generated: list[list[int]], results: list[Generation],
                        read_at: ReadAt, cache: Any, columns: Any) -> list[Generation]:
        """Attach ``read_at``'s readouts to a chunk's generations, over the KV cache ``generate`` built.

        ``generated[b]``: row b's new tokens (EOS and pads after it included); ``columns[b, c]`` = 1 where
        cache column c of row b holds one of its real tokens (not padding). The cache holds the padded prompt
        and every generated column but the last. A readout prefix reuses the cached tokens it shares with the
        generation (re-tokenised text may differ from the generated ids) and computes the rest: the closing
        text, or the last token before the box.
        """
        torch = self._torch
        start = time.perf_counter()
        rows, where, out = [], [], list(results)
        for b, (e, gen, g) in enumerate(zip(chunk, generated, results)):
            prefix_text = read_at(g) if g.finish_reason != "error" else None
            if prefix_text is None:
                continue
            try:
                prefix, tails = self._continuations(e.text + prefix_text)
            except ValueError as err:
                out[b] = replace(g, readout=Readout(prefix_text, ScoreDistribution(error=str(err))))
                continue
            in_cache = len(e.ids) + min(g.tokens_out, len(gen) - 1)  # the last column's KV was never computed
            tokens = e.ids + gen[:g.tokens_out]  # after EOS, the cache holds pads fed to a finished row
            reuse = min(_common_prefix_len([prefix, tokens]), in_cache, len(prefix) - 1)
            rows.append(_ReadRow(prefix[reuse:], reuse, tails))
            where.append((b, prefix_text, reuse))
        if not rows:
            self.readout_seconds += time.perf_counter() - start
            return out
        index = torch.tensor([b for b, _, _ in where])
        if len(rows) < len(chunk):
            cache.batch_select_indices(index.to(self.device))  # in place: the cache is dropped afterwards
        real = columns[index]
        before = real.cumsum(-1) - real  # real tokens before each column: that column's position
        cached = real.bool() & (before < torch.tensor([reuse for _, _, reuse in where])[:, None])
        for (b, prefix_text, _), dist in zip(where, self._score_rows(rows, cache, cached)):
            out[b] = replace(out[b], readout=Readout(prefix_text, dist))
        self.readout_seconds += time.perf_counter() - start
        return out

    # ---- internals --------------------------------------------------------------------------------
    def _run(self, chunk: list[_Encoded], params: SamplingParams, read_at: ReadAt | None = None
             ) -> list[Generation]:
        torch = self._torch
        start = time.perf_counter()
        longest = max(len(e.ids) for e in chunk)
        budget = params.max_new_tokens
        if self.context_length is not None:
            budget = max(1, min(budget, self.context_length - longest))
        pad = self.tokenizer.pad_token_id
        shared = _shared_prefixes([e.ids for e in chunk]) if self.reuse_prefix else []
        # no prefix to share: one batched prefill beats a forward per row
        cache = self._prompt_cache(chunk, shared) if any(shared) else None
        if cache is None:  # plain left padding
            rows = [[pad] * (longest - len(e.ids)) + e.ids for e in chunk]
            masks = [[0] * (longest - len(e.ids)) + [1] * len(e.ids) for e in chunk]
        else:  # the cache holds every prompt token but the last, right-padded to longest - 1
            rows = [e.ids[:-1] + [pad] * (longest - len(e.ids)) + e.ids[-1:] for e in chunk]
            masks = [[1] * (len(e.ids) - 1) + [0] * (longest - len(e.ids)) + [1] for e in chunk]
        input_ids = torch.tensor(rows, device=self.device)
        attention_mask = torch.tensor(masks, device=self.device)
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=budget, pad_token_id=pad,
            eos_token_id=self._eos, do_sample=not params.is_greedy, return_dict_in_generate=True,
        )
        if params.is_greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if cache is not None:
            kwargs["past_key_values"] = cache
        output = self.model.generate(**kwargs)
        seconds = (time.perf_counter() - start) / len(chunk)
        results = []
        generated = output.sequences[:, longest:].tolist()
        for e, seq in zip(chunk, generated):
            n, finished = len(seq), False
            for k, tok in enumerate(seq):
                if tok in self._eos:
                    n, finished = k, True
                    break
            text = self.tokenizer.decode(seq[:n], skip_special_tokens=True)
            results.append(Generation(text=text, finish_reason="stop" if finished or n < budget else "length",
                                      tokens_in=len(e.ids), tokens_out=n + int(finished), seconds=seconds))
        if read_at is None:
            return results
        cache = output.past_key_values
        columns = torch.cat([attention_mask, attention_mask.new_ones(len(chunk), cache.get_seq_length() - longest)],
                            -1).cpu()
        return self._read_generated(chunk, generated, results, read_at, cache, columns)

    def _prompt_cache(self, chunk: list[_Encoded], shared_prefixes: list[int]) -> Any:
        """The KV cache of every prompt token but the last, each computed once, right-padded to a batch.

        A run of rows sharing a prefix (``shared_prefixes[b]`` tokens) computes it once; each row then computes
        its own remainder over a copy of it. Row b's cache holds its first len - 1 tokens then zeros (masked):
        keys are stored with their positions applied, so where a column sits does not matter, only the mask.
        """
        from transformers import DynamicCache

        width = max(len(e.ids) for e in chunk) - 1
        stacked: list[tuple[Any, Any]] = []  # per layer: (keys, values) of the whole chunk
        shared: tuple[list[int], Any] | None = None  # the current run's prefix and its cache
        for b, (e, p) in enumerate(zip(chunk, shared_prefixes)):
            if p and (shared is None or shared[0] != e.ids[:p]):
                shared = (e.ids[:p], self._extend(DynamicCache(config=self.model.config), e.ids[:p]))
            cache = DynamicCache(config=self.model.config)
            if p and shared is not None:  # a copy: cat() makes new tensors, the shared ones stay as they are
                for i, layer in enumerate(shared[1].layers):
                    cache.update(layer.keys, layer.values, i)
            cache = self._extend(cache, e.ids[p:-1])
            for i, layer in enumerate(cache.layers):
                if len(stacked) <= i:
                    k = layer.keys
                    stacked.append((k.new_zeros(len(chunk), k.shape[1], width, k.shape[3]),
                                    k.new_zeros(len(chunk), k.shape[1], width, layer.values.shape[3])))
                n = layer.keys.shape[2]
                stacked[i][0][b, :, :n] = layer.keys[0]
                stacked[i][1][b, :, :n] = layer.values[0]
        out = DynamicCache(config=self.model.config)
        for i, (k, v) in enumerate(stacked):
            out.update(k, v, i)
        return out

    def _extend(self, cache: Any, ids: list[int]) -> Any:
        """``cache`` after running ``ids`` at the positions that follow it (a batch of one)."""
        if ids:
            self.model(input_ids=self._torch.tensor([ids], device=self.device), past_key_values=cache,
                       use_cache=True)
        return cache


def _shared_prefixes(seqs: list[list[int]]) -> list[int]:
    """Per row, the length of the prefix it shares with its neighbours (0 = none), for rows in sorted order.

    Splits the rows into contiguous runs sharing >= ``MIN_SHARED_PREFIX`` tokens, choosing the runs that
    compute the fewest tokens: a run of k rows sharing p saves (k - 1) * p. Each prefix stops before the
    shortest row's last token (every row keeps its last token to start generation with).
    """
    n = len(seqs)
    best, start, length = [0] * (n + 1), list(range(-1, n)), [0] * (n + 1)  # over rows [0, j)
    for j in range(1, n + 1):
        best[j] = best[j - 1]
        for i in range(j - 1):
            run = seqs[i:j]
            p = min(_common_prefix_len(run), min(map(len, run)) - 1)
            if p >= MIN_SHARED_PREFIX and best[i] + (j - i - 1) * p > best[j]:
                best[j], start[j], length[j] = best[i] + (j - i - 1) * p, i, p
    out, j = [0] * n, n
    while j > 0:
        i = start[j]
        out[i:j] = [length[j]] * (j - i)
        j = i
    return out


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
