"""Run a FastAPI app on a real uvicorn server (free port, background thread) for the tests that need sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import uvicorn


@dataclass
class LiveServer:
    url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@contextmanager
def live_server(app, *, graceful_timeout_s: float = 10.0, **config: object) -> Iterator[LiveServer]:
    """uvicorn serving ``app`` on 127.0.0.1:<free port>; stopped (gracefully) on exit. ``config``: more
    ``uvicorn.Config`` options (``http=`` a protocol class, ``lifespan=``, ``log_level=``).

    The socket is bound here and handed to uvicorn, so no other process can take the port in between.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict = {"log_level": "warning", "access_log": False, "lifespan": "on", **config}
    server = uvicorn.Server(uvicorn.Config(app, timeout_graceful_shutdown=graceful_timeout_s, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    live = LiveServer(f"http://127.0.0.1:{port}", port, server, thread)
    try:
        yield live
    finally:
        if thread.is_alive():
            live.stop()
        sock.close()


@pytest.fixture
def serve_app():
    """``with serve_app(app) as srv:`` runs ``app`` on a real uvicorn server (``srv.url``, ``srv.stop()``)."""
    return live_server
