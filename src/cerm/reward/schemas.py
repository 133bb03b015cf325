"""Wire formats of the reward server (pydantic: JSON crosses the wire here)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cerm.reward.scoring import unit_reward
from cerm.types import Criteria, Judgment


class ChatMessage(BaseModel):
    role: str
    content: str


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request (``openrlhf.cli.serve_rm``, route ``/get_reward``).

    ``query[i]`` is prompt + response decoded with special tokens; ``prompts[i]`` the prompt text.
    An empty ``query`` gets empty lists (OpenRLHF 0.11 sends one to each URL beyond the batch's shards).
    ``labels`` are the dataset's label column, any JSON value (cerm does not use them). Newer clients also
    send ``metas``; unknown fields are accepted and ignored.
    """

    model_config = ConfigDict(extra="allow")

    query: list[str]
    prompts: list[str] | None = None
    labels: list[Any] | None = None


class RewardResponse(BaseModel):
    """``rewards`` drive the advantages; ``scores`` (0-1) drive OpenRLHF's dynamic filtering."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]
    warning: str | None = None


class ScoreRequest(BaseModel):
    query: str | list[ChatMessage]
    responses: list[str] = Field(min_length=1)
    criteria: str | None = Field(None, description="user-written criteria text; generated from the query if absent")
    include_text: bool = Field(True, description="return each judgment's full text")


class CompareRequest(BaseModel):
    query: str | list[ChatMessage]
    a: str
    b: str
    include_text: bool = True


class CriterionOut(BaseModel):
    term: str
    description: str


class CriteriaOut(BaseModel):
    key: str
    source: str
    text: str
    items: list[CriterionOut]
    parse_warning: str | None = None

    @classmethod
    def of(cls, c: Criteria) -> CriteriaOut:
        return cls(key=c.key, source=c.source, text=c.text, parse_warning=c.parse_warning,
                   items=[CriterionOut(term=i.term, description=i.description) for i in c.items])


class JudgmentOut(BaseModel):
    score: float | None
    reward: float | None
    status: str
    criterion_scores: list[float]
    other_points_score: float | None
    error: str | None
    tokens_in: int
    tokens_out: int
    seconds: float
    text: str | None = None

    @classmethod
    def of(cls, j: Judgment, include_text: bool) -> JudgmentOut:
        return cls(score=j.score, reward=unit_reward(j.score), status=j.status.value, criterion_scores=list(j.criterion_scores),
                   other_points_score=j.other_points_score, error=j.error, tokens_in=j.tokens_in,
                   tokens_out=j.tokens_out, seconds=j.seconds, text=j.text if include_text else None)


class ScoreResponse(BaseModel):
    scores: list[float | None]
    rewards: list[float | None]
    criteria: CriteriaOut
    judgments: list[JudgmentOut]
    model: str
    prompt_version: str
    warning: str | None = None


class CompareResponse(BaseModel):
    winner: Literal["a", "b", "tie"] | None = Field(description="None: at least one score is missing")
    scores: list[float | None]
    criteria: CriteriaOut
    judgments: list[JudgmentOut]
    model: str
    prompt_version: str
    warning: str | None = None


class ErrorResponse(BaseModel):
    """Every failure, whatever the route: a machine-readable code and a message a human can act on."""

    error: str
    detail: str | list


class HealthResponse(BaseModel):
    status: Literal["ok", "draining"]
    model: str
    prompt_version: str
    queue_depth: int
    warning: str | None = None
