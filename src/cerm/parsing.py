"""Read criteria lists and scores out of model text. Pure functions; they never raise on model text.

A failure is a value: ``ParsedJudgment.score is None`` with a ``status`` saying why. Each caller picks
its own convention (benchmarks their official rule, RL a ``failure_reward``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cerm.types import Criterion, FinishReason, ParseStatus

ParserMode = Literal["hardened", "reference"]

CRITERIA_START = "[Start of Criteria]"
CRITERIA_END = "[End of Criteria]"

_BOX = "\\boxed{"
# the harness's rule, kept verbatim so its behaviour can be reproduced (protocol §6)
_REFERENCE_RE = re.compile(r"\\boxed\{(\d+(?:\.5)?)\}")
_WRAPPER_RE = re.compile(r"^\\(?:text|mathbf|textbf|mathrm)\{(.*)\}$", re.DOTALL)
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_OTHER_POINTS_RE = re.compile(r"other\s+points?", re.IGNORECASE)
_ITEM_RE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.*\S)\s*$")


@dataclass(frozen=True)
class ParsedJudgment:
    score: float | None
    status: ParseStatus
    criterion_scores: tuple[float, ...] = ()
    other_points_score: float | None = None
    is_off_grid: bool = False


@dataclass(frozen=True)
class ParsedCriteria:
    items: tuple[Criterion, ...]
    warning: str | None


def find_boxes(text: str) -> list[tuple[int, str | None]]:
    r"""Every ``\boxed{...}`` span as (start offset, content); content is None if the braces never close."""
    boxes: list[tuple[int, str | None]] = []
    pos = text.find(_BOX)
    while pos != -1:
        depth, i = 1, pos + len(_BOX)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        content = text[pos + len(_BOX) : i - 1] if depth == 0 else None
        boxes.append((pos, content))
        pos = text.find(_BOX, i if depth == 0 else pos + len(_BOX))
    return boxes


def normalise_box(content: str) -> float | None:
    r"""Number inside a box after stripping ``$``, whitespace, ``\text{}``-style wrappers and ``/10``."""
    s = content.replace("$", "").strip()
    while (m := _WRAPPER_RE.match(s)) is not None:
        s = m.group(1).strip()
    s = re.sub(r"\s*/\s*10(?:\.0*)?$", "", s).strip()
    if not _NUMBER_RE.match(s):
        return None
    return float(s)


def parse_judgment(
    text: str | None, finish_reason: FinishReason = "stop", mode: ParserMode = "hardened"
) -> ParsedJudgment:
    """Read the overall 0-10 score (the last box) and the earlier per-criterion boxes."""
    if text is None or not text.strip():
        return ParsedJudgment(None, ParseStatus.EMPTY)
    if mode == "reference":
        found = _REFERENCE_RE.findall(text)
        if not found:
            return ParsedJudgment(None, ParseStatus.NO_BOX)
        return ParsedJudgment(float(found[-1]), ParseStatus.OK, tuple(float(x) for x in found[:-1]))
    if finish_reason == "length":
        return ParsedJudgment(None, ParseStatus.TRUNCATED)
    boxes = find_boxes(text)
    if not boxes:
        return ParsedJudgment(None, ParseStatus.NO_BOX)
    last_pos, last_content = boxes[-1]
    earlier = boxes[:-1]
    other_idx = _other_points_box(text, earlier)
    criterion_scores, other = [], None
    for i, (_, content) in enumerate(earlier):
        value = normalise_box(content) if content is not None else None
        if value is None:
            continue
        if i == other_idx:
            other = value
        else:
            criterion_scores.append(value)
    value = normalise_box(last_content) if last_content is not None else None
    if value is None:
        return ParsedJudgment(None, ParseStatus.UNPARSEABLE, tuple(criterion_scores), other)
    if not 0.0 <= value <= 10.0:
        return ParsedJudgment(None, ParseStatus.OUT_OF_RANGE, tuple(criterion_scores), other)
    return ParsedJudgment(
        value, ParseStatus.OK, tuple(criterion_scores), other, is_off_grid=(value * 2) != int(value * 2)
    )


def _other_points_box(text: str, boxes: list[tuple[int, str | None]]) -> int | None:
    """Index of the first box after the last "Other Point(s)" mention, if any."""
    mentions = [m.start() for m in _OTHER_POINTS_RE.finditer(text)]
    if not mentions:
        return None
    for i, (pos, _) in enumerate(boxes):
        if pos > mentions[-1]:
            return i
    return None


def parse_criteria(text: str) -> ParsedCriteria:
    """Parse the numbered list between the criteria markers into (term, description) items.

    Display only (protocol §5): a failure is a warning, never an error.
    """
    start = text.rfind(CRITERIA_START)
    if start == -1:
        return ParsedCriteria((), f"no {CRITERIA_START} marker")
    body = text[start + len(CRITERIA_START) :]
    end = body.find(CRITERIA_END)
    warning = None
    if end == -1:
        warning = f"no {CRITERIA_END} marker after {CRITERIA_START}"
    else:
        body = body[:end]
    items = []
    for line in body.splitlines():
        m = _ITEM_RE.match(line)
        if m is None:
            continue
        item = m.group(1).replace("**", "").strip()
        term, sep, description = item.partition(":")
        items.append(Criterion(term.strip(), description.strip()) if sep else Criterion(item, ""))
    if not items:
        warning = warning or "no numbered criteria between the markers"
    return ParsedCriteria(tuple(items), warning)
