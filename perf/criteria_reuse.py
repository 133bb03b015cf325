"""What shared criteria save: model calls, generated tokens and wall time of three ways to judge N responses.

(a) cerm: one criteria generation per query, reused by N evaluation turns (1 + N calls per query);
(b) the paper's "w/o unified criteria" ablation: criteria regenerated for every response (2N calls);
(c) pairwise judging of all ordered pairs with a plain pairwise prompt of our own (N(N-1) calls).

Queries are the first ``--queries`` Arena-Hard v0.1 prompts. Their N candidate responses are gpt-4-0314 answers
(the query's own answer first, then answers to other prompts), cut to ``--response-chars`` characters so a CPU
run stays short, and picked so that no two start with the same character: they differ from their first token,
the hard case for prefix caching. Only cost is measured here, never quality; the embedded SmolLM2 judges at
chance (a plumbing model) and its verdicts mean nothing.

With ``--backend vllm`` (run inside .venv-vllm) two more figures, on the largest N: the N evaluation turns
with vLLM's prefix caching on vs off (two engines, the cache reset before each timed batch), and cerm's judge
vs raw ``LLM.chat`` of the same prompts (the judge's overhead).

Calls and generated tokens are exact counts (a proxy wraps the backend); wall time also depends on how well
the engine batches: vLLM runs (b)'s N criteria of a query in one batch, so (b)'s wall-time ratio stays far
below its token ratio there. Every target prints PASS/FAIL; the exit code is 1 if any fails.

    .venv/bin/python perf/criteria_reuse.py                     # hf + embedded, 1 query, N = 2,4 (small)
    .venv/bin/python perf/criteria_reuse.py --backend llamacpp --n 2,4,8,16
    .venv-vllm/bin/python perf/criteria_reuse.py --backend vllm --queries 4 --n 2,4,8,16 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cerm import Judge, JudgeConfig
from cerm.backends.base import Backend, get_backend
from cerm.backends.embedded import embedded_warning
from cerm.prompts import evaluation_messages, load_template
from cerm.types import Criteria, Generation, Message, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "arena-hard" / "arena-hard-v0.1"

# our own plain pairwise prompt for method (c); not from the paper
PAIRWISE_PROMPT = """You are comparing two AI assistant responses to the same user query.

[User Query]
{query}

[Response A]
{a}

[Response B]
{b}

Which response answers the query better? Consider correctness, helpfulness and clarity. Explain briefly, \
then give your verdict on the last line as $\\boxed{{A}}$ or $\\boxed{{B}}$."""
VERDICT = re.compile(r"\\boxed\{\s*([AB])\s*\}")


def pairwise_messages(query: str, a: str, b: str) -> list[Message]:
    return [{"role": "user", "content": PAIRWISE_PROMPT.format(query=query, a=a, b=b)}]


def parse_verdict(text: str) -> str | None:
    """"A" or "B" from the last box; None when there is none (counted as a parse failure, never a guess)."""
    found = VERDICT.findall(text)
    return found[-1] if found else None


# ---- data --------------------------------------------------------------------------------------------------
def load_items(data: Path, n_queries: int, n: int, response_chars: int) -> list[tuple[str, list[str]]]:
    """``n_queries`` Arena-Hard prompts, each with ``n`` answers whose first characters all differ."""
    questions = data / "question.jsonl"
    answers_file = data / "model_answer" / "gpt-4-0314.jsonl"
    for f in (questions, answers_file):
        if not f.is_file():
            sys.exit(f"error: {f} not found; pass --data DIR (an Arena-Hard v0.1 folder).")
    answers: dict[str, str] = {}
    for lineno, line in enumerate(answers_file.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            uid, content = row["uid"], row["messages"][-1]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            sys.exit(f"error: {answers_file}:{lineno}: uid / messages[-1].content: {e!r}")
        answers[uid] = content["answer"] if isinstance(content, dict) else content
    rows = []
    for lineno, line in enumerate(questions.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"error: {questions}:{lineno}: {e}")
        if not isinstance(row.get("prompt"), str) or "uid" not in row:
            sys.exit(f"error: {questions}:{lineno}: field 'prompt' (string) or 'uid' missing")
        rows.append(row)
    pool = [answers[r["uid"]].strip()[:response_chars] for r in rows if answers.get(r["uid"], "").strip()]
    items = []
    for q, row in enumerate(rows[:n_queries]):
        own = answers.get(row["uid"], "").strip()[:response_chars]
        chosen: list[str] = [own] if own else []
        # rotate the pool per query so queries do not all get the same candidates
        for cand in pool[q * 37:] + pool[: q * 37]:
            if len(chosen) == n:
                break
            if cand[0] not in {c[0] for c in chosen}:
                chosen.append(cand)
        if len(chosen) < n:
            sys.exit(f"error: only {len(chosen)} answers with distinct first characters; use a smaller --n.")
        items.append((row["prompt"], chosen))
    return items


# ---- a counting proxy --------------------------------------------------------------------------------------
@dataclass
class Call:
    kind: str  # criteria | evaluation | pairwise
    prompt: str
    tokens_in: int
    tokens_out: int
    finish_reason: str


@dataclass
class CountingBackend:
    """Wraps a backend and records every prompt sent (one prompt = one model call)."""

    inner: Backend
    calls: list[Call] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def context_length(self) -> int | None:
        return self.inner.context_length

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        gens = self.inner.generate(prompts, params)
        for messages, g in zip(prompts, gens, strict=True):
            self.calls.append(Call(call_kind(messages), json.dumps(messages), g.tokens_in, g.tokens_out,
                                   g.finish_reason))
        return gens

    def count_tokens(self, messages: list[Message]) -> int | None:
        return self.inner.count_tokens(messages)

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> list[Call]:
        """Forget the recorded calls (returned) and any engine-side prefix cache, so methods start even."""
        calls, self.calls = self.calls, []
        llm = getattr(self.inner, "llm", None)
        if llm is not None and hasattr(llm, "reset_prefix_cache"):
            llm.reset_prefix_cache()
        return calls


_CRITERIA_HEAD = load_template("criteria").split("{query}", 1)[0]


def call_kind(messages: list[Message]) -> str:
    if len(messages) == 3:
        return "evaluation"
    if len(messages) == 1 and messages[0]["content"].startswith(_CRITERIA_HEAD):
        return "criteria"
    return "pairwise"


# ---- the three methods -------------------------------------------------------------------------------------
@dataclass
class MethodResult:
    calls: int
    tokens: int
    seconds: float
    by_kind: dict[str, tuple[int, int]]  # kind -> (calls, generated tokens)
    distinct_criteria_prompts: int
    failures: int  # evaluations without a score, or pairwise verdicts without a box


def summarize(calls: list[Call], seconds: float, failures: int) -> MethodResult:
    by_kind: dict[str, tuple[int, int]] = {}
    for c in calls:
        n, t = by_kind.get(c.kind, (0, 0))
        by_kind[c.kind] = (n + 1, t + c.tokens_out)
    return MethodResult(len(calls), sum(c.tokens_out for c in calls), seconds, by_kind,
                        len({c.prompt for c in calls if c.kind == "criteria"}), failures)


def run_judge(backend: CountingBackend, items: list[tuple[str, list[str]]], max_new_tokens: int,
              unified: bool) -> MethodResult:
    # a fresh in-memory store: nothing cached from an earlier method or N
    judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=max_new_tokens, eval_max_new_tokens=max_new_tokens,
                                       unified_criteria=unified))
    backend.reset()
    start = time.perf_counter()
    scored = judge.score_batch(items)
    seconds = time.perf_counter() - start
    failures = sum(j.score is None for item in scored for j in item.judgments)
    return summarize(backend.reset(), seconds, failures)


def run_pairwise(backend: CountingBackend, items: list[tuple[str, list[str]]], max_new_tokens: int) -> MethodResult:
    prompts = [pairwise_messages(q, rs[i], rs[j]) for q, rs in items for i in range(len(rs))
               for j in range(len(rs)) if i != j]
    backend.reset()
    start = time.perf_counter()
    gens = backend.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens))
    seconds = time.perf_counter() - start
    failures = sum(g.finish_reason == "error" or parse_verdict(g.text) is None for g in gens)
    return summarize(backend.reset(), seconds, failures)


# ---- targets -----------------------------------------------------------------------------------------------
@dataclass
class Checks:
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.results.append((name, ok, detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.results)


def check_counts(checks: Checks, n: int, q: int, a: MethodResult, b: MethodResult, c: MethodResult) -> None:
    checks.check(f"N={n} (a) calls = Q(1+N)", a.calls == q * (1 + n), f"{a.calls} == {q}*{1 + n}")
    checks.check(f"N={n} (b) calls = Q*2N", b.calls == q * 2 * n, f"{b.calls} == {q}*{2 * n}")
    checks.check(f"N={n} (c) calls = Q*N(N-1)", c.calls == q * n * (n - 1), f"{c.calls} == {q}*{n * (n - 1)}")
    crit_calls, crit_tokens = a.by_kind.get("criteria", (0, 0))
    eval_calls, eval_tokens = a.by_kind.get("evaluation", (0, 0))
    checks.check(f"N={n} (a) no criteria generated twice",
                 crit_calls == a.distinct_criteria_prompts == q,
                 f"{crit_calls} criteria calls, {a.distinct_criteria_prompts} distinct prompts, {q} queries")
    checks.check(f"N={n} (a) tokens = sum(c) + sum(j), nothing else",
                 a.tokens == crit_tokens + eval_tokens and eval_calls == q * n,
                 f"{a.tokens} == {crit_tokens} + {eval_tokens} over {eval_calls} evaluations")


# ---- vLLM extras -------------------------------------------------------------------------------------------
def time_min(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def vllm_extras(backend: Any, args: argparse.Namespace, items: list[tuple[str, list[str]]],
                checks: Checks) -> dict[str, float]:
    """Prefix caching on vs off, and the judge vs raw LLM.chat, on the N evaluation turns of every query."""
    from cerm.backends.vllm import CHAT_TEMPLATE_KWARGS, VLLMBackend

    config = JudgeConfig(criteria_max_new_tokens=args.max_new_tokens, eval_max_new_tokens=args.max_new_tokens,
                         cache_judgments=False)
    judge = Judge(backend, config)
    criteria: list[Criteria] = [judge.criteria(q) for q, _ in items]
    prompts = [evaluation_messages(q, crit.text, r)
               for (q, rs), crit in zip(items, criteria, strict=True) for r in rs]
    params = config.eval_params(0)

    def raw(engine: Any) -> Callable[[], Any]:
        sp = engine.sampling_params(params)

        def go() -> Any:
            engine.llm.reset_prefix_cache()  # only sharing inside the batch counts, as in the first cerm call
            return engine.llm.chat(prompts, sp, use_tqdm=False, chat_template_kwargs=CHAT_TEMPLATE_KWARGS)
        return go

    def judged() -> Any:
        backend.llm.reset_prefix_cache()
        return judge.score_batch(items, criteria=criteria)

    # alternate so that machine load drifts hit both sides alike; keep the best of each
    raw_on = judge_s = float("inf")
    raw_texts: list[str] = []
    judged_texts: list[str] = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        outputs = raw(backend)()
        raw_on = min(raw_on, time.perf_counter() - start)
        start = time.perf_counter()
        scored = judged()
        judge_s = min(judge_s, time.perf_counter() - start)
        raw_texts = [o.outputs[0].text for o in outputs]
        judged_texts = [j.text for item in scored for j in item.judgments]
    same = sum(a == b for a, b in zip(raw_texts, judged_texts, strict=True))

    def ids(messages: list[Message]) -> list[int]:
        text = backend.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                     **CHAT_TEMPLATE_KWARGS)
        return backend.tokenizer.encode(text, add_special_tokens=False)

    shared = [len(os.path.commonprefix([ids(evaluation_messages(q, crit.text, r)) for r in rs]))
              for (q, rs), crit in zip(items, criteria, strict=True)]
    total = sum(backend.count_tokens(p) or 0 for p in prompts)
    backend.close()
    off = VLLMBackend(args.model, enable_prefix_caching=False, **vllm_kwargs(args))
    try:
        raw_off = time_min(raw(off), args.repeats)
    finally:
        off.close()
    speedup, overhead = raw_off / raw_on, judge_s / raw_on - 1
    print(f"\nvLLM, {len(prompts)} evaluation turns ({len(items)} queries x {len(items[0][1])}), "
          f"shared prefix {sum(shared) / len(shared):.0f} of {total / len(prompts):.0f} prompt tokens on average; "
          f"best of {args.repeats}:")
    print(f"  raw LLM.chat, prefix caching on : {raw_on:8.2f} s")
    print(f"  raw LLM.chat, prefix caching off: {raw_off:8.2f} s   speed-up {speedup:.2f}x")
    print(f"  cerm judge (caching on)         : {judge_s:8.2f} s   overhead {overhead:+.1%}; "
          f"{same}/{len(prompts)} outputs identical to raw")
    checks.check("vllm prefix caching speeds up the N evaluations >= 1.6x", speedup >= 1.6, f"{speedup:.2f}x")
    checks.check("vllm judge overhead over raw LLM.chat <= 10%", overhead <= 0.10, f"{overhead:+.1%}")
    return {"raw_on_s": raw_on, "raw_off_s": raw_off, "judge_s": judge_s, "prefix_speedup": speedup,
            "judge_overhead": overhead, "shared_prefix_tokens": sum(shared) / len(shared),
            "prompt_tokens": total / len(prompts), "identical_outputs": same}


def vllm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": args.max_model_len}


# ---- main --------------------------------------------------------------------------------------------------
def ratio(x: float, y: float) -> str:
    return f"{x / y:5.2f}x" if y else "   n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="hf", choices=["hf", "llamacpp", "vllm", "fake"])
    parser.add_argument("--model", default="embedded", help="model for the backend ('embedded' = packaged SmolLM2)")
    parser.add_argument("--n", default="2,4", help="comma-separated responses per query, e.g. 2,4,8,16")
    parser.add_argument("--queries", type=int, default=1, help="Arena-Hard prompts")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="cap for every generation (criteria too)")
    parser.add_argument("--response-chars", type=int, default=400, help="each candidate is cut to this length")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Arena-Hard v0.1 folder")
    parser.add_argument("--repeats", type=int, default=3, help="vllm timings: best of this many")
    parser.add_argument("--max-model-len", type=int, default=4096, help="vllm context length")
    parser.add_argument("--vllm-extras-only", action="store_true",
                        help="vllm: skip (a)/(b)/(c), time only prefix caching and the judge overhead")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    ns = sorted({int(x) for x in args.n.split(",")})
    if ns[0] < 2:
        parser.error("--n values must be >= 2")
    if args.backend == "vllm":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # a small model at a small token cap rarely closes its criteria list; the per-query warning is noise here
    logging.getLogger("cerm.judge").setLevel(logging.ERROR)
    if (warning := embedded_warning(args.model)) and args.backend != "fake":
        print(warning)

    kwargs: dict[str, Any] = vllm_kwargs(args) if args.backend == "vllm" else {}
    start = time.perf_counter()
    backend = CountingBackend(get_backend(args.backend, args.model, **kwargs))
    print(f"backend {args.backend} ({backend.model_id}) loaded in {time.perf_counter() - start:.1f} s; "
          f"{args.queries} queries, max_new_tokens {args.max_new_tokens}, responses <= {args.response_chars} chars")
    backend.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_new_tokens=2))  # warm-up
    backend.reset()

    checks, rows = Checks(), []
    if args.vllm_extras_only and args.backend != "vllm":
        parser.error("--vllm-extras-only needs --backend vllm")
    for n in [] if args.vllm_extras_only else ns:
        items = load_items(args.data, args.queries, n, args.response_chars)
        a = run_judge(backend, items, args.max_new_tokens, unified=True)
        b = run_judge(backend, items, args.max_new_tokens, unified=False)
        c = run_pairwise(backend, items, args.max_new_tokens)
        print(f"N={n}: (a) {a.calls} calls {a.seconds:.1f} s, (b) {b.calls} calls {b.seconds:.1f} s, "
              f"(c) {c.calls} calls {c.seconds:.1f} s")
        check_counts(checks, n, args.queries, a, b, c)
        rows.append((n, a, b, c))

    print(f"\n{'N':>3} | {'calls a/b/c':>13} {'b/a':>6} {'c/a':>6} | {'gen tokens a/b/c':>18} {'b/a':>6} {'c/a':>6} "
          f"| {'wall s a/b/c':>18} {'b/a':>6} {'c/a':>6}")
    for n, a, b, c in rows:
        print(f"{n:>3} | {a.calls:>3}/{b.calls:>3}/{c.calls:>5} {ratio(b.calls, a.calls)} {ratio(c.calls, a.calls)} "
              f"| {a.tokens:>5}/{b.tokens:>5}/{c.tokens:>6} {ratio(b.tokens, a.tokens)} {ratio(c.tokens, a.tokens)} "
              f"| {a.seconds:>5.1f}/{b.seconds:>5.1f}/{c.seconds:>6.1f} {ratio(b.seconds, a.seconds)} "
              f"{ratio(c.seconds, a.seconds)}")
    print("\nmean generated tokens per call (c = criteria, j = judgment, p = pairwise verdict); failures = "
          "no score / no verdict")
    for n, a, b, c in rows:
        mean = {k: t / max(cnt, 1) for k, (cnt, t) in a.by_kind.items()}
        bmean = {k: t / max(cnt, 1) for k, (cnt, t) in b.by_kind.items()}
        print(f"{n:>3} | (a) c {mean.get('criteria', 0):5.1f} j {mean.get('evaluation', 0):5.1f} "
              f"| (b) c {bmean.get('criteria', 0):5.1f} j {bmean.get('evaluation', 0):5.1f} "
              f"| (c) p {c.tokens / max(c.calls, 1):5.1f} | failures a {a.failures} b {b.failures} c {c.failures}")

    extras: dict[str, float] = {}
    if args.backend == "vllm":
        items = load_items(args.data, args.queries, ns[-1], args.response_chars)
        extras = vllm_extras(backend.inner, args, items, checks)
    else:
        backend.close()
    print(f"\n{sum(ok for _, ok, _ in checks.results)}/{len(checks.results)} targets PASS"
          + ("" if checks.ok else "; FAILED: " + ", ".join(name for name, ok, _ in checks.results if not ok)))
    if (warning := embedded_warning(args.model)) and args.backend != "fake":
        print(warning)
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": [{"n": n, "a": asdict(a), "b": asdict(b), "c": asdict(c)} for n, a, b, c in rows],
            "vllm": extras, "checks": checks.results}, indent=1))
    return 0 if checks.ok else 1


if __name__ == "__main__":  # vLLM's engine spawns a worker process that re-imports this module
    sys.exit(main())
