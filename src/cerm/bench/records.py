"""The per-item JSONL record of a benchmark run, and reading it back.

One line per item (``RECORD_VERSION`` 1)::

    {"record_version": 1, "benchmark": "rm-bench", "id": "chat:8", "subset": "chat", "mode": "ratings",
     "correct": [0, 1, 2], "meta": {...}, "samples": 1,
     "criteria": [{"key": "<sha256>", "source": "generated", "tokens_in": 812, "tokens_out": 301,
                   "seconds": 4.1, "parse_warning": null}],
     "candidates": [{"index": 0, "role": "chosen[concise]", "is_correct": true, "score": 8.0,
                     "status": "ok", "criterion_scores": [8, 7], "other_points_score": null,
                     "criteria_key": "<sha256>", "tokens_in": 1630, "tokens_out": 540, "seconds": 7.9,
                     "attempts": 1, "score_std": null, "error": null}, ...]}

``score`` is null when the judgment failed and ``status`` says why (cerm.ParseStatus values).
Criteria costs are what generating them cost (also when this run read them from the cache).

The texts that ``cerm view`` shows are kept too: ``prompt`` (the query, a string or chat messages),
``criteria[].text`` and ``criteria[].items`` ([{term, description}]), ``candidates[].response`` and
``candidates[].text`` (the judgment text). Runs written before these fields existed lack them;
readers use ``.get``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cerm.bench.common import BenchItem, DataError, Outcome
from cerm.types import ScoredItem, ScoreMode

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
        "criteria": [{"key": c.key, "source": c.source, "tokens_in": c.tokens_in, "tokens_out": c.tokens_out,
                      "seconds": c.seconds, "parse_warning": c.parse_warning, "text": c.text,
                      "items": [{"term": x.term, "description": x.description} for x in c.items]}
                     for c in scored.criteria],
        "candidates": [{
            "index": i, "role": item.roles[i], "is_correct": i in item.correct, "score": j.score,
            "status": j.status.value, "criterion_scores": list(j.criterion_scores),
            "other_points_score": j.other_points_score, "criteria_key": j.criteria_key,
            "tokens_in": j.tokens_in, "tokens_out": j.tokens_out, "seconds": j.seconds,
            "attempts": j.attempts, "score_std": j.score_std, "error": j.error,
            "response": item.candidates[i], "text": j.text,
            # [R] the score readout at the box (null / [] unless the judge ran with expected_score=True)
            "expected_score": j.expected_score, "score_entropy": j.score_entropy, "score_probs": list(j.score_probs),
        } for i, j in enumerate(scored.judgments)],
    }


def outcome_from_record(rec: dict[str, Any], score_mode: ScoreMode = "greedy") -> Outcome:
    """The item's outcome ranked by the greedy ``score`` or by the ``expected_score`` [R]."""
    field = {"greedy": "score", "expected": "expected_score"}[score_mode]
    return Outcome(id=rec["id"], subset=rec["subset"], mode=rec["mode"], correct=tuple(rec["correct"]),
                   scores=tuple(c.get(field) for c in rec["candidates"]), meta=rec.get("meta", {}))


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by id. A final line cut short by a kill is dropped (and trimmed from the file)."""
    path = Path(path)
    if not path.exists():
        return {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    out: dict[str, dict[str, Any]] = {}
    good_bytes = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):  # no trailing newline: the write was interrupted
                logger.warning("%s:%d: dropping a partial last record left by an interrupted run", path, lineno)
                with open(path, "r+b") as f:
                    f.truncate(min(good_bytes, len(raw)))
                break
            raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg}); fix or delete the line to resume.") from None
        for name in ("id", "subset", "mode", "correct", "candidates"):
            if name not in rec:
                raise DataError(f"{path}:{lineno}: field {name!r}: missing; not a cerm bench record.")
        out[rec["id"]] = rec
        good_bytes += len(line) + 1
    return out
