"""Slow clients: uvicorn's HTTP protocol with read timeouts.

uvicorn closes an idle keep-alive connection, but it waits forever for a request's headers and
body: a client that opens connections and sends a byte now and then (slowloris) holds a socket
and a parser each, as long as it likes. This protocol gives each request HEADER_TIMEOUT_S from
its first byte (or from the connection's start) to finish its headers, and lets its body go
BODY_IDLE_TIMEOUT_S without a byte; past either, the connection is aborted (RST: nothing waits
on a client that does not read either). Time while the app has paused reading (its body buffer
is full) does not count.

Run it with `uvicorn --http api.connections:GuardedHttpToolsProtocol` (cli/stack.py, the
Dockerfile and docker-compose.yml do).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

#: From a connection's (or a request's) first byte to the end of its headers.
HEADER_TIMEOUT_S = 15.0
#: Longest silence in the middle of a request body.
BODY_IDLE_TIMEOUT_S = 30.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _guard: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(HEADER_TIMEOUT_S, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(HEADER_TIMEOUT_S, "headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(BODY_IDLE_TIMEOUT_S, "body")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(BODY_IDLE_TIMEOUT_S, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the request is in; the response is the app's (and its bounded sends)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection now belongs to the WebSocket protocol
        super().handle_websocket_upgrade()

    def _arm(self, timeout_s: float, what: str) -> None:
        self._disarm()
        self._guard = self.loop.call_later(timeout_s, self._expire, timeout_s, what)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _expire(self, timeout_s: float, what: str) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app is behind, not the client
            self._arm(timeout_s, what)
            return
        logger.warning(
            "closing a connection from %s: its request %s took more than %.0f s",
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            "headers" if what == "headers" else "body paused",
            timeout_s,
        )
        self.transport.abort()
