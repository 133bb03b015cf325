"""RL metrics: pure functions over rollouts and numbers, and the per-step sinks (JSONL, accelerate trackers).

Pairwise accuracy here is strict: a tie or a missing score counts as wrong, the same rule as RM-Bench/RMB.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from cerm.io import read_output
from cerm.metrics import pairwise_accuracy  # also re-exported for the trainer
from cerm.train.rl.rollout import PairRollout

Callback = Callable[[int, dict[str, float]], None]


def tie_rate(chosen: Sequence[float | None], rejected: Sequence[float | None]) -> float:
    """Share of pairs with two valid, equal scores."""
    if not chosen:
        return float("nan")
    return sum(a is not None and a == b for a, b in zip(chosen, rejected, strict=True)) / len(chosen)


def describe(prefix: str, values: Sequence[float]) -> dict[str, float]:
    """``{prefix}/mean``, ``/std`` (population), ``/min``, ``/max``; empty input gives nothing."""
    if not values:
        return {}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {f"{prefix}/mean": mean, f"{prefix}/std": std, f"{prefix}/min": min(values), f"{prefix}/max": max(values)}


def rollout_metrics(rollouts: Sequence[PairRollout]) -> dict[str, float]:
    """Accuracy, ties, parse failures, truncation and lengths over every (k, m, m') comparison of a step."""
    chosen: list[float | None] = []
    rejected: list[float | None] = []
    judgments = [t for r in rollouts for t in (*r.chosen, *r.rejected)]
    criteria = [t for r in rollouts for t in r.criteria]
    for r in rollouts:
        for k in range(len(r.criteria)):
            for a in r.scores("chosen", k):
                for b in r.scores("rejected", k):
                    chosen.append(a)
                    rejected.append(b)
    statuses: dict[str, float] = {}
    for t in judgments:
        key = f"rollout/status/{t.status.value if t.status else 'none'}"
        statuses[key] = statuses.get(key, 0.0) + 1.0 / len(judgments)
    return {
        "rollout/pairwise_accuracy": pairwise_accuracy(chosen, rejected),
        "rollout/tie_rate": tie_rate(chosen, rejected),
        "rollout/parse_failure_rate": sum(t.score is None for t in judgments) / len(judgments),
        "rollout/criteria_truncation_rate": sum(t.finish_reason == "length" for t in criteria) / len(criteria),
        **statuses,
        **describe("length/criteria", [len(t.completion_ids) for t in criteria]),
        **describe("length/judgment", [len(t.completion_ids) for t in judgments]),
        **describe("length/judgment_prompt", [len(t.prompt_ids) for t in judgments]),
    }


class MetricsLogger:
    """Writes each step's metrics to ``metrics.jsonl`` (flushed per line), accelerate trackers and callbacks.

    Only the main process should build one with a path; other ranks pass ``path=None``.
    """

    def __init__(self, path: Path | None, accelerator: Any = None, callbacks: Sequence[Callback] = ()):
        self.accelerator = accelerator
        self.callbacks = list(callbacks)
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Write one step's metrics (rank 0) and pass them to the callbacks."""
        if self._file is not None:
            record = {"step": step, **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                       for k, v in metrics.items()}}
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in metrics.items() if not math.isnan(v)}, step=step)
        for callback in self.callbacks:
            callback(step, metrics)

    def close(self) -> None:
        """Close the metrics file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl``; a torn last line (a killed run) is skipped, any other bad line raises."""
    return [rec for _, rec in read_output(path, what="a metrics record", repair=False).records]
