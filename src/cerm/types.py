"""Typed values that cross module boundaries: messages, decoding settings, criteria, judgments."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

# The protocol's decoding defaults, defined once; every config, CLI option and adapter reads these
# (docs/protocol.md §3).
CRITERIA_MAX_NEW_TOKENS = 4096
EVAL_MAX_NEW_TOKENS = 8192
SAMPLE_TEMPERATURE = 0.7  # [R] sampled evaluations, retries and tie-break re-judging
SAMPLE_TOP_P = 0.95  # [R]


class Message(TypedDict):
    """An OpenAI-style chat message."""

    role: str
    content: str


# ---- the score readout's values (cerm/readout.py computes them; backends return them) [R] ----------
GRID: tuple[float, ...] = tuple(i / 2 for i in range(21))  # the 21 valid overall scores: 0, 0.5, ..., 10


@dataclass(frozen=True)
class ReadoutRequest:
    r"""One readout: the evaluation prompt and the assistant text up to and including ``\boxed{``."""

    messages: list[Message]
    assistant_prefix: str


@dataclass(frozen=True)
class ScoreDistribution:
    """Probabilities of the 21 grid values (``GRID`` order), normalised over them; ``error`` on failure."""

    probs: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the readout succeeded (21 probabilities, no error)."""
        return self.error is None and len(self.probs) == len(GRID)

    @property
    def expected(self) -> float:
        """The expected score, sum p_v * v."""
        return sum(p * v for p, v in zip(self.probs, GRID, strict=True))

    @property
    def entropy(self) -> float:
        """Shannon entropy in nats (0 = certain, ln 21 ~ 3.04 = uniform)."""
        return -sum(p * math.log(p) for p in self.probs if p > 0)

    @property
    def mode(self) -> float:
        """The most probable grid value (what greedy decoding would most likely write)."""
        return GRID[max(range(len(self.probs)), key=self.probs.__getitem__)]


@dataclass(frozen=True)
class Readout:
    r"""A distribution read while the generation's KV cache was still alive (hf), and where it was read:
    the assistant text up to and including ``\boxed{`` that ``cerm.readout.ReadAt`` chose.
    """

    assistant_prefix: str
    distribution: ScoreDistribution


Query = str | list[Message]
"""A query is a plain string or a chat history whose last message is the user's turn."""


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings for one backend call. ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 4096
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0; use 0 for greedy decoding.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p ({self.top_p}) must be in (0, 1].")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must be >= 1.")

    @property
    def is_greedy(self) -> bool:
        """Whether these settings decode greedily."""
        return self.temperature == 0.0


class ParseStatus(str, Enum):
    """Outcome of reading an overall score from an evaluation turn."""

    OK = "ok"
    EMPTY = "empty"  # the model (or server) returned no text at all
    NO_BOX = "no_box"  # no \boxed{} anywhere
    UNPARSEABLE = "unparseable"  # the last box holds something that is not a number
    OUT_OF_RANGE = "out_of_range"  # a number outside 0..10
    TRUNCATED = "truncated"  # generation hit max_new_tokens
    BACKEND_ERROR = "backend_error"  # the backend failed (timeout, HTTP error) after its retries
    TOO_LONG = "too_long"  # the prompt does not fit the model context (overlong="error")
    # no readable overall box, so our closing text was appended and the score read at its box [R];
    # a score, but never an "ok" one: counted and reported on its own
    COMPLETED = "completed"

    @property
    def is_ok(self) -> bool:
        """Whether the score was read."""
        return self is ParseStatus.OK


FinishReason = Literal["stop", "length", "error"]
ScoreMode = Literal["greedy", "expected"]
SCORE_MODES = ("greedy", "expected")


@dataclass(frozen=True)
class Generation:
    """One backend output. ``finish_reason == "length"`` means the token limit cut it off.

    A failed request has ``finish_reason == "error"``, a human-readable ``error`` and a typed
    ``error_status``: ``ParseStatus.TOO_LONG`` when the prompt does not fit the model context,
    ``ParseStatus.BACKEND_ERROR`` otherwise. The judge reads the status, never the message text.
    """

    text: str
    finish_reason: FinishReason = "stop"
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    error: str | None = None
    # which reply field held the text (OpenAI servers with a reasoning parser fill reasoning_content)
    source_field: str = "content"
    error_status: ParseStatus = ParseStatus.BACKEND_ERROR
    # the score distribution read right after generating (a backend taking ``read_at``: hf), else None
    readout: Readout | None = None


@dataclass(frozen=True)
class Criterion:
    """One evaluation criterion: a concise term and its description."""

    term: str
    description: str


@dataclass(frozen=True)
class Criteria:
    """The criteria turn for one query: the raw generation (fed back verbatim) plus parsed items.

    ``items`` is for display only; scoring never depends on it. ``parse_warning`` is set when the list
    between the markers could not be read (or holds the error when ``finish_reason == "error"``).
    """

    text: str
    items: tuple[Criterion, ...] = ()
    key: str = ""
    source: Literal["generated", "cache", "user"] = "generated"
    parse_warning: str | None = None
    finish_reason: FinishReason = "stop"
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    error_status: ParseStatus = ParseStatus.BACKEND_ERROR  # why generation failed (finish_reason "error")


@dataclass(frozen=True)
class Judgment:
    """The judge's verdict on one response under one criteria set.

    ``score`` is the overall 0-10 score, or ``None`` when it could not be read; ``status`` says why.
    With test-time scaling (k samples) ``samples`` holds each sampled judgment, ``score`` is the mean of
    the valid ones and ``score_std`` their spread.

    With the readout on (``JudgeConfig.expected_score``), ``score_probs`` holds the judge's probabilities
    of the 21 grid values 0, 0.5, ..., 10 at the final box, ``expected_score`` their mean and
    ``score_entropy`` their entropy (nats). ``score`` stays the greedy value. A ``completed`` judgment
    (closing text appended) has ``score`` = the most probable value at the closing box.
    """

    score: float | None
    status: ParseStatus
    criterion_scores: tuple[float, ...] = ()
    other_points_score: float | None = None
    is_off_grid: bool = False
    text: str = ""
    criteria_key: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None
    is_response_truncated: bool = False  # overlong="truncate" cut the response to fit the context
    # what the judged response holds that imitates the prompt or the judge (cerm.injection); a flag only
    injection_flags: tuple[str, ...] = ()
    score_std: float | None = None
    samples: tuple[Judgment, ...] = field(default=(), repr=False)
    expected_score: float | None = None
    score_probs: tuple[float, ...] = field(default=(), repr=False)
    score_entropy: float | None = None

    @property
    def is_valid(self) -> bool:
        """Whether the judgment has a score."""
        return self.score is not None

    def value(self, mode: ScoreMode = "greedy") -> float | None:
        """The score a consumer ranks by: the greedy ``score`` or the ``expected_score`` (None if missing)."""
        if mode == "greedy":
            return self.score
        if mode == "expected":
            return self.expected_score
        raise ValueError(f"score mode {mode!r} must be 'greedy' or 'expected'.")


@dataclass(frozen=True)
class ScoredItem:
    """All judgments for one query.

    ``criteria`` holds the criteria used (one per criteria sample; one per response in the "w/o unified
    criteria" ablation) and ``judgments`` one judgment per response, in input order.
    """

    criteria: tuple[Criteria, ...]
    judgments: tuple[Judgment, ...]

    @property
    def scores(self) -> list[float | None]:
        """The overall score of each response, None where it failed."""
        return [j.score for j in self.judgments]


@dataclass(frozen=True)
class Comparison:
    """Outcome of judging two responses to one query under one criteria set."""

    winner: Literal["a", "b", "tie"] | None  # None: at least one score is missing
    judgment_a: Judgment
    judgment_b: Judgment
    criteria: Criteria

    @property
    def is_tie(self) -> bool:
        """Whether both scores are equal."""
        return self.winner == "tie"


TiePolicy = Literal["none", "first", "random", "mean", "expected"]


@dataclass(frozen=True)
class BestOfNResult:
    """Best-of-N selection.

    ``index`` is None when no response has a valid score, or on a tie under
    ``tie_policy="none"``; ``tied`` lists every index that shares the top score.
    """

    index: int | None
    judgments: tuple[Judgment, ...]
    criteria: Criteria
    tied: tuple[int, ...]
    tie_policy: TiePolicy

    @property
    def is_tie(self) -> bool:
        """Whether several responses share the top score."""
        return len(self.tied) > 1

    @property
    def scores(self) -> list[float | None]:
        """The overall score of each response, None where it failed."""
        return [j.score for j in self.judgments]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation of a non-empty list."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
