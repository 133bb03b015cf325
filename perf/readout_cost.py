"""The score readout's extra cost vs the evaluation itself, side by side in one run [R].

N evaluation turns are generated (one batch, as the judge sends them), then the 21-value score distribution
is read at each evaluation's final ``\\boxed{`` (or after our closing text when it has none). Prints both wall
times and their ratio; with ``--backend vllm`` the target is readout <= 5% of the evaluation's wall time for
~1K-token evaluations (vLLM keeps generating to ``--eval-tokens`` via ``min_tokens``, so every evaluation is
that long). The embedded SmolLM2 judges at chance: only cost is measured here, never quality.

    .venv/bin/python perf/readout_cost.py --backend hf --evals 2 --eval-tokens 256
    .venv-vllm/bin/python perf/readout_cost.py --backend vllm --evals 4 --eval-tokens 1024
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cerm.prompts import evaluation_messages
from cerm.readout import ReadoutRequest, box_prefix, closing_prefix
from cerm.types import SamplingParams

QUERY = "Explain how a hash map handles collisions, with a short Python example."
CRITERIA = ("The user wants a correct, clear explanation with working code.\n\n[Start of Criteria]\n"
            "1. Correctness: the explanation of collision handling is accurate.\n"
            "2. Code: the example runs and illustrates the idea.\n"
            "3. Clarity: the answer is easy to follow.\n[End of Criteria]")
RESPONSES = [
    "Collisions happen when two keys hash to the same bucket. Separate chaining keeps a list per bucket; "
    "open addressing probes for the next free slot.\n\n```python\nclass Map:\n    def __init__(self):\n"
    "        self.b = [[] for _ in range(8)]\n    def put(self, k, v):\n        self.b[hash(k) % 8].append((k, v))\n```",
    "A hash map never has collisions because every key gets a unique hash.",
    "Use a dict. Python handles it.",
    "Linear probing: on a collision, try slot i+1, i+2, ... until an empty one is found; deletion needs "
    "tombstones so that lookups do not stop early.",
]


def build(backend: str, model: str, eval_tokens: int) -> Any:
    if backend == "hf":
        from cerm.backends.hf import HFBackend

        return HFBackend(model)
    from cerm.backends.vllm import VLLMBackend

    b = VLLMBackend(model, max_model_len=max(2048, eval_tokens + 1024), enforce_eager=True)
    plain = b.sampling_params
    # every evaluation runs to eval_tokens, so the figure is for evaluations of that length
    b.sampling_params = lambda p: _with_min_tokens(plain(p), p.max_new_tokens)  # type: ignore[method-assign]
    return b


def _with_min_tokens(sp: Any, n: int) -> Any:
    sp.min_tokens = n
    return sp


def measure(backend: Any, n_evals: int, eval_tokens: int) -> dict[str, Any]:
    prompts = [evaluation_messages(QUERY, CRITERIA, RESPONSES[i % len(RESPONSES)]) for i in range(n_evals)]
    start = time.perf_counter()
    gens = backend.generate(prompts, SamplingParams(max_new_tokens=eval_tokens))
    eval_s = time.perf_counter() - start
    requests, closed = [], 0
    for p, g in zip(prompts, gens, strict=True):
        prefix = box_prefix(g.text) if g.finish_reason == "stop" else None
        if prefix is None:
            prefix, closed = closing_prefix(g.text), closed + 1
        requests.append(ReadoutRequest(p, prefix))
    start = time.perf_counter()
    dists = backend.score_distributions(requests)
    readout_s = time.perf_counter() - start
    errors = [d.error for d in dists if not d.ok]
    return {"evals": n_evals, "eval_tokens_out": [g.tokens_out for g in gens], "prompt_tokens": gens[0].tokens_in,
            "eval_s": round(eval_s, 3), "readout_s": round(readout_s, 3), "ratio": round(readout_s / eval_s, 4),
            "closed": closed, "readout_errors": errors,
            "expected_scores": [round(d.expected, 3) for d in dists if d.ok]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--evals", type=int, default=4)
    ap.add_argument("--eval-tokens", type=int, default=1024)
    ap.add_argument("--target", type=float, default=0.05, help="max readout/eval wall-time ratio (vllm)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    backend = build(args.backend, args.model, args.eval_tokens)
    try:
        result = {"backend": args.backend, "model": backend.model_id,
                  **measure(backend, args.evals, args.eval_tokens)}
    finally:
        backend.close()
    ok = not result["readout_errors"] and (args.backend != "vllm" or result["ratio"] <= args.target)
    result["target"] = f"readout <= {args.target:.0%} of eval wall time" if args.backend == "vllm" else "none (hf)"
    result["pass"] = ok
    print(json.dumps(result, indent=2))
    print(f"{'PASS' if ok else 'FAIL'}: readout {result['readout_s']:.3f} s vs evaluation {result['eval_s']:.3f} s "
          f"= {result['ratio']:.1%} ({args.backend}, {args.evals} evaluations of ~{args.eval_tokens} tokens)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
