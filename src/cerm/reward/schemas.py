"""Wire formats of the reward server (pydantic: JSON crosses the wire here)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cerm.io import check_chat, check_text, criteria_record, judgment_record
from cerm.reward.scoring import unit_reward
from cerm.types import Criteria, Judgment

# every string a client sends is checked as text: a lone surrogate ("\ud800" is valid JSON) gets its own
# 422 here instead of failing the cache's hashing inside a batch merged with other requests
Text = Annotated[str, AfterValidator(check_text)]


class ChatMessage(BaseModel):
    """An OpenAI-style chat message of a request's query."""

    role: Text
    content: Text


def _chat_ends_with_user(v: str | list[ChatMessage]) -> str | list[ChatMessage]:
    if isinstance(v, list):
        check_chat([{"role": m.role, "content": m.content} for m in v])
    return v


ChatQuery = Annotated[Text | list[ChatMessage], AfterValidator(_chat_ends_with_user)]


class RewardRequest(BaseModel):
    """OpenRLHF's remote reward-model request (``openrlhf.cli.serve_rm``, route ``/get_reward``).

    ``query[i]`` is prompt + response decoded with special tokens; ``prompts[i]`` the prompt text.
    An empty ``query`` gets empty lists (OpenRLHF 0.11 sends one to each URL beyond the batch's shards).
    ``labels`` are the dataset's label column, any JSON value (cerm does not use them). Newer clients also
    send ``metas``; unknown fields are accepted and ignored.
    """

    model_config = ConfigDict(extra="allow")

    query: list[Text]
    prompts: list[Text] | None = None
    labels: list[Any] | None = None  # OpenRLHF passes its dataset column through; cerm ignores it


class RewardResponse(BaseModel):
    """``rewards`` drive the advantages; ``scores`` (0-1) drive OpenRLHF's dynamic filtering."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]
    warning: str | None = None


class ScoreRequest(BaseModel):
    """``POST /v1/score``: one query and its responses (optionally with the criteria to use)."""

    query: ChatQuery
    responses: list[Text] = Field(min_length=1)
    criteria: Text | None = Field(None, description="user-written criteria text; generated from the query if absent")
    include_text: bool = Field(True, description="return each judgment's full text")


class CompareRequest(BaseModel):
    """``POST /v1/compare``: one query and two responses."""

    query: ChatQuery
    a: Text
    b: Text
    include_text: bool = True


class CriterionOut(BaseModel):
    """One criterion of a response's criteria list."""

    term: str
    description: str


class CriteriaOut(BaseModel):
    """The criteria a request was judged against."""

    key: str
    source: str
    text: str
    items: list[CriterionOut]
    parse_warning: str | None = None

    @classmethod
    def of(cls, c: Criteria) -> CriteriaOut:
        """The response view of a ``Criteria``."""
        return cls.model_validate(criteria_record(c))


class JudgmentOut(BaseModel):
    """One judgment in a response: score, reward, status and what produced them."""
    score: float | None
    reward: float | None
    status: str
    criterion_scores: list[float]
    other_points_score: float | None
    is_off_grid: bool = Field(description="the score is not a multiple of 0.5 (the prompt asks for half points)")
    injection_flags: list[str] = Field(description="judge-steering text in the response (cerm.injection)")
    error: str | None
    tokens_in: int
    tokens_out: int
    seconds: float
    text: str | None = None

    @classmethod
    def of(cls, j: Judgment, include_text: bool) -> JudgmentOut:
        """The response view of a ``Judgment`` (its text only if asked for)."""
        record = judgment_record(j, with_text=include_text)
        record.pop("samples", None)
        return cls.model_validate({**record, "reward": unit_reward(j.score)})


class ScoreResponse(BaseModel):
    """The answer to ``/v1/score``: a score and a reward per response, the criteria, the judgments."""

    scores: list[float | None]
    rewards: list[float | None]
    criteria: CriteriaOut
    judgments: list[JudgmentOut]
    model: str
    prompt_version: str
    warning: str | None = None


class CompareResponse(BaseModel):
    """The answer to ``/v1/compare``: the winner (None if a score is missing) and both judgments."""
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
    """The answer to ``GET /health``."""
    status: Literal["ok", "draining"]
    model: str
    prompt_version: str
    queue_depth: int
    warning: str | None = None
