"""A slow OpenAI-compatible judge stand-in for tests that run real ``cerm`` processes against it.

Real HTTP (uvicorn in a thread on a free loopback port). It answers like CE-RM (canned criteria for a
one-message prompt, a scored evaluation otherwise), sleeps ``criteria_s`` / ``evaluation_s`` per call, and
logs every request with its arrival time (``time.monotonic()``), so a test can measure gaps between calls.
Import as ``from judge_standin import JudgeStandIn``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI

from cerm.backends.fake import CANNED_CRITERIA, canned_evaluation


@dataclass
class Call:
    at: float  # time.monotonic() on arrival
    kind: str  # "models" | "criteria" | "evaluation"
    content: str  # the last message
    first: str = ""  # the first message (a query's criteria prompt, also the first turn of its evaluations)


@dataclass
class JudgeStandIn:
    criteria_s: float = 0.5
    evaluation_s: float = 0.5
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(self._app(), log_level="warning", lifespan="off",
                                                     timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    def _log(self, kind: str, content: str, first: str = "") -> None:
        with self._lock:
            self.calls.append(Call(time.monotonic(), kind, content, first))

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict:
            self._log("models", "")
            return {"object": "list", "data": [{"id": "judge", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(body: dict) -> dict:
            content = body["messages"][-1]["content"]
            is_criteria = len(body["messages"]) == 1
            self._log("criteria" if is_criteria else "evaluation", content, body["messages"][0]["content"])
            await asyncio.sleep(self.criteria_s if is_criteria else self.evaluation_s)
            text = CANNED_CRITERIA if is_criteria else canned_evaluation(7)
            return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

        return app

    def of(self, kind: str, needle: str = "") -> list[Call]:
        """The calls of ``kind`` whose last message contains ``needle``, in arrival order."""
        with self._lock:
            return [c for c in self.calls if c.kind == kind and needle in c.content]

    def start(self) -> JudgeStandIn:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the judge stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
