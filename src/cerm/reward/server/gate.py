"""The server's ASGI gate: bearer auth, the body limit and request metrics, before any route runs."""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.exceptions import HTTPException

from cerm.reward.server.config import ServerConfig
from cerm.reward.server.errors import send_error
from cerm.reward.server.metrics import ServerMetrics

PROTECTED = frozenset({"/get_reward", "/v1/score", "/v1/compare", "/v1/criteria"})
ROUTES = PROTECTED | {"/health", "/metrics"}
# an over-limit chunked body is read to its end (discarded) before the 413, so the client reads the answer
# instead of a connection reset; beyond this much more, the connection is dropped instead
DRAIN_FACTOR = 8


class Gate:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): bearer auth, body limit, request metrics."""

    def __init__(self, app: Any, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.app = app
        self.limit = config.max_body_bytes
        self.expected = f"Bearer {config.token}".encode() if config.token else None
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Check auth and body size, then call the app, recording status and latency."""
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
                await send_error(send_and_record, 401, "unauthorized",
                                 "missing or wrong bearer token (Authorization: Bearer <token>).",
                                 [(b"www-authenticate", b"Bearer")])
                return
            if length is not None and length.isdigit() and not chunked:
                if int(length) > self.limit:
                    await send_error(send_and_record, 413, "body_too_large",
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
                # read the rest (discarded) so the client gets to read the 413, up to a bound
                while message.get("more_body") and seen <= DRAIN_FACTOR * self.limit:
                    message = await receive()
                    seen += len(message.get("body", b""))
                raise HTTPException(413, f"the body exceeds the limit of {self.limit} bytes.")
            return message

        return limited
