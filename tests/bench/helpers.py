"""Shared bench test helpers: a fake judge whose scores are written in the responses ("SCORE:7.5").

Fixture files under tests/fixtures/bench/ use the official schemas; each candidate response carries
``SCORE:<x>`` (or ``SCORE:fail`` for a parse failure), so every expected metric is worked out by hand
in the test that checks it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cerm import Judge, JudgeConfig, Store
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
from cerm.types import Message, SamplingParams

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"


def fixture_rows(name: str) -> list[dict]:
    """The rows of a JSON Lines fixture under tests/fixtures/bench/, e.g. ``"ppe/human_preference.jsonl"``."""
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """``rows`` as JSON Lines at ``path`` (an edited fixture copy, for the bad-data tests)."""
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def score_script(messages: list[Message], params: SamplingParams) -> str:
    """Criteria for turn 1; for turn 2 the score written in the response, or a reply with no box."""
    if len(messages) == 1:
        return CANNED_CRITERIA
    m = re.search(r"SCORE:(\S+)", messages[-1]["content"])
    if m is None or m.group(1) == "fail":
        return "I am not able to give a score for this response."
    return canned_evaluation(float(m.group(1)))


def make_judge(store_path: Path | None = None) -> Judge:
    return Judge(FakeBackend("scores", script=score_script), JudgeConfig(), Store(store_path))


def run_fixture(name: str, out: Path, scorer=None, *, subsets=(), limit=None, seed=0, bootstrap=50, **kw):
    """Load the fixture copy of benchmark ``name`` and run it through the real runner."""
    from cerm.bench import BENCHMARKS, RunConfig, load_items, resolve_sources, run_benchmark, select_items

    bench = BENCHMARKS[name]
    items = select_items(load_items(bench, resolve_sources(bench, None, FIXTURES)), subsets, limit, seed)
    config = RunConfig(out, seed=seed, bootstrap=bootstrap, selection={"subsets": list(subsets), "limit": limit},
                       **kw)
    return run_benchmark(bench, items, scorer if scorer is not None else make_judge(), config,
                         sources=[str(FIXTURES / bench.local_dir)])


def metric(result, key: str) -> float | None:
    return result.summary["metrics"][key]["value"]


class Killed(Exception):
    """The simulated death of a benchmark run."""


class DiesAfter:
    """Scores normally for ``n_ok`` chunks; on the next one the judge finishes (and caches) but the
    process "dies" before the runner can write the records, as a kill between generation and write."""

    def __init__(self, judge: Judge, n_ok: int) -> None:
        self.judge, self.n_ok = judge, n_ok

    def score_batch(self, items):
        result = self.judge.score_batch(items)
        if self.n_ok == 0:
            raise Killed
        self.n_ok -= 1
        return result

    def describe(self):
        from cerm.bench.runner import describe_scorer

        return describe_scorer(self.judge)
