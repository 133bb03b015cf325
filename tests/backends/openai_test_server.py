"""A minimal, scriptable OpenAI-compatible chat-completions server for backend tests.

Real HTTP on 127.0.0.1 (FastAPI + uvicorn in a thread, on a free port the OS picks). Each server records
every request and counts requests in flight; a ``handler`` decides each reply (status, JSON, headers, delay).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cerm.backends.fake import default_script
from cerm.types import SamplingParams


def chat_reply(content: str | None, *, finish_reason: str = "stop", reasoning_content: str | None = None,
               prompt_tokens: int = 11, completion_tokens: int = 7) -> dict[str, Any]:
    """A chat-completions response body in the shape vLLM returns."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


@dataclass
class Reply:
    """What the server sends for one request. ``body=None`` sends the CE-RM-like default reply."""

    body: dict[str, Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


# (request JSON, 0-based index of this request on this server) -> Reply
Handler = Callable[[dict[str, Any], int], Reply]


def ce_rm_reply(request: dict[str, Any]) -> dict[str, Any]:
    """Criteria for a one-message prompt, an evaluation scored by ``fake.hash_score`` otherwise."""
    text = default_script(request["messages"], SamplingParams())
    return chat_reply(text, prompt_tokens=sum(len(m["content"]) for m in request["messages"]) // 4,
                      completion_tokens=len(text) // 4)


class InFlight:
    """Counts concurrent requests, possibly across several servers (each runs its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def exit(self) -> None:
        with self._lock:
            self.now -= 1


class ScriptedServer:
    """One OpenAI-compatible server; ``url`` is its API root (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self) -> None:
        self.handler: Handler = lambda request, index: Reply()
        self.in_flight = InFlight()
        self.shared_in_flight: InFlight | None = None
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def reset(self, handler: Handler | None = None, shared_in_flight: InFlight | None = None) -> None:
        self.handler = handler or (lambda request, index: Reply())
        self.in_flight = InFlight()
        self.shared_in_flight = shared_in_flight
        with self._lock:
            self.requests.clear()
            self.headers.clear()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            payload = await request.json()
            with self._lock:
                index = len(self.requests)
                self.requests.append(payload)
                self.headers.append(dict(request.headers))
            counters = [c for c in (self.in_flight, self.shared_in_flight) if c is not None]
            for c in counters:
                c.enter()
            try:
                reply = self.handler(payload, index)
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
            finally:
                for c in counters:
                    c.exit()
            body = reply.body if reply.body is not None else ce_rm_reply(payload)
            return JSONResponse(body, status_code=reply.status, headers=reply.headers)

        return app

    def start(self) -> ScriptedServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"test server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
