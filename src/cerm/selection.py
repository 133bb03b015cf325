"""Decisions over scored responses, pure: who wins a comparison, which responses tie at the top."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from cerm.types import Judgment, ScoreMode, TiePolicy

TIE_POLICIES: tuple[TiePolicy, ...] = ("none", "first", "random", "mean", "expected")


def winner(a: float | None, b: float | None) -> Literal["a", "b", "tie"] | None:
    """A strict ``>`` decides; equal scores tie; a missing score decides nothing (None)."""
    if a is None or b is None:
        return None
    return "a" if a > b else "b" if b > a else "tie"


def top_tied(judgments: Sequence[Judgment], mode: ScoreMode) -> tuple[int, ...]:
    """The indices sharing the top ``mode`` score, in order; () when no response has one."""
    valid = [(v, i) for i, j in enumerate(judgments) if (v := j.value(mode)) is not None]
    if not valid:
        return ()
    top = max(v for v, _ in valid)
    return tuple(i for v, i in valid if v == top)


def best_unique(values: Sequence[tuple[float | None, int]]) -> int | None:
    """The index with the single highest value; None when values are missing or the top is still tied."""
    valid = [(v, i) for v, i in values if v is not None]
    if not valid:
        return None
    top = max(v for v, _ in valid)
    best = [i for v, i in valid if v == top]
    return best[0] if len(best) == 1 else None


def best_first(values: Sequence[tuple[float | None, int]]) -> int | None:
    """The index with the highest value, the first of equals; None when every value is missing."""
    valid = [(v, i) for v, i in values if v is not None]
    if not valid:
        return None
    top = max(v for v, _ in valid)
    return next(i for v, i in valid if v == top)


def check_pick(tie_policy: str, score_mode: str, expected_available: bool) -> None:
    """Refuse an unknown tie policy, and expected scores from a judge that does not read them."""
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy {tie_policy!r} must be one of {', '.join(TIE_POLICIES)}.")
    if score_mode not in ("greedy", "expected"):
        raise ValueError(f"score mode {score_mode!r} must be 'greedy' or 'expected'.")
    if "expected" in (tie_policy, score_mode) and not expected_available:
        raise ValueError("expected scores need JudgeConfig(expected_score=True) (--score expected).")
