"""The per-item JSONL record of a benchmark run, and reading it back.

One line per item (``RECORD_VERSION`` 1)::

    {"record_version": 1, "benchmark": "rm-bench", "id": "chat:8", "subset": "chat", "mode": "ratings",
     "correct": [0, 1, 2], "meta": {...}, "samples": 1,
     "criteria": [{"key": "<sha256>", "source": "generated", "tokens_in": 812, "tokens_out": 301,
                   "seconds": 4.1, "parse_warning": null}],
     "candidates": [{"index": 0, "role": "chosen[concise]", "is_correct": true, "score": 8.0,
                     "status": "ok", "criterion_scores": [8, 7], "other_points_score": null,
                     "criteria_key": "<sha256>", "tokens_in": 1630, "tokens_out": 540, "seconds": 7.9,
                     "attempts": 1, "score_std": null, "error": null, "is_off_grid": false,
                     "injection_flags": [], "is_response_truncated": false}, ...]}

``score`` is null when the judgment failed and ``status`` says why (cerm.ParseStatus values).
Criteria costs are what generating them cost (also when this run read them from the cache).

The texts that ``cerm view`` shows are kept too: ``prompt`` (the query, a string or chat messages),
``criteria[].text`` and ``criteria[].items`` ([{term, description}]), ``candidates[].response`` and
``candidates[].text`` (the judgment text). Runs written before these fields existed lack them;
readers use ``.get``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cerm.bench.common import BenchItem, Outcome
from cerm.io import criteria_record, judgment_record, read_output
from cerm.types import Judgment, ParseStatus, ScoredItem, ScoreMode

logger = logging.getLogger(__name__)

RECORD_VERSION = 1


def item_record(item: BenchItem, scored: ScoredItem, samples: int = 1) -> dict[str, Any]:
    """The JSONL record of one scored item."""
    if len(scored.judgments) != len(item.candidates):
        raise ValueError(f"item {item.id}: {len(scored.judgments)} judgments for {len(item.candidates)} candidates.")
    return {
        "record_version": RECORD_VERSION, "benchmark": item.benchmark, "id": item.id, "subset": item.subset,
        "mode": item.mode, "correct": list(item.correct), "meta": dict(item.meta), "samples": samples,
        "prompt": item.prompt,
        "criteria": [criteria_record(c) for c in scored.criteria],
        "candidates": [{"index": i, "role": item.roles[i], "is_correct": i in item.correct,
                        "response": item.candidates[i], **_candidate(j)} for i, j in enumerate(scored.judgments)],
    }


def _candidate(j: Judgment) -> dict[str, Any]:
    record = judgment_record(j)
    record.pop("samples", None)  # k sampled texts per candidate would multiply the file; the mean is kept
    return record


def outcome_from_record(rec: dict[str, Any], score_mode: ScoreMode = "greedy") -> Outcome:
    """The item's outcome ranked by the greedy ``score`` or by the ``expected_score`` [R]."""
    field = {"greedy": "score", "expected": "expected_score"}[score_mode]
    return Outcome(id=rec["id"], subset=rec["subset"], mode=rec["mode"], correct=tuple(rec["correct"]),
                   scores=tuple(c.get(field) for c in rec["candidates"]), meta=rec.get("meta", {}))


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by id. A final line cut short by a kill is dropped (and trimmed from the file)."""
    read = read_output(path, required=("id", "subset", "mode", "correct", "candidates"), what="a cerm bench record")
    return {rec["id"]: rec for _, rec in read.records}


def has_backend_error(rec: dict[str, Any]) -> bool:
    """A backend error is not a result: such an item is scored again when the run resumes."""
    return any(c.get("status") == ParseStatus.BACKEND_ERROR.value for c in rec["candidates"])
