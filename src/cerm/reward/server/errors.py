"""Every error answer of the server is JSON of one shape, ``{"error": code, "detail": message}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

logger = logging.getLogger(__name__)

_Model = TypeVar("_Model", bound=BaseModel)


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def error_body(code: str, detail: Any) -> bytes:
    """The one error shape, serialised."""
    return json.dumps({"error": code, "detail": detail}).encode()


def error_response(status: int, code: str, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON error response of the one shape."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def send_error(send: Any, status: int, code: str, detail: str,
                     extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An error answer sent on a raw ASGI ``send`` (middleware, before any route runs)."""
    body = error_body(code, detail)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


def parse_body(body: bytes, model: type[_Model]) -> _Model:
    """Validate a JSON body in pydantic's Rust core in one pass.

    FastAPI's own body handling decodes it with ``json.loads`` and then validates the Python objects, twice
    the work on the hottest route, and answers a body ``json.loads`` refuses (an integer of 5,000 digits) as
    "not UTF-8". Errors keep FastAPI's 422 shape (``loc`` starts with "body").
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                      for err in e.errors(include_url=False)]) from None


def json_response(model: BaseModel, status: int = 200) -> Response:
    """Serialise a validated response model once, in pydantic's Rust core (the declared response_model
    still documents the route).
    """
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def _is_branch(part: Any) -> bool:
    """A union member's tag in a pydantic error location ('str', 'list[ChatMessage]', 'function-after[...]')."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)


def readable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors as a client can act on them: of a union (text or a message list), only the member
    the input was meant as ("query.0.content: Field required", not "query.str: Input should be a valid
    string" for a message list), and locations without the union's member tags.
    """
    def mismatch(err: dict[str, Any]) -> bool:  # the input is not of this member's type at all
        loc = tuple(err.get("loc", ()))
        return bool(loc) and _is_branch(loc[-1]) and str(err.get("type", "")).endswith("_type")

    kept = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if mismatch(err) and any(o is not err and tuple(o.get("loc", ()))[:len(loc) - 1] == loc[:-1]
                                 and not mismatch(o) for o in errors):
            continue
        kept.append({"loc": [p for p in loc if not _is_branch(p)], "msg": err.get("msg", "")})
    return kept


def add_error_handlers(app: FastAPI) -> None:
    """Turn every exception a route can raise into the one JSON shape."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        if e.status >= 500:
            logger.warning("%s: %s", e.code, e.detail)
        return error_response(e.status, e.code, e.detail, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", readable_errors(list(e.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        if e.status_code == 400 and e.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8; /get_reward (pydantic) says 422 for it [R]
            return error_response(422, "invalid_request", "the body is not valid UTF-8 JSON.")
        return error_response(e.status_code, codes.get(e.status_code, "http_error"), e.detail, e.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        # a bug, not a client or backend problem: still JSON, and logged with its traceback
        logger.error("unhandled error: %s", e, exc_info=e)
        return error_response(500, "internal_error", f"{type(e).__name__}: {e}")
