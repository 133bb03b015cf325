"""The reward server behind ``cerm serve``: ``app`` (routes), ``config``, ``dispatch`` (straight to an engine
with its own scheduler, or through the dynamic batcher), ``gate`` (auth, body limit), ``errors`` (one JSON
shape), ``metrics`` (Prometheus), ``schemas`` (the wire formats, shared with the client), ``http`` (uvicorn's
protocol with a request-head timeout).

Importing this package is light (the client imports ``schemas``); ``create_app`` and ``ServerConfig`` load
FastAPI on first use. May import: the core, the backend seam and the rest of ``cerm.reward``; never ``bench``,
``train`` or ``cli``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cerm.reward.server.app import create_app

        return create_app
    if name == "ServerConfig":
        from cerm.reward.server.config import ServerConfig

        return ServerConfig
    if name == "ApiError":
        from cerm.reward.server.errors import ApiError

        return ApiError
    raise AttributeError(f"module 'cerm.reward.server' has no attribute {name!r}")
