"""The vLLM score readout vs a brute force in the same engine; JSON for test_vllm_readout.py.

Runs under $CERM_VLLM_PYTHON. The brute force scores each of the 21 full sequences with prompt log-probs
(no trie, no prefix cache) and normalises; the script measures, it asserts nothing. The readout runs
as shipped over prefixes of 32 consecutive lengths (the last token at every position of a 32-token KV
block), again with the cache now hot, and with one 1-token request per trie node (``readout_walks=False``);
the brute force (a full prefill per sequence: the slow part) covers the first few.

    python tests/backends/vllm_readout_probe.py --model DIR --out readout.json
"""

from __future__ import annotations

import argparse
import json
import math

from cerm.backends.vllm import CHAT_TEMPLATE_KWARGS, VLLMBackend
from cerm.prompts import evaluation_messages
from cerm.readout import CONTINUATIONS, ReadoutRequest

CRITERIA = "Analysis.\n[Start of Criteria]\n1. Correctness: right answer.\n2. Clarity: clear.\n[End of Criteria]"
QUERY, RESPONSE = "What is 2+2?", "The answer is five, clearly."
PREFIXES = ["Criterion 1: fine. $\\boxed{4}$\n\nOverall: $\\boxed{", "The evaluation.\n\nOverall score: \\boxed{"]
# one more word each: the prefix's last token sits at each offset of a KV block once
SWEEP = ["Fine" + " fine" * k + ". Overall: \\boxed{" for k in range(32)]
BRUTE = 6  # prefixes scored by the brute force too


def brute_force(backend: VLLMBackend, text: str) -> list[float]:
    vllm = backend._vllm
    enc = lambda t: backend.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
    n = len(enc(text))
    prompts = [{"prompt_token_ids": enc(text + c)} for c in CONTINUATIONS]
    outs = backend.llm.generate(prompts, vllm.SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    logps = []
    for p, o in zip(prompts, outs, strict=True):
        ids = p["prompt_token_ids"]
        logps.append(sum(o.prompt_logprobs[k][ids[k]].logprob for k in range(n, len(ids))))
    top = max(logps)
    w = [math.exp(x - top) for x in logps]
    return [x / sum(w) for x in w]


def read(backend: VLLMBackend, requests: list[ReadoutRequest], walks: bool) -> dict:
    backend.readout_walks, before = walks, backend.readout_requests
    dists = backend.score_distributions(requests)
    return {"probs": [list(d.probs) for d in dists], "errors": [d.error for d in dists],
            "requests_per_prefix": (backend.readout_requests - before) / len(requests)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    backend = VLLMBackend(args.model, max_model_len=1024, dtype="float32", enforce_eager=True)
    messages = evaluation_messages(QUERY, CRITERIA, RESPONSE)
    requests = [ReadoutRequest(messages, p) for p in PREFIXES + SWEEP]
    runs = {"shipped": read(backend, requests, True), "again": read(backend, requests, True),
            "nodes": read(backend, requests, False)}
    template = backend.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                     **CHAT_TEMPLATE_KWARGS)
    out = {"runs": runs, "prefixes": len(PREFIXES),
           "prefix_tokens": [len(backend.tokenizer.encode(template + r.assistant_prefix, add_special_tokens=False))
                             for r in requests],
           "brute_force": [brute_force(backend, template + r.assistant_prefix) for r in requests[:BRUTE]]}
    backend.close()
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
