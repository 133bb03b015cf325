"""The runner: per-item flushing, resume after a kill, determinism, refusing mixed runs, server pools."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cerm import Judge, JudgeConfig, Store
from cerm.bench import BENCHMARKS, RunConfig, load_items, resolve_sources, run_benchmark, select_items
from cerm.bench.records import read_records

from .helpers import FIXTURES, DiesAfter, Killed, make_judge, run_fixture


def _metrics(summary):
    return {k: summary[k] for k in ("metrics", "groups", "tie_rate", "parse_failure_rate", "statuses", "item_ids")}


def test_resume_after_kill_recomputes_nothing(tmp_path):
    store = tmp_path / "cache.sqlite"
    with pytest.raises(Killed):
        run_fixture("rm-bench", tmp_path / "run", DiesAfter(make_judge(store), 1), chunk_size=2)
    assert len(read_records(tmp_path / "run" / "items.jsonl")) == 2  # the first chunk was flushed
    judge = make_judge(store)
    resumed = run_fixture("rm-bench", tmp_path / "run", judge, chunk_size=2)
    assert resumed.n_resumed == 2 and resumed.n_scored == 3
    # chunk 2 (2 prompts x 6) was judged before the kill: cache hits; only the last prompt is new
    assert judge.stats.judgment_cache_hits == 12
    assert judge.stats.evaluations_generated == 6
    assert judge.stats.criteria_generated == 1
    fresh = run_fixture("rm-bench", tmp_path / "fresh")
    assert _metrics(resumed.summary) == _metrics(fresh.summary)
    again = make_judge(store)
    rerun = run_fixture("rm-bench", tmp_path / "run", again)
    assert rerun.n_scored == 0 and again.backend.num_prompts == 0
    assert _metrics(rerun.summary) == _metrics(fresh.summary)


def test_same_seed_same_metrics_and_limit_growth(tmp_path):
    a = run_fixture("rewardbench2", tmp_path / "a", limit=6, seed=3)
    b = run_fixture("rewardbench2", tmp_path / "b", limit=6, seed=3)
    assert _metrics(a.summary) == _metrics(b.summary)
    # growing --limit in the same directory reuses the items already written
    grown = run_fixture("rewardbench2", tmp_path / "a", limit=9, seed=3)
    assert grown.n_resumed == 6 and grown.n_scored == 3


def test_truncated_last_record_is_dropped(tmp_path):
    run_fixture("judgebench", tmp_path)
    path = tmp_path / "items.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # a kill in the middle of writing the last line
    records = read_records(path)
    assert len(records) == 7 and path.read_bytes().endswith(b"\n")
    again = run_fixture("judgebench", tmp_path)
    assert again.n_resumed == 7 and again.n_scored == 1


def test_broken_middle_record_names_line(tmp_path):
    run_fixture("judgebench", tmp_path)
    path = tmp_path / "items.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:30]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"items\.jsonl:3: invalid JSON"):
        run_fixture("judgebench", tmp_path)


def test_other_scorer_in_same_dir_is_refused(tmp_path):
    from cerm.bench.baselines import LengthScorer

    run_fixture("judgebench", tmp_path)
    with pytest.raises(ValueError, match="holds a run with other settings"):
        run_fixture("judgebench", tmp_path, LengthScorer())


def test_workers_keep_records_complete(tmp_path):
    serial = run_fixture("rmb", tmp_path / "serial", chunk_size=1)
    parallel = run_fixture("rmb", tmp_path / "parallel", chunk_size=1, workers=3)
    assert _metrics(serial.summary) == _metrics(parallel.summary)


def test_pool_of_openai_servers_stays_busy(tmp_path):
    """A run over three OpenAI-compatible servers keeps requests in flight on all of them at once."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))
    from openai_test_server import InFlight, Reply, ScriptedServer

    servers = [ScriptedServer().start() for _ in range(3)]
    total = InFlight()
    try:
        for s in servers:
            s.reset(lambda request, index: Reply(delay_s=0.2), shared_in_flight=total)  # slow enough to overlap
        from cerm.backends.base import get_backend

        # least-loaded: the spread is what this checks (affine routing would place 5 prompts by hash)
        backend = get_backend("openai", "test-model", base_urls=[s.url for s in servers], concurrency_limit=9,
                              routing="least-loaded")
        judge = Judge(backend, JudgeConfig(), Store(tmp_path / "cache.sqlite"))
        bench = BENCHMARKS["rm-bench"]
        items = select_items(load_items(bench, resolve_sources(bench, None, FIXTURES)))
        result = run_benchmark(bench, items, judge, RunConfig(tmp_path / "run", bootstrap=0, chunk_size=2,
                                                               workers=3))
        backend.close()
    finally:
        for s in servers:
            s.stop()
    # 5 prompts: 5 criteria + 30 evaluations, in 3 chunks scored concurrently, spread over the pool
    n_requests = sum(len(s.requests) for s in servers)
    assert n_requests == judge.stats.criteria_generated + judge.stats.evaluations_generated == 35
    assert result.summary["n_items"] == len(items) and result.summary["parse_failure_rate"] == 0.0
    assert all(len(s.requests) >= n_requests // 6 for s in servers)  # no server left idle
    assert all(s.in_flight.peak >= 2 for s in servers)
    assert total.peak >= 6  # close to the concurrency limit of 9, not one request at a time
    rec = json.loads((tmp_path / "run" / "items.jsonl").read_text().splitlines()[0])
    assert rec["candidates"][0]["tokens_out"] > 0


def test_backend_errors_are_not_results_a_rerun_scores_them_again(tmp_path):
    from cerm.types import Generation

    from .helpers import score_script

    state = {"down": True}

    def script(messages, params):
        if state["down"] and len(messages) > 1 and "SCORE:" in messages[-1]["content"]:
            return Generation("", "error", error="HTTP 503")
        return score_script(messages, params)

    from cerm.backends.fake import FakeBackend

    store = tmp_path / "cache.sqlite"
    judge = Judge(FakeBackend("scores", script=script), JudgeConfig(), Store(store))
    first = run_fixture("rm-bench", tmp_path / "run", judge)
    assert first.n_backend_errors == first.n_scored > 0
    state["down"] = False
    judge = Judge(FakeBackend("scores", script=script), JudgeConfig(), Store(store))
    second = run_fixture("rm-bench", tmp_path / "run", judge)
    assert second.n_backend_errors == 0 and second.n_scored == first.n_scored and second.n_resumed == 0
    records = read_records(tmp_path / "run" / "items.jsonl")
    assert len(records) == first.n_scored  # one record per item: the failed ones were replaced
    assert _metrics(second.summary) == _metrics(run_fixture("rm-bench", tmp_path / "fresh").summary)


def test_bench_data_that_is_not_utf8_or_holds_a_surrogate_names_file_and_line(tmp_path):
    from cerm.bench.common import DataError, bench_rows

    bad = tmp_path / "d.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not UTF-8: byte b'\\xff' at column 8"):
        list(bench_rows(bad))
    bad.write_text('{"a": 1}\n{"a": ["ok", "\\udc00"]}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'a\[1\]': lone surrogate"):
        list(bench_rows(bad))
