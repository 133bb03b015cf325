"""The reward server's app: FastAPI routes over the judge, through the dispatch of its engine.

Routes:
- ``POST /get_reward``: OpenRLHF's remote reward model (``--reward.remote_url``, formerly
  ``--remote_rm_url``); prompt and response are separated by ``PromptSplitter``.
- ``POST /v1/score``: query + responses -> scores, rewards, criteria, judgments.
- ``POST /v1/compare``: query + a + b -> winner (strict ``>``; equal scores tie).
- ``POST /v1/criteria``: prompts -> 202; their criteria generate in the background (a trainer sends a step's
  prompts before their rollouts exist, so the reward's critical path is the evaluations).
- ``GET /health``, ``GET /metrics`` (Prometheus text); both open, the others need the bearer token when
  one is configured.

The server never invents a reward: a backend failure is a 502 (a timeout 504) with a JSON error, and
OpenRLHF's client retries it. A judgment the model produced but that has no readable score is not a
backend failure: ``/get_reward`` gives it the configured ``failure_reward`` and counts it
(``extra_logs.cerm_parse_fail``, ``cerm_parse_failures`` in /metrics); ``/v1/score`` returns ``null``.
Every score and reward is the judge's ``JudgeConfig.score_mode`` (greedy, or expected with ``--score expected``).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from cerm.judge import Judge
from cerm.prompts import PROMPT_VERSION, render_query
from cerm.reward.batcher import BatcherClosed, BatchItem, QueueFull
from cerm.reward.scoring import RewardConfig, backend_failure, reward_rule, unit_reward
from cerm.reward.server.config import ServerConfig
from cerm.reward.server.dispatch import Dispatch, make_dispatch
from cerm.reward.server.errors import ApiError, add_error_handlers, json_response, parse_body
from cerm.reward.server.gate import Gate
from cerm.reward.server.metrics import ServerMetrics
from cerm.reward.server.schemas import (
    ChatMessage,
    CompareRequest,
    CompareResponse,
    CriteriaAccepted,
    CriteriaOut,
    CriteriaRequest,
    ErrorResponse,
    HealthResponse,
    JudgmentOut,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
    ScoreResponse,
)
from cerm.reward.split import PromptSplitter, SplitError
from cerm.selection import winner
from cerm.types import Query, ScoredItem

# the keys of /get_reward's extra_logs, the same on every answer (an empty batch too)
EXTRA_LOGS = ("cerm_parse_fail", "cerm_off_grid", "cerm_injection_flagged", "cerm_tokens_out")


def create_app(judge: Judge, config: ServerConfig | None = None, splitter: PromptSplitter | None = None) -> FastAPI:
    """Build the app. The dispatch (batcher thread, or straight on) starts with the app's lifespan and
    drains at shutdown.
    """
    cfg = config or ServerConfig()
    routes = _Routes(judge, cfg, splitter or PromptSplitter(), ServerMetrics())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        routes.dispatch = make_dispatch(judge, cfg.batch, cfg.dispatch, routes.metrics.observe_batch)
        if cfg.freeze_gc:  # what is loaded now lives as long as the server (see ServerConfig)
            gc.collect()
            gc.freeze()
        yield
        # uvicorn has already waited for in-flight requests; finish whatever is still queued
        await routes.dispatch.close(cfg.drain_timeout_s)

    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse}
                                               for code in (401, 413, 422, 429, 502, 503, 504)}
    app = FastAPI(title="cerm reward server", lifespan=lifespan, responses=errors)
    app.router.redirect_slashes = False  # "/v1/score/" is a JSON 404, not a bodiless 307
    app.add_middleware(Gate, config=cfg, metrics=routes.metrics)
    add_error_handlers(app)
    # the POST routes parse their own bodies (``parse_body``): one pass in pydantic's core, and its errors
    # (a 5,000-digit integer is a field's error, not "not UTF-8"); FastAPI documents them from these entries
    posts: list[tuple[str, Any, type[BaseModel], type[BaseModel], int]] = [("/get_reward", routes.get_reward, RewardRequest, RewardResponse, 200),
             ("/v1/score", routes.score, ScoreRequest, ScoreResponse, 200),
             ("/v1/compare", routes.compare, CompareRequest, CompareResponse, 200),
             ("/v1/criteria", routes.criteria, CriteriaRequest, CriteriaAccepted, 202)]
    documented = []
    for path, handler, body, reply, status in posts:
        app.router.add_route(path, handler, methods=["POST"], include_in_schema=False)
        documented.append(APIRoute(path, handler, methods=["POST"], response_model=reply, status_code=status,
                                   openapi_extra=_json_body(body), responses=errors, summary=handler.__doc__))
    app.get("/health", response_model=HealthResponse)(routes.health)
    app.get("/metrics")(routes.prometheus)
    _document(app, *documented)
    return app


class _Routes:
    """The route handlers over one judge; ``dispatch`` is set when the app starts (its lifespan)."""

    dispatch: Dispatch

    def __init__(self, judge: Judge, cfg: ServerConfig, split: PromptSplitter, metrics: ServerMetrics) -> None:
        self.judge, self.cfg, self.split, self.metrics = judge, cfg, split, metrics
        self.mode = judge.config.score_mode  # the one decision: what every score and reward here is
        self.reward_cfg = RewardConfig(scale=cfg.scale, failure_reward=cfg.failure_reward, score=self.mode)

    async def _body(self, request: Request, model: type[BaseModel]) -> Any:
        try:
            body = await request.body()
        except ClientDisconnect:  # nobody is left to read the answer; as FastAPI answers it
            raise ApiError(400, "client_disconnected", "the client went away while sending the body.") from None
        return parse_body(body, model)

    def _limit(self, n: int, what: str) -> None:
        if n > self.cfg.max_entries:
            self.metrics.rejected.labels("too_many_entries").inc()
            raise ApiError(413, "too_many_entries", f"the request has {n} {what}; the limit is "
                           f"{self.cfg.max_entries} per request (cerm serve --max-entries). Split it.")

    async def _judge(self, items: list[BatchItem]) -> list[ScoredItem]:
        try:
            future = self.dispatch.submit(items)
        except QueueFull as e:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, "queue_full", f"{e}; retry after {self.cfg.retry_after_s} s.",
                           {"Retry-After": str(self.cfg.retry_after_s)}) from None
        except BatcherClosed as e:
            raise ApiError(503, "shutting_down", str(e)) from None
        self.metrics.queue_depth.set(self.dispatch.queue_depth)
        try:
            scored = await asyncio.wait_for(future, self.cfg.timeout_s)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            raise ApiError(504, "timeout", f"the judge did not answer within {self.cfg.timeout_s:g} s; "
                           "retry (finished work is cached) or lower max_new_tokens.") from None
        except Exception as e:  # noqa: BLE001 - whatever the backend raised becomes a 502, never a reward
            raise ApiError(502, "backend_error", f"{type(e).__name__}: {e}") from None
        failure = backend_failure([j for item in scored for j in item.judgments])
        if failure is not None:
            raise ApiError(502, "backend_error", str(failure))
        return scored

    async def get_reward(self, request: Request) -> Response:
        """OpenRLHF remote reward: one reward per ``query`` entry.

        The route RL rollouts hit thousands of times a second, so it is a plain Starlette route: FastAPI's
        per-request dependency solving cost as much as the rest of the route together (perf/server_load.py:
        0.44x -> 0.66x the throughput of a bare FastAPI endpoint).
        """
        req: RewardRequest = await self._body(request, RewardRequest)
        n = len(req.query)
        self._limit(n, "samples")
        if req.prompts is not None and len(req.prompts) != n:
            raise ApiError(422, "invalid_request", f"'prompts' has {len(req.prompts)} entries but 'query' has {n}.")
        items = []
        for i, full in enumerate(req.query):
            try:
                s = self.split.split(full, req.prompts[i] if req.prompts else None)
            except SplitError as e:
                raise ApiError(422, "split_error", f"sample {i}: {e}") from None
            items.append(BatchItem(_checked(s.query, f"sample {i}"), [s.response]))
        judgments = [item.judgments[0] for item in await self._judge(items)] if items else []
        scores = [j.value(self.mode) for j in judgments]
        # one sample per entry: no groups. _judge has already turned backend failures into a 502
        rewards: list[float] = reward_rule(judgments, list(range(n)), self.reward_cfg)  # type: ignore[assignment]
        logs = {"cerm_parse_fail": [float(s is None) for s in scores],
                # the flags of every score (docs/robustness.md): logged per step by OpenRLHF
                "cerm_off_grid": [float(j.is_off_grid) for j in judgments],
                "cerm_injection_flagged": [float(bool(j.injection_flags)) for j in judgments],
                "cerm_tokens_out": [float(j.tokens_out) for j in judgments]}
        return json_response(RewardResponse(
            rewards=rewards, scores=rewards if self.cfg.scale == "unit" else [r / 10 for r in rewards],
            extra_logs={k: logs[k] for k in EXTRA_LOGS}, warning=self.cfg.warning))

    async def score(self, request: Request) -> Response:
        """Judge responses to one query against one shared criteria list."""
        req: ScoreRequest = await self._body(request, ScoreRequest)
        self._limit(len(req.responses), "responses")
        query = _checked(_query(req.query), "query")
        item = (await self._judge([BatchItem(query, req.responses, req.criteria)]))[0]
        scores = [j.value(self.mode) for j in item.judgments]
        return json_response(ScoreResponse(
            scores=scores, rewards=[unit_reward(s) for s in scores], criteria=CriteriaOut.of(item.criteria[0]),
            judgments=[JudgmentOut.of(j, req.include_text, self.mode) for j in item.judgments],
            model=self.judge.backend.model_id, prompt_version=PROMPT_VERSION, score_mode=self.mode,
            warning=self.cfg.warning))

    async def compare(self, request: Request) -> Response:
        """Judge two responses under one criteria list; a strict ``>`` decides."""
        req: CompareRequest = await self._body(request, CompareRequest)
        query = _checked(_query(req.query), "query")
        item = (await self._judge([BatchItem(query, [req.a, req.b])]))[0]
        sa, sb = (j.value(self.mode) for j in item.judgments)
        return json_response(CompareResponse(
            winner=winner(sa, sb), scores=[sa, sb], criteria=CriteriaOut.of(item.criteria[0]),
            judgments=[JudgmentOut.of(j, req.include_text, self.mode) for j in item.judgments],
            model=self.judge.backend.model_id, prompt_version=PROMPT_VERSION, score_mode=self.mode,
            warning=self.cfg.warning))

    async def criteria(self, request: Request) -> Response:
        """Start generating the criteria of prompts (single-flight with every request); 202 at once."""
        req: CriteriaRequest = await self._body(request, CriteriaRequest)
        self._limit(len(req.prompts), "prompts")
        if self.dispatch.is_closing:
            raise ApiError(503, "shutting_down", "the reward server is shutting down; retry on another replica.")
        queries = [_checked(_query(p), f"prompt {i}") for i, p in enumerate(req.prompts)]
        self.judge.prefetch(queries)
        self.metrics.criteria_prefetched.inc(len(queries))
        return json_response(CriteriaAccepted(accepted=len(queries),
                                              keys=[self.judge.criteria_key(q) for q in queries]), status=202)

    async def health(self) -> HealthResponse:
        """Liveness and queue depth; "draining" while shutting down."""
        return HealthResponse(status="draining" if self.dispatch.is_closing else "ok",
                              model=self.judge.backend.model_id, prompt_version=PROMPT_VERSION,
                              queue_depth=self.dispatch.queue_depth, warning=self.cfg.warning)

    async def prometheus(self) -> Response:
        """Prometheus text exposition."""
        self.metrics.queue_depth.set(self.dispatch.queue_depth)
        self.metrics.sync_judge(self.judge.stats)
        return Response(self.metrics.render(), media_type=self.metrics.content_type)


def _document(app: FastAPI, *routes: APIRoute) -> None:
    """Add routes served outside FastAPI's routing to the app's OpenAPI document (/docs, /openapi.json)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version, routes=[*routes, *app.routes])
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI entry of a JSON body the route parses itself (nested models inlined: no ``$defs``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def _query(query: str | Sequence[ChatMessage]) -> Query:
    return query if isinstance(query, str) else [{"role": m.role, "content": m.content} for m in query]


def _checked(query: Query, where: str) -> Query:
    """Reject a query the judge would refuse, before it can fail a merged batch of other requests."""
    try:
        text = render_query(query)
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"{where}: {e}") from None
    if not text.strip():
        raise ApiError(422, "invalid_request", f"{where}: the query is empty.")
    return query
