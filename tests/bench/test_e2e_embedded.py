"""End to end with a real engine (hf backend) on real JudgeBench and RM-Bench data.

Two models: the embedded SmolLM2-135M (``--model embedded``) and the tiny random Qwen3 of
``tiny_model_dir``; all marked slow (minutes each on the shared CPU). Both judge at chance (SmolLM2-135M is a plumbing
model): these tests check the harness (schema, one criteria generation per prompt, kill + resume
recomputes nothing, same metrics), never accuracy. Token limits are tiny to keep the test fast, so
most evaluations end ``truncated``: reported as parse failures, which the schema checks also cover.
"""

from __future__ import annotations

import json

import pytest

from cerm import Judge, JudgeConfig, Store
from cerm.backends.embedded import EMBEDDED_WARNING
from cerm.bench import BENCHMARKS, RunConfig, load_items, run_benchmark
from cerm.bench.records import RECORD_VERSION, read_records

from .helpers import DiesAfter, Killed

CONFIG = JudgeConfig(criteria_max_new_tokens=24, eval_max_new_tokens=24)
RECORD_KEYS = {"record_version", "benchmark", "id", "subset", "mode", "correct", "meta", "samples", "prompt",
               "criteria", "candidates"}
CANDIDATE_KEYS = {"index", "role", "is_correct", "response", "score", "status", "criterion_scores",
                  "other_points_score", "is_off_grid", "injection_flags", "criteria_key", "tokens_in", "tokens_out",
                  "seconds", "attempts", "score_std", "error", "is_response_truncated", "text", "expected_score",
                  "score_entropy", "score_probs"}
SUMMARY_KEYS = {"benchmark", "title", "notes", "n_items", "n_candidates", "headline", "metrics", "bootstrap",
                "tie_rate", "parse_failure_rate", "statuses", "groups", "cost", "item_ids", "scorer", "data",
                "selection", "seed", "warnings", "prompt_version", "multi_turn_format", "run_stats", "timing",
                "score_mode"}


class Counting:
    """The real backend, counting the prompts it is sent (= model calls)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.context_length = inner.context_length
        self.prompts = 0

    def generate(self, prompts, params):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, params)

    def count_tokens(self, messages):
        return self.inner.count_tokens(messages)

    def close(self) -> None:
        pass


# measured on the shared 2-core machine (load ~20): tiny 190-280 s per test, embedded far longer -> slow
pytestmark = pytest.mark.slow


# (JudgeBench pairs, chunk size, RM-Bench prompts) per model: the 135M embedded model is ~20x slower per token
SIZES = {"tiny": (20, 5, 5), "embedded": (8, 2, 3)}


@pytest.fixture(scope="module", params=["tiny", "embedded"])
def backend(request):
    from cerm.backends.hf import HFBackend

    model = "embedded" if request.param == "embedded" else str(request.getfixturevalue("tiny_model_dir"))
    counting = Counting(HFBackend(model, batch_size=8))
    counting.sizes = SIZES[request.param]
    return counting


def _shortest(items, n):
    """The n items with the least text (fast prefill); benchmark order kept."""
    keep = {it.id for it in sorted(items, key=lambda it: (len(str(it.prompt)) + sum(map(len, it.candidates)), it.id))[:n]}
    return [it for it in items if it.id in keep]


def _metrics(summary):
    return {k: summary[k] for k in ("headline", "metrics", "groups", "tie_rate", "parse_failure_rate", "statuses",
                                    "item_ids", "n_candidates")}


def _check_outputs(out, bench_name, n_items, n_candidates):
    records = read_records(out / "items.jsonl")
    assert len(records) == n_items
    for rec in records.values():
        assert set(rec) == RECORD_KEYS and rec["record_version"] == RECORD_VERSION
        assert rec["benchmark"] == bench_name and len(rec["candidates"]) == n_candidates
        assert len(rec["criteria"]) == 1  # one criteria generation serves every candidate of the prompt
        for c in rec["candidates"]:
            assert set(c) == CANDIDATE_KEYS
            assert c["criteria_key"] == rec["criteria"][0]["key"]
            assert (c["score"] is None) == (c["status"] != "ok")  # a failure is explicit, never a number
            assert c["score"] is None or 0 <= c["score"] <= 10
            assert c["tokens_in"] > 0 and c["seconds"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    embedded = "SmolLM2" in summary["scorer"]["model"]
    assert (EMBEDDED_WARNING in summary["warnings"]) == embedded
    assert sum(summary["statuses"].values()) == n_items * n_candidates
    assert summary["cost"]["tokens_in_per_item"] > 0 and summary["cost"]["seconds_per_item"] > 0
    report = (out / "report.md").read_text()
    assert (EMBEDDED_WARNING in report) == embedded
    for png in ("scores", "tie_rate", "accuracy"):
        assert f"plots/{png}.png" in report
        assert (out / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    return summary


def test_judgebench_kill_and_resume_recomputes_nothing(tmp_path, backend, shared_data):
    n, chunk, _ = backend.sizes
    bench = BENCHMARKS["judgebench"]
    items = _shortest(load_items(bench, [shared_data / "judgebench"]), n)
    store = tmp_path / "cache.sqlite"
    cfg = RunConfig(tmp_path / "run", chunk_size=chunk, bootstrap=200)
    with pytest.raises(Killed):
        run_benchmark(bench, items, DiesAfter(Judge(backend, CONFIG, Store(store)), 2), cfg)
    assert len(read_records(tmp_path / "run" / "items.jsonl")) == 2 * chunk
    before = backend.prompts
    judge = Judge(backend, CONFIG, Store(store))
    resumed = run_benchmark(bench, items, judge, cfg)
    assert (resumed.n_resumed, resumed.n_scored) == (2 * chunk, n - 2 * chunk)
    # the chunk judged before the kill comes from the cache; only the chunks after it reach the model
    assert judge.stats.judgment_cache_hits == 2 * chunk and judge.stats.criteria_cache_hits == chunk
    assert judge.stats.evaluations_generated == 2 * (n - 3 * chunk)
    assert backend.prompts - before == judge.stats.criteria_generated + 2 * (n - 3 * chunk) <= 3 * (n - 3 * chunk)
    summary = _check_outputs(tmp_path / "run", "judgebench", n, 2)
    assert summary["run_stats"]["items_resumed"] == 2 * chunk
    # rerunning the whole thing, in place or into a new directory, calls the model zero times
    before = backend.prompts
    again = run_benchmark(bench, items, Judge(backend, CONFIG, Store(store)), cfg)
    fresh = run_benchmark(bench, items, Judge(backend, CONFIG, Store(store)), RunConfig(tmp_path / "fresh",
                                                                                          chunk_size=chunk + 2, bootstrap=200))
    assert backend.prompts == before and again.n_scored == 0 and fresh.n_scored == n
    assert _metrics(again.summary) == _metrics(resumed.summary) == _metrics(fresh.summary)


def test_rm_bench_one_criteria_per_prompt_and_deterministic(tmp_path, backend, shared_data):
    n = backend.sizes[2]
    bench = BENCHMARKS["rm-bench"]
    items = _shortest(load_items(bench, [shared_data / "rm-bench" / "chat_filtered.json"]), n)
    before = backend.prompts
    judge = Judge(backend, CONFIG, Store(tmp_path / "cache.sqlite"))
    first = run_benchmark(bench, items, judge, RunConfig(tmp_path / "a", bootstrap=200))
    assert judge.stats.criteria_generated == n and judge.stats.evaluations_generated == 6 * n
    assert backend.prompts - before == 7 * n
    _check_outputs(tmp_path / "a", "rm-bench", n, 6)
    assert set(first.summary["metrics"]) >= {"chat", "chat/hard", "chat/normal", "chat/easy"}
    # greedy decoding: an uncached second judge reproduces every score, so the same metrics
    second = run_benchmark(bench, items, Judge(backend, CONFIG, Store(None)), RunConfig(tmp_path / "b", bootstrap=200))
    assert _metrics(second.summary) == _metrics(first.summary)
