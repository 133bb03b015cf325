"""The reward server behind ``cerm serve``: FastAPI routes over one ``DynamicBatcher``.

Routes:
- ``POST /get_reward``: OpenRLHF's remote reward model (``--reward.remote_url``, formerly
  ``--remote_rm_url``); prompt and response are separated by ``PromptSplitter``.
- ``POST /v1/score``: query + responses -> scores, rewards, criteria, judgments.
- ``POST /v1/compare``: query + a + b -> winner (strict ``>``; equal scores tie).
- ``GET /health``, ``GET /metrics`` (Prometheus text); both open, the others need the bearer token when
  one is configured.

The server never invents a reward: a backend failure is a 502 (a timeout 504) with a JSON error, and
OpenRLHF's client retries it. A judgment the model produced but that has no readable score is not a
backend failure: ``/get_reward`` gives it the configured ``failure_reward`` and counts it
(``extra_logs.cerm_parse_fail``, ``cerm_parse_failures`` in /metrics); ``/v1/score`` returns ``null``.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from cerm.judge import Judge
from cerm.prompts import PROMPT_VERSION, render_query
from cerm.reward.batcher import BatcherClosed, BatcherConfig, BatchItem, DynamicBatcher, QueueFull
from cerm.reward.prometheus import ServerMetrics
from cerm.reward.schemas import (
    ChatMessage,
    CompareRequest,
    CompareResponse,
    CriteriaOut,
    ErrorResponse,
    HealthResponse,
    JudgmentOut,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
    ScoreResponse,
)
from cerm.reward.scoring import RewardConfig, backend_failure, reward_rule, unit_reward
from cerm.reward.split import PromptSplitter, SplitError
from cerm.types import Query, ScoredItem

logger = logging.getLogger(__name__)

_Model = TypeVar("_Model", bound=BaseModel)

PROTECTED = frozenset({"/get_reward", "/v1/score", "/v1/compare"})
ROUTES = PROTECTED | {"/health", "/metrics"}


@dataclass(frozen=True)
class ServerConfig:
    """Server limits and reward mapping.

    Args:
        token: bearer token required on the scoring routes (None: no auth).
        max_body_bytes: larger request bodies get 413.
        timeout_s: a request waiting longer gets 504; below OpenRLHF's 180 s client timeout so its retry
            logic sees an answer. The judge finishes the work anyway and caches it, so the retry is cheap.
        batch: dynamic batching limits.
        scale: reward scale of ``/get_reward`` ("unit" = score / 10, or "raw" 0-10).
        failure_reward: ``/get_reward`` reward of a judgment without a score, in ``scale`` units [R].
        retry_after_s: the Retry-After of a 429 (queue full).
        drain_timeout_s: at shutdown, how long queued work may take to finish.
        warning: added to every response (the embedded plumbing model's warning).
        freeze_gc: at startup, move every live object (model, libraries) out of the cyclic garbage collector's
            reach (``gc.freeze``): its full passes over that heap were the tail latency (p99 70 -> 42 ms in
            perf/server_load.py). Process-wide: turn it off when the app is embedded in a bigger process.
    """

    token: str | None = None
    max_body_bytes: int = 8 * 2**20
    timeout_s: float = 170.0
    batch: BatcherConfig = field(default_factory=BatcherConfig)
    scale: Literal["raw", "unit"] = "unit"
    failure_reward: float = 0.0
    retry_after_s: int = 1
    drain_timeout_s: float = 60.0
    warning: str | None = None
    freeze_gc: bool = True

    def __post_init__(self) -> None:
        if self.scale not in ("raw", "unit"):
            raise ValueError(f"scale {self.scale!r} must be 'raw' or 'unit' (one sample per request: no groups).")
        if self.timeout_s <= 0 or self.max_body_bytes <= 0:
            raise ValueError("timeout_s and max_body_bytes must be > 0.")


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def create_app(judge: Judge, config: ServerConfig | None = None, splitter: PromptSplitter | None = None) -> FastAPI:
    """Build the app. The batcher thread starts with the app's lifespan and drains at shutdown."""
    cfg = config or ServerConfig()
    split = splitter or PromptSplitter()
    metrics = ServerMetrics()
    state: dict[str, DynamicBatcher] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["batcher"] = DynamicBatcher(judge, cfg.batch, on_batch=metrics.observe_batch)
        if cfg.freeze_gc:  # what is loaded now lives as long as the server (see ServerConfig)
            gc.collect()
            gc.freeze()
        yield
        # uvicorn has already waited for in-flight requests; finish whatever is still queued
        await asyncio.to_thread(state["batcher"].close, cfg.drain_timeout_s)

    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse}
                                               for code in (401, 413, 422, 429, 502, 503, 504)}
    app = FastAPI(title="cerm reward server", lifespan=lifespan, responses=errors)
    app.router.redirect_slashes = False  # "/v1/score/" is a JSON 404, not a bodiless 307
    app.add_middleware(_Gate, config=cfg, metrics=metrics)
    _add_error_handlers(app)
    reward_cfg = RewardConfig(scale=cfg.scale, failure_reward=cfg.failure_reward,
                              score="expected" if judge.config.expected_score else "greedy")

    async def judge_items(items: list[BatchItem]) -> list[ScoredItem]:
        batcher = state["batcher"]
        try:
            future = batcher.submit_async(items)
        except QueueFull as e:
            metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, "queue_full", f"{e}; retry after {cfg.retry_after_s} s.",
                           {"Retry-After": str(cfg.retry_after_s)}) from None
        except BatcherClosed as e:
            raise ApiError(503, "shutting_down", str(e)) from None
        metrics.queue_depth.set(batcher.queue_depth)
        try:
            scored = await asyncio.wait_for(future, cfg.timeout_s)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            raise ApiError(504, "timeout", f"the judge did not answer within {cfg.timeout_s:g} s; "
                           "retry (finished work is cached) or lower max_new_tokens.") from None
        except Exception as e:  # noqa: BLE001 - whatever the backend raised becomes a 502, never a reward
            raise ApiError(502, "backend_error", f"{type(e).__name__}: {e}") from None
        failure = backend_failure([j for item in scored for j in item.judgments])
        if failure is not None:
            raise ApiError(502, "backend_error", str(failure))
        return scored

    async def get_reward(request: Request) -> Response:
        """OpenRLHF remote reward: one reward per ``query`` entry.

        The route RL rollouts hit thousands of times a second, so it is a plain Starlette route: FastAPI's
        per-request dependency solving (query parameters, cookies, headers, a scratch Response, then
        ``json.loads`` + validation of the body) cost as much as the rest of the route together
        (perf/server_load.py: 0.44x -> 0.66x the throughput of a bare FastAPI endpoint). The body is
        validated in one pass by ``_parse``; the errors and the OpenAPI entry stay those of a FastAPI route.
        """
        try:
            body = await request.body()
        except ClientDisconnect:  # nobody is left to read the answer; as FastAPI answers it
            raise ApiError(400, "client_disconnected", "the client went away while sending the body.") from None
        req = _parse(body, RewardRequest)
        n = len(req.query)
        if req.prompts is not None and len(req.prompts) != n:
            raise ApiError(422, "invalid_request", f"'prompts' has {len(req.prompts)} entries but 'query' has {n}.")
        items = []
        for i, full in enumerate(req.query):
            try:
                s = split.split(full, req.prompts[i] if req.prompts else None)
            except SplitError as e:
                raise ApiError(422, "split_error", f"sample {i}: {e}") from None
            items.append(BatchItem(_checked(s.query, f"sample {i}"), [s.response]))
        if not items:
            return _json(RewardResponse(rewards=[], scores=[], extra_logs={"cerm_parse_fail": [], "cerm_tokens_out": []},
                                        warning=cfg.warning))
        judgments = [item.judgments[0] for item in await judge_items(items)]
        # a judge started with --score expected gives the continuous expected score [R]
        scores = [j.value(reward_cfg.score) for j in judgments]
        # one sample per entry: no groups. judge_items has already turned backend failures into a 502
        rewards: list[float] = reward_rule(judgments, list(range(n)), reward_cfg)  # type: ignore[assignment]
        return _json(RewardResponse(
            rewards=rewards,
            scores=rewards if cfg.scale == "unit" else [r / 10 for r in rewards],  # OpenRLHF's 0-1 "scores"
            extra_logs={"cerm_parse_fail": [float(s is None) for s in scores],
                        # the flags of every score (docs/robustness.md): logged per step by OpenRLHF
                        "cerm_off_grid": [float(j.is_off_grid) for j in judgments],
                        "cerm_injection_flagged": [float(bool(j.injection_flags)) for j in judgments],
                        "cerm_tokens_out": [float(j.tokens_out) for j in judgments]},
            warning=cfg.warning))

    app.router.add_route("/get_reward", get_reward, methods=["POST"], include_in_schema=False)
    _document(app, APIRoute("/get_reward", get_reward, methods=["POST"], response_model=RewardResponse,
                            openapi_extra=_json_body(RewardRequest), responses=errors))

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(req: ScoreRequest) -> Response:
        """Judge responses to one query against one shared criteria list."""
        query = _checked(_query(req.query), "query")
        item = (await judge_items([BatchItem(query, req.responses, req.criteria)]))[0]
        return _json(ScoreResponse(
            scores=item.scores, rewards=[unit_reward(j.score) for j in item.judgments],
            criteria=CriteriaOut.of(item.criteria[0]),
            judgments=[JudgmentOut.of(j, req.include_text) for j in item.judgments],
            model=judge.backend.model_id, prompt_version=PROMPT_VERSION, warning=cfg.warning))

    @app.post("/v1/compare", response_model=CompareResponse)
    async def compare(req: CompareRequest) -> CompareResponse:
        """Judge two responses under one criteria list; a strict ``>`` decides."""
        query = _checked(_query(req.query), "query")
        item = (await judge_items([BatchItem(query, [req.a, req.b])]))[0]
        sa, sb = item.scores
        winner: Literal["a", "b", "tie"] | None = (
            None if sa is None or sb is None else "a" if sa > sb else "b" if sb > sa else "tie")
        return CompareResponse(
            winner=winner, scores=[sa, sb], criteria=CriteriaOut.of(item.criteria[0]),
            judgments=[JudgmentOut.of(j, req.include_text) for j in item.judgments],
            model=judge.backend.model_id, prompt_version=PROMPT_VERSION, warning=cfg.warning)

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        batcher = state["batcher"]
        return HealthResponse(status="draining" if batcher.is_closing else "ok", model=judge.backend.model_id,
                              prompt_version=PROMPT_VERSION, queue_depth=batcher.queue_depth, warning=cfg.warning)

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.queue_depth.set(state["batcher"].queue_depth)
        metrics.criteria_lease_waits.set(judge.stats.criteria_lease_waits)
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _document(app: FastAPI, *routes: APIRoute) -> None:
    """Add routes served outside FastAPI's routing to the app's OpenAPI document (/docs, /openapi.json)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version, routes=[*routes, *app.routes])
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI entry of a JSON body the route parses itself (a flat model: its schema has no ``$defs``)."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _parse(body: bytes, model: type[_Model]) -> _Model:
    """Validate a JSON body in pydantic's Rust core in one pass.

    FastAPI's own body handling decodes it with ``json.loads`` and then validates the Python objects, twice the work on the hottest route. Errors keep
    FastAPI's 422 shape (``loc`` starts with "body").
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                      for err in e.errors(include_url=False)]) from None


def _json(model: Any) -> Response:
    """Serialise a validated response model once, in pydantic's Rust core.

    FastAPI would validate it again and go through jsonable_encoder (the declared response_model still
    documents the route).
    """
    return Response(model.model_dump_json(), media_type="application/json")


def _query(query: str | list[ChatMessage]) -> Query:
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


def _error(status: int, code: str, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        if e.status >= 500:
            logger.warning("%s: %s", e.code, e.detail)
        return _error(e.status, e.code, e.detail, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in e.errors()]
        return _error(422, "invalid_request", detail)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        if e.status_code == 400 and e.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8; /get_reward (pydantic) says 422 for it [R]
            return _error(422, "invalid_request", "the body is not valid UTF-8 JSON.")
        return _error(e.status_code, codes.get(e.status_code, "http_error"), e.detail, e.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        # a bug, not a client or backend problem: still JSON, and logged with its traceback
        logger.error("unhandled error: %s", e, exc_info=e)
        return _error(500, "internal_error", f"{type(e).__name__}: {e}")


class _Gate:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): bearer auth, body limit, request metrics."""

    def __init__(self, app: Any, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.app = app
        self.limit = config.max_body_bytes
        self.expected = f"Bearer {config.token}".encode() if config.token else None
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            auth, length, chunked = b"", None, False
            for name, value in scope["headers"]:  # lower-case names (ASGI)
                if name == b"authorization":
                    auth = value
                elif name == b"content-length":
                    length = value
                elif name == b"transfer-encoding":  # overrides Content-Length (RFC 9112): count the bytes
                    chunked = True
            if self.expected is not None and path in PROTECTED and not hmac.compare_digest(auth, self.expected):
                await _send_json(send_and_record, 401, "unauthorized",
                                 "missing or wrong bearer token (Authorization: Bearer <token>).",
                                 [(b"www-authenticate", b"Bearer")])
                return
            if length is not None and length.isdigit() and not chunked:
                if int(length) > self.limit:
                    await _send_json(send_and_record, 413, "body_too_large",
                                     f"the body has {int(length)} bytes; the limit is {self.limit}.")
                    return
                # the HTTP server never delivers more than Content-Length bytes: nothing to count
                await self.app(scope, receive, send_and_record)
            else:
                await self.app(scope, self._limited(receive), send_and_record)
        finally:
            self.metrics.observe_request(path if path in ROUTES else "other", status, time.perf_counter() - start)

    def _limited(self, receive: Any) -> Any:
        """A chunked body has no Content-Length: count bytes while the app reads them."""
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"the body exceeds the limit of {self.limit} bytes.")
            return message

        return limited


async def _send_json(send: Any, status: int, code: str, detail: str,
                     extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = JSONResponse({"error": code, "detail": detail}).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})
