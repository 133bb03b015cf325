"""uvicorn's HTTP protocol, hardened: a request-head timeout, and JSON for the errors uvicorn answers itself.

A client that opens a connection and sends its headers slowly (or never) is cut off, instead of holding a
connection forever (uvicorn has no such limit; 20 slow-header connections were never closed). A request
uvicorn's parser refuses (both Content-Length and Transfer-Encoding, a broken request line) gets the server's
one error shape, ``{"error": "bad_request", "detail": ...}``, instead of uvicorn's plain text.

The timer starts when a connection opens and again when bytes arrive between requests; if no complete
request head has arrived when it fires, the connection is closed. It works with whichever parser uvicorn
picked (httptools or h11): both set ``cycle`` when a request head is complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cerm.reward.server.errors import error_body


def with_header_timeout(base: type[asyncio.Protocol], timeout_s: float) -> type[asyncio.Protocol]:
    """A subclass of uvicorn protocol ``base`` that closes connections whose request head takes longer
    than ``timeout_s``; pass it as ``uvicorn.run(..., http=...)``.
    """
    if timeout_s <= 0:
        raise ValueError(f"header timeout ({timeout_s}) must be > 0.")

    class HeaderTimeoutProtocol(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._idle():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def _idle(self) -> bool:
            """No request is being served: waiting for (the rest of) a request head."""
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(timeout_s, self._expire, self.cycle)

        def send_400_response(self, msg: str) -> None:
            """Uvicorn's answer to a request its parser refuses, as JSON (both parsers close afterwards)."""
            body = error_body("bad_request", f"{msg} The request line or headers are malformed (for example "
                              "both Content-Length and Transfer-Encoding).")
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [b"content-type: application/json\r\n", b"content-length: " + str(len(body)).encode() + b"\r\n",
                     b"connection: close\r\n\r\n"]
            self.transport.write(b"".join(head) + body)
            self.transport.close()

        def _expire(self, cycle_when_armed: Any) -> None:
            self._head_timer = None
            if self.cycle is cycle_when_armed and self._idle() and not self.transport.is_closing():
                self.transport.close()  # no complete request head in time

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol
