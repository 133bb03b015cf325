"""THE reward rule (score -> reward, no score -> failure reward, backend failure -> raise) and the grouping.

``reward_rule`` is the one place a judgment becomes a reward; the TRL adapter (through ``score_rollouts``),
the verl adapter and the reward server all call it. ``score_rollouts`` groups rollouts by prompt: the
rollouts of one prompt become one ``(query, [responses])`` item, so the judge generates that prompt's
criteria once (and its SQLite cache, keyed by the prompt text, shares them across calls and processes).

Failures are never a number here. A judgment without a score gets ``RewardConfig.failure_reward``,
an explicit, configured value (``None`` = TRL's "no reward"), and is counted in ``RolloutRewards``.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cerm.judge import Judge
from cerm.prompts import render_query
from cerm.types import SCORE_MODES, Judgment, ParseStatus, Query, ScoreMode

logger = logging.getLogger(__name__)

Scale = Literal["raw", "unit", "centered"]
SCALES = ("raw", "unit", "centered")

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)


@dataclass(frozen=True)
class RewardConfig:
    """How judge scores become rewards.

    Args:
        scale: "raw" = the 0-10 score; "unit" = score / 10 (the paper's reward, docs/training.md §4);
            "centered" = score / 10 minus the mean of the valid unit scores of the same prompt in this call
            (ours [R]; GRPO normalises per group anyway, so this matters for RLOO/REINFORCE-style baselines).
        failure_reward: the reward of a judgment without a score (no box, truncated, too long...).
            ``None`` hands TRL a "no reward" (NaN: the sample is left out of that reward function).
            The default 0.0 follows docs/training.md §4 [R].
        strip_think: judge only the final answer: drop ``<think>...</think>`` blocks, and everything up to
            a dangling ``</think>`` (docs/training.md §4 [R]).
        raise_on_backend_error: a backend failure (server down, timeout after retries) raises
            ``BackendFailure`` instead of silently training on ``failure_reward``.
        score: "greedy" = the boxed score (the paper's); "expected" = the expected score over the 21 values
            at the box, a continuous reward that rarely ties inside a GRPO group [R]. "expected" needs a
            judge built with ``JudgeConfig(expected_score=True)``.
    """

    scale: Scale = "unit"
    failure_reward: float | None = 0.0
    strip_think: bool = True
    raise_on_backend_error: bool = True
    score: ScoreMode = "greedy"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale {self.scale!r} must be one of {', '.join(SCALES)}.")
        if self.score not in SCORE_MODES:
            raise ValueError(f"score {self.score!r} must be one of {', '.join(SCORE_MODES)}.")


class BackendFailure(RuntimeError):
    """The judge's backend failed for some rollouts; no reward is made up for them."""


class Verdict(Protocol):
    """What the rule reads of a judgment: a ``Judgment``, or a judgment a ``cerm serve`` replica returned."""

    @property
    def score(self) -> float | None:
        """The judge's score (0-10), or None when it could not be read."""
    @property
    def status(self) -> ParseStatus | str:
        """The parse status."""
    @property
    def error(self) -> str | None:
        """What went wrong, if anything."""


def is_backend_failure(v: Verdict) -> bool:
    """The backend failed (server down, timeout after retries): the model never produced this judgment."""
    return v.status in (ParseStatus.BACKEND_ERROR, ParseStatus.BACKEND_ERROR.value)


def backend_failure(verdicts: Sequence[Verdict], where: str = "") -> BackendFailure | None:
    """The error to raise for these judgments, or None when the backend answered for all of them."""
    failed = [v for v in verdicts if is_backend_failure(v)]
    if not failed:
        return None
    at = f" ({where})" if where else ""
    return BackendFailure(f"{len(failed)} of {len(verdicts)} judgments failed in the backend{at}: {failed[0].error}")


def reward_rule(verdicts: Sequence[Verdict], ids: Sequence[int], config: RewardConfig,
                where: str = "") -> list[float | None]:
    """Rewards for judgments: the one rule every adapter applies.

    A score maps under ``config.scale``; a judgment without a score (the model answered, no readable box)
    gets ``config.failure_reward``; a backend failure is never a reward. ``config.score == "expected"``
    reads each verdict's ``expected_score`` (the readout at the box [R]) instead of its greedy ``score``.

    Raises:
        BackendFailure: when some judgment failed in the backend and ``config.raise_on_backend_error``.
    """
    error = backend_failure(verdicts, where)
    if error is not None and config.raise_on_backend_error:
        raise error
    if config.score == "expected":
        return map_scores([getattr(v, "expected_score", None) for v in verdicts], ids, config)
    return map_scores([v.score for v in verdicts], ids, config)


def unit_reward(score: float | None) -> float | None:
    """The paper's reward of one judgment, score / 10 (``None`` without a score): ``/v1/score``'s rewards."""
    return map_scores([score], [0], RewardConfig(scale="unit", failure_reward=None))[0]


@dataclass(frozen=True)
class RolloutRewards:
    """Rewards for a batch of rollouts, aligned with the input, plus what produced them."""

    rewards: list[float | None]
    judgments: list[Judgment]
    group_ids: list[int]  # rollouts with the same prompt share an id (the index of its first rollout)
    criteria_generated: int
    criteria_cache_hits: int
    score_mode: ScoreMode = "greedy"

    @property
    def scores(self) -> list[float | None]:
        """The 0-10 scores the rewards came from (greedy or expected, per ``score_mode``)."""
        return [j.value(self.score_mode) for j in self.judgments]

    @property
    def statuses(self) -> list[str]:
        """Each judgment's status."""
        return [j.status.value for j in self.judgments]

    @property
    def parse_failures(self) -> int:
        """How many judgments have no score."""
        return sum(1 for s in self.scores if s is None)

    @property
    def parse_fail_rate(self) -> float:
        """The share of judgments without a score."""
        return self.parse_failures / len(self.judgments) if self.judgments else 0.0

    @property
    def tie_rate(self) -> float | None:
        """The share of same-group pairs with equal valid scores (None with no such pair)."""
        return pairwise_tie_rate(self.scores, self.group_ids)

    @property
    def num_groups(self) -> int:
        """How many prompt groups the batch held."""
        return len(set(self.group_ids))


def strip_think(text: str) -> str:
    """The final answer of a reasoning model: ``<think>`` blocks removed (a dangling ``</think>`` too)."""
    text = _THINK_RE.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()


def group_ids(query_texts: Sequence[str]) -> list[int]:
    """For each position, the index of the first position with the same query text."""
    first: dict[str, int] = {}
    return [first.setdefault(q, i) for i, q in enumerate(query_texts)]


def map_scores(scores: Sequence[float | None], ids: Sequence[int], config: RewardConfig) -> list[float | None]:
    """Rewards from 0-10 scores (``None`` = failed judgment) under ``config.scale``. Pure."""
    if config.scale == "raw":
        return [config.failure_reward if s is None else float(s) for s in scores]
    unit = [None if s is None else s / 10.0 for s in scores]
    if config.scale == "unit":
        return [config.failure_reward if u is None else u for u in unit]
    means: dict[int, float] = {}
    for g in set(ids):
        valid = [u for u, gi in zip(unit, ids, strict=True) if gi == g and u is not None]
        if valid:
            means[g] = sum(valid) / len(valid)
    return [config.failure_reward if u is None else u - means[g] for u, g in zip(unit, ids, strict=True)]


def pairwise_tie_rate(scores: Sequence[float | None], ids: Sequence[int]) -> float | None:
    """Share of same-prompt pairs of valid scores that are equal (ours [R]: a tie gives GRPO no signal).

    ``None`` when no prompt has two valid scores.
    """
    by_group: dict[int, list[float]] = {}
    for s, g in zip(scores, ids, strict=True):
        if s is not None:
            by_group.setdefault(g, []).append(s)
    pairs = ties = 0
    for values in by_group.values():
        for a, b in itertools.combinations(values, 2):
            pairs += 1
            ties += a == b
    return ties / pairs if pairs else None


def score_rollouts(judge: Judge, queries: Sequence[Query], responses: Sequence[str],
                   config: RewardConfig) -> RolloutRewards:
    """Judge rollouts grouped by prompt (criteria once per unique prompt) and map them to rewards.

    Raises:
        BackendFailure: when ``config.raise_on_backend_error`` and some judgment failed in the backend.
    """
    if len(queries) != len(responses):
        raise ValueError(f"got {len(queries)} prompts but {len(responses)} responses; they must align.")
    if config.score == "expected" and not judge.config.expected_score:
        raise ValueError("RewardConfig(score='expected') needs a judge built with JudgeConfig(expected_score=True).")
    if not queries:
        return RolloutRewards([], [], [], 0, 0)
    texts = [render_query(q) for q in queries]
    ids = group_ids(texts)
    answers = [strip_think(r) if config.strip_think else r for r in responses]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        members.setdefault(g, []).append(i)
    scored = judge.score_batch([(queries[g], [answers[i] for i in idx]) for g, idx in members.items()])
    judgments: list[Judgment | None] = [None] * len(queries)
    generated = hits = 0
    for idx, item in zip(members.values(), scored, strict=True):
        for i, j in zip(idx, item.judgments, strict=True):
            judgments[i] = j
        for c in item.criteria:
            generated += c.source == "generated"
            hits += c.source == "cache"
    done: list[Judgment] = judgments  # type: ignore[assignment]
    rewards = reward_rule(done, ids, config, where=judge.backend.model_id)
    result = RolloutRewards(rewards, done, ids, generated, hits, config.score)
    if result.parse_failures:
        logger.warning("cerm reward: %d of %d judgments have no score (statuses %s); they get failure_reward=%s",
                       result.parse_failures, len(done), sorted({s for s in result.statuses if s != "ok"}),
                       config.failure_reward)
    return result
