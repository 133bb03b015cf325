"""Read criteria lists and scores out of model text. Pure functions; they never raise on model text.

A failure is a value: ``ParsedJudgment.score is None`` with a ``status`` saying why. Each caller picks
its own convention (benchmarks their official rule, RL a ``failure_reward``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, compress, repeat
from operator import add, contains, is_not
from typing import Literal

from cerm.types import Criterion, FinishReason, ParseStatus

ParserMode = Literal["hardened", "reference"]

CRITERIA_START = "[Start of Criteria]"
CRITERIA_END = "[End of Criteria]"

_BOX = "\\boxed{"
# the harness's rule, kept verbatim so its behaviour can be reproduced (protocol §6)
_REFERENCE_RE = re.compile(r"\\boxed\{(\d+(?:\.5)?)\}")
_WRAPPER_RE = re.compile(r"^\\(?:text|mathbf|textbf|mathrm)\{(.*)\}$", re.DOTALL)
_NUMBER_RE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_OUT_OF_10_RE = re.compile(r"/\s*10(?:\.0*)?$")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_OTHER_POINTS_RE = re.compile(r"other\s+points?", re.IGNORECASE)
# the item marker only: matching the rest with a regex backtracked quadratically on long blank lines
_ITEM_RE = re.compile(r"\s*(?:[0-9]+[.)]|[-*•])\s")


@dataclass(frozen=True)
class ParsedJudgment:
    """What the parser read from one evaluation: the overall score (or None and why) and the per-criterion
    scores.
    """
    score: float | None
    status: ParseStatus
    criterion_scores: tuple[float, ...] = ()
    other_points_score: float | None = None
    is_off_grid: bool = False


@dataclass(frozen=True)
class ParsedCriteria:
    """The criteria items of a criteria text, and a warning when the list could not be read cleanly."""

    items: tuple[Criterion, ...]
    warning: str | None


_BRACES_RE = re.compile(r"\{+|\}+")
# a box holding more than this cannot be a score; never run the number regexes over it [R]
_MAX_BOX_CHARS = 100


def find_boxes(text: str) -> list[tuple[int, str | None]]:
    r"""Every ``\boxed{...}`` span as (start offset, content); content is None if the braces never close.

    A box nested inside a closed box is part of its content, not a box of its own; boxes inside an
    unclosed box are found. Linear in ``len(text)`` (a rescan to the end per unclosed box was quadratic on
    degenerate output): one pass with a stack of open boxes, in which the text between two box starts is
    scanned brace by brace only if it holds a closing brace; runs of boxes without one are pushed in bulk.
    """
    pieces = text.split(_BOX)  # pieces[k + 1]: the text after box k's "{", up to the next box
    n = len(pieces) - 1
    if n == 0:
        return []
    # C-level maps and accumulates: the worst case (1 MB of "\\boxed{") has 150,000 boxes
    starts = list(accumulate(map(add, map(len, pieces[1:-1]), repeat(len(_BOX))), initial=len(pieces[0])))
    ends: list[int | None] = [None] * n  # offset of the closing brace; None while open
    stack_box: list[int] = []  # the open boxes, innermost last
    stack_level: list[int] = []  # the brace depth before each one's "{"; strictly rising
    depth, first = 0, 0
    for k in [*compress(range(n), map(contains, pieces[1:], repeat("}"))), n]:
        if k > first:  # boxes first..k-1 close nothing: push them at once
            levels = list(accumulate(map(add, map(str.count, pieces[first + 1 : k], repeat("{")), repeat(1)),
                                     initial=depth))
            stack_box.extend(range(first, k))
            stack_level.extend(levels)
            depth = levels[-1] + 1 + pieces[k].count("{")
        if k == n:
            break
        stack_box.append(k)
        stack_level.append(depth)
        depth += 1
        offset, piece = starts[k] + len(_BOX), pieces[k + 1]
        if "{" not in piece:  # the usual "7} ...": walk its closers with str.find
            at = piece.find("}")
            while at != -1 and stack_box:
                depth -= 1
                if depth == stack_level[-1]:
                    stack_level.pop()
                    ends[stack_box.pop()] = offset + at
                at = piece.find("}", at + 1)
            depth = depth if stack_box else 0  # closers outside every box change nothing
            first = k + 1
            continue
        for m in _BRACES_RE.finditer(piece):
            run = m.end() - m.start()
            if m.group()[0] == "{":
                depth += run
                continue
            used = 0  # a run of closers may close several open boxes, innermost first
            while stack_level and depth - (run - used) <= stack_level[-1]:
                level = stack_level.pop()
                used += depth - level
                depth = level
                ends[stack_box.pop()] = offset + m.start() + used - 1
            depth = max(depth - (run - used), 0)  # closers outside every box change nothing
        first = k + 1
    boxes: list[tuple[int, str | None]] = []
    covered = -1  # closing brace of the last reported closed box: boxes inside it are its content
    for k in compress(range(n), map(is_not, ends, repeat(None))):
        end = ends[k]
        if starts[k] < covered or end is None:
            continue
        # every box between the last reported closed box and this one is unclosed
        boxes.extend(zip(starts[bisect_right(starts, covered) : k], repeat(None)))
        boxes.append((starts[k], text[starts[k] + len(_BOX) : end]))
        covered = end
    boxes.extend(zip(starts[bisect_right(starts, covered) :], repeat(None)))
    return boxes


@lru_cache(maxsize=4096)  # degenerate output repeats the same box many times
def normalise_box(content: str) -> float | None:
    r"""Number inside a box after stripping ``$``, whitespace, ``\text{}``-style wrappers and ``/10``.

    Only ASCII digits count [R] (``float`` would also read full-width or Arabic-Indic digits), and
    ``-0`` reads as 0.
    """
    if len(content) > _MAX_BOX_CHARS:
        return None
    s = content.replace("$", "").strip()
    while (m := _WRAPPER_RE.match(s)) is not None:
        s = m.group(1).strip()
    s = _OUT_OF_10_RE.sub("", s).strip()
    if not _NUMBER_RE.match(s):
        return None
    return float(s) + 0.0  # + 0.0 turns -0.0 into 0.0


def strip_thinking(text: str) -> str:
    """The text outside ``<think>`` blocks [R]: a box in the model's private reasoning is not its verdict.

    A ``</think>`` with no opening tag (the chat template opened it) drops everything before it; an
    unclosed ``<think>`` drops everything after it.
    """
    if _THINK_CLOSE in text and _THINK_OPEN not in text[: text.find(_THINK_CLOSE)]:
        text = text[text.find(_THINK_CLOSE) + len(_THINK_CLOSE) :]
    parts, pos = [], 0
    while (start := text.find(_THINK_OPEN, pos)) != -1:
        parts.append(text[pos:start])
        end = text.find(_THINK_CLOSE, start)
        if end == -1:
            return "".join(parts)
        pos = end + len(_THINK_CLOSE)
    parts.append(text[pos:])
    return "".join(parts)


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
    text = strip_thinking(text)
    boxes = find_boxes(text)
    if not boxes:
        return ParsedJudgment(None, ParseStatus.NO_BOX)
    last_pos, last_content = boxes[-1]
    earlier = boxes[:-1]
    other_idx = _other_points_box(text, earlier)
    criterion_scores, other = [], None
    for i, value in [(i, normalise_box(c)) for i, (_, c) in enumerate(earlier) if c is not None]:
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
    last = None
    for last in _OTHER_POINTS_RE.finditer(text):  # noqa: B007 (only the last mention counts)
        pass
    if last is None:
        return None
    i = bisect_right([pos for pos, _ in boxes], last.start())
    return i if i < len(boxes) else None


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
        item = line[m.end() :].replace("**", "").strip() if m is not None else ""
        if not item:
            continue
        term, sep, description = item.partition(":")
        items.append(Criterion(term.strip(), description.strip()) if sep else Criterion(item, ""))
    if not items:
        warning = warning or "no numbered criteria between the markers"
    return ParsedCriteria(tuple(items), warning)
