"""The score readout's extra cost vs the evaluation itself, side by side in one run [R].

N evaluation turns are generated (one batch, as the judge sends them) and the 21-value score distribution
is read at each evaluation's final ``\\boxed{`` (or after our closing text when it has none), the way the
judge does it on that backend:

- hf: during ``generate`` (``read_at``), over the KV cache the generation built; the readout's time is the
  backend's ``readout_seconds``, the evaluation's the rest of ``generate``. For comparison the same readouts are then re-read
  through ``score_distributions`` (prompt + evaluation computed again, as before the cache reuse), and the
  two must agree to 1e-5.
- vllm: ``score_distributions`` after ``generate`` (greedy walks along the trie's paths, 1-token requests for
  what they miss; the prefix cache on); then warm, alternating, the same readouts as shipped ("walks") and
  with one 1-token request per trie node ("nodes", ``readout_walks=False``, the readout before walks).

Prints the wall times and their ratio; with ``--backend vllm`` the target is readout <= 5% of the
evaluation's wall time for ~1K-token evaluations (vLLM keeps generating to ``--eval-tokens`` via
``min_tokens``, so every evaluation is that long). The embedded SmolLM2 judges at chance: only cost is
measured here, never quality.

    .venv/bin/python perf/readout_cost.py --backend hf --evals 2 --eval-tokens 256
    .venv-vllm/bin/python perf/readout_cost.py --backend vllm --evals 4 --eval-tokens 1024
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from cerm.prompts import evaluation_messages
from cerm.readout import CLOSING_TEXT, ReadoutRequest, ScoreDistribution, box_prefix, closing_prefix
from cerm.types import Generation, SamplingParams

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


def build(backend: str, model: str, eval_tokens: int, block_size: int | None = None) -> Any:
    if backend == "hf":
        from cerm.backends.hf import HFBackend

        return HFBackend(model)
    from cerm.backends.vllm import VLLMBackend

    extra = {} if block_size is None else {"block_size": block_size}
    b = VLLMBackend(model, max_model_len=max(2048, eval_tokens + 1024), enforce_eager=True, **extra)
    plain = b.sampling_params
    # every evaluation runs to eval_tokens, so the figure is for evaluations of that length
    b.sampling_params = lambda p: _with_min_tokens(plain(p), p.max_new_tokens)  # type: ignore[method-assign]
    return b


def _with_min_tokens(sp: Any, n: int) -> Any:
    sp.min_tokens = n
    return sp


def read_at(g: Generation) -> str:
    """The final box of a finished evaluation, else our closing text (what the judge reads with both on)."""
    prefix = box_prefix(g.text) if g.finish_reason == "stop" else None
    return closing_prefix(g.text) if prefix is None else prefix


def measure(backend: Any, n_evals: int, eval_tokens: int, reps: int = 2) -> dict[str, Any]:
    prompts = [evaluation_messages(QUERY, CRITERIA, RESPONSES[i % len(RESPONSES)]) for i in range(n_evals)]
    params = SamplingParams(max_new_tokens=eval_tokens)
    extra: dict[str, Any] = {}
    if hasattr(backend, "readout_seconds"):  # hf: the readout runs inside generate, timed there
        start, before = time.perf_counter(), backend.readout_seconds
        gens = backend.generate(prompts, params, read_at=read_at)
        readout_s = backend.readout_seconds - before
        eval_s = time.perf_counter() - start - readout_s
        dists = [g.readout.distribution for g in gens]
        requests = [ReadoutRequest(p, g.readout.assistant_prefix) for p, g in zip(prompts, gens, strict=True)]
        start = time.perf_counter()
        again = backend.score_distributions(requests)
        reread_s = time.perf_counter() - start
        extra = {"reread_s": round(reread_s, 3), "reread_ratio": round(reread_s / eval_s, 4),
                 "max_prob_diff": max(_diff(a, b) for a, b in zip(dists, again, strict=True))}
    else:
        # the process's first readout pays a one-time warm-up (~3 s here, measured: later readouts of prefixes
        # never read before run at the warm speed); pay it on an unrelated prompt, as a long judge run does once
        warmup = ReadoutRequest(evaluation_messages("Say hi.", CRITERIA, "Hi!"), "Overall: \\boxed{")
        warmup_s = _vllm_readout(backend, [warmup])[1]
        start = time.perf_counter()
        gens = backend.generate(prompts, params)
        eval_s = time.perf_counter() - start
        requests = [ReadoutRequest(p, read_at(g)) for p, g in zip(prompts, gens, strict=True)]
        # the first readout of these evaluations is what the judge pays (it also computes the closing text)
        dists, readout_s, tokens, sent = _vllm_readout(backend, requests)
        # then warm (the closing text cached), alternating, the same readouts as shipped ("walks") and with
        # one 1-token request per trie node ("nodes": the readout before walks)
        warm: dict[str, list[Any]] = {"nodes": [], "walks": []}
        for _ in range(reps):
            for name in warm:
                backend.readout_walks = name == "walks"
                warm[name].append(_vllm_readout(backend, requests))
        backend.readout_walks = True
        config = backend.llm.llm_engine.vllm_config
        extra = {"block_size": config.cache_config.block_size, "dtype": str(config.model_config.dtype),
                 "warmup_readout_s": round(warmup_s, 3),
                 "readout_requests": sent, "readout_tokens_computed": tokens,
                 "eval_tokens_total": sum(g.tokens_in + g.tokens_out for g in gens),
                 "warm": {name: {"s": [round(r[1], 3) for r in runs], "median_ratio": round(
                     statistics.median(r[1] for r in runs) / eval_s, 4), "tokens_computed": runs[-1][2],
                     "requests": runs[-1][3]} for name, runs in warm.items()},
                 # informational: bf16 rounds differently with each batch shape (exactness: the float32 test)
                 "walks_vs_nodes_max_prob_diff": max(_diff(a, b) for a, b in zip(warm["walks"][-1][0],
                                                                                 warm["nodes"][-1][0], strict=True))}
    errors = [d.error for d in dists if not d.ok]
    return {"evals": n_evals, "eval_tokens_out": [g.tokens_out for g in gens], "prompt_tokens": gens[0].tokens_in,
            "eval_s": round(eval_s, 3), "readout_s": round(readout_s, 3), "ratio": round(readout_s / eval_s, 4),
            "closed": sum(r.assistant_prefix.endswith(CLOSING_TEXT) for r in requests),
            "readout_errors": errors, **extra,
            "expected_scores": [round(d.expected, 3) for d in dists if d.ok]}


def _vllm_readout(backend: Any, requests: list[ReadoutRequest]) -> tuple[list[ScoreDistribution], float, int, int]:
    """The distributions, wall time, prompt tokens computed and requests sent of one vLLM readout."""
    start, tokens, sent = time.perf_counter(), backend.readout_tokens_computed, backend.readout_requests
    dists = backend.score_distributions(requests)
    return (dists, time.perf_counter() - start, backend.readout_tokens_computed - tokens,
            backend.readout_requests - sent)


def _diff(a: ScoreDistribution, b: ScoreDistribution) -> float:
    return max((abs(x - y) for x, y in zip(a.probs, b.probs, strict=True)), default=float("inf"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--evals", type=int, default=4)
    ap.add_argument("--eval-tokens", type=int, default=1024)
    ap.add_argument("--target", type=float, default=0.05, help="max readout/eval wall-time ratio (vllm)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--reps", type=int, default=2, help="vllm: warm readouts per method, alternating")
    ap.add_argument("--block-size", type=int, help="vllm: KV block size (VLLMBackend's CPU default is 32, "
                                                   "vLLM-CPU's own 128)")
    args = ap.parse_args(argv)
    backend = build(args.backend, args.model, args.eval_tokens, args.block_size)
    try:
        result = {"backend": args.backend, "model": backend.model_id,
                  **measure(backend, args.evals, args.eval_tokens, args.reps)}
    finally:
        backend.close()
    ok = (not result["readout_errors"] and (args.backend != "vllm" or result["ratio"] <= args.target)
          and result.get("max_prob_diff", 0.0) < 1e-5)
    result["target"] = f"readout <= {args.target:.0%} of eval wall time" if args.backend == "vllm" else "none (hf)"
    result["pass"] = ok
    print(json.dumps(result, indent=2))
    print(f"{'PASS' if ok else 'FAIL'}: readout {result['readout_s']:.3f} s vs evaluation {result['eval_s']:.3f} s "
          f"= {result['ratio']:.1%} ({args.backend}, {args.evals} evaluations of ~{args.eval_tokens} tokens)")
    if "readout_tokens_computed" in result:
        print(f"the readout sent {result['readout_requests']} requests and computed "
              f"{result['readout_tokens_computed']} prompt tokens (prefix-cache misses; block size "
              f"{result['block_size']}) vs {result['eval_tokens_total']} prompt + output tokens of the evaluations")
        print(f"(the process's first readout, of one unrelated prompt, before the evaluations: "
              f"{result['warmup_readout_s']:.3f} s, one-time warm-up included)")
        w = result["warm"]
        print(f"warm, alternating x{len(w['walks']['s'])}: walks {w['walks']['s']} s (median "
              f"{w['walks']['median_ratio']:.1%}, {w['walks']['requests']} requests, {w['walks']['tokens_computed']} "
              f"tokens) vs one request per trie node {w['nodes']['s']} s ({w['nodes']['median_ratio']:.1%}, "
              f"{w['nodes']['requests']} requests, {w['nodes']['tokens_computed']} tokens); largest probability "
              f"difference {result['walks_vs_nodes_max_prob_diff']:.1e} ({result['dtype']}: each batch shape rounds its "
              f"own way; tests/backends/test_vllm_readout.py checks exactness in float32)")
    if "reread_s" in result:
        print(f"re-reading prompt + evaluation instead: {result['reread_s']:.3f} s = {result['reread_ratio']:.1%}; "
              f"largest probability difference {result['max_prob_diff']:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
