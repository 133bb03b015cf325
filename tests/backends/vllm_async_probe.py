"""The streaming vLLM backend (AsyncLLM) against the offline one, in one process of the vLLM venv; writes JSON.

Run by test_vllm.py under $CERM_VLLM_PYTHON. Both engines load the same float32 model with the same settings;
the script records what each produced (raw generations, judge outputs through the judge's two schedules,
score readouts) and asserts nothing itself.

    python tests/backends/vllm_async_probe.py --model DIR --out probe.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from cerm import Judge, JudgeConfig
from cerm.backends.vllm import VLLMBackend
from cerm.backends.vllm_async import AsyncVLLMBackend
from cerm.readout import ReadoutRequest
from cerm.types import Generation, SamplingParams

CHATS = [
    [{"role": "user", "content": "What is 2+2? Answer with one word."}],
    [{"role": "user", "content": "Name a colour of the sky."}],
    [{"role": "user", "content": "Write one line about rain."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Tell me a fact about owls."}],
]
ITEMS = [
    ("Give me one tip for writing clear Python code.", ["Use descriptive names.", "Write short functions.",
                                                         "Never comment anything."]),
    ("What is the capital of Australia?", ["Canberra.", "Sydney.", "Melbourne, I think."]),
    ("Explain recursion to a child.", ["A function that calls itself.", "Like Russian dolls."]),
]
READOUTS = [ReadoutRequest(CHATS[0], "Criterion 1: fine. Overall: $\\boxed{"),
            ReadoutRequest(CHATS[1], "The answer is good. $\\boxed{")]


def gen_dict(g: Generation) -> dict:
    return {"text": g.text, "finish_reason": g.finish_reason, "tokens_in": g.tokens_in, "tokens_out": g.tokens_out,
            "error": g.error}


def run(backend, label: str, args: argparse.Namespace) -> dict:
    out: dict = {"model_id": backend.model_id}
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    out["batch"] = [gen_dict(g) for g in backend.generate(CHATS, greedy)]
    out["one_by_one"] = [gen_dict(backend.generate([c], greedy)[0]) for c in CHATS]
    sampled = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=7)
    out["sampled"] = [g.text for g in backend.generate(CHATS[:2], sampled)]
    out["readout"] = [list(d.probs) for d in backend.score_distributions(READOUTS)]
    config = JudgeConfig(criteria_max_new_tokens=args.max_new_tokens, eval_max_new_tokens=args.max_new_tokens)
    judge = Judge(backend, config)
    t0 = time.perf_counter()
    scored = judge.score_batch(ITEMS)
    out["judge_s"] = time.perf_counter() - t0
    out["judge"] = [{"criteria": [c.text for c in item.criteria],
                     "judgments": [{"text": j.text, "score": j.score, "status": j.status.value,
                                    "tokens_in": j.tokens_in, "tokens_out": j.tokens_out} for j in item.judgments]}
                    for item in scored]
    out["judge_stats"] = judge.stats.as_dict()
    if label == "async":
        # awaited from a caller's own event loop (a server's, TRL's): same results, no blocking
        async def from_a_loop() -> list[str]:
            gens = await backend.agenerate(CHATS, greedy)
            return [g.text for g in gens]

        out["awaited"] = asyncio.run(from_a_loop())
        # a prompt over the context fails alone; the rest of the batch still runs
        huge = [{"role": "user", "content": "word " * (2 * backend.context_length)}]
        out["too_long_batch"] = [gen_dict(g) for g in backend.generate([huge, CHATS[0]], greedy)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    settings = dict(max_model_len=1024, dtype="float32", enforce_eager=True)
    result = {}
    for label, cls in (("offline", VLLMBackend), ("async", AsyncVLLMBackend)):
        start = time.perf_counter()
        backend = cls(args.model, **settings)
        result[f"{label}_start_s"] = time.perf_counter() - start
        try:
            result[label] = run(backend, label, args)
        finally:
            backend.close()
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":  # the engine spawns a worker process that re-imports this module
    main()
