"""Limits that live beside the app (ASGI middleware): the request body's size, and the rate-limit
headers of a response.

A body with a Content-Length over the limit is refused at once. One without (chunked) is read
here first, up to the limit, and handed to the app afterwards: so an oversize body is a 413 on
every route, whatever reads it (FastAPI turns errors raised while it reads a body into 400).

A request that a tenant's rate limits counted gets OpenAI's x-ratelimit-* headers on its
response, whatever the route: JobService fills `rate_headers()` for the request, and
RateLimitHeaders adds what it holds to the response's start.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import tokenq_error_body
from jobs.errors import BodyTooLargeError

_RATE_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "tokenq_rate_headers", default=None
)


def rate_headers() -> dict[str, str]:
    """The current request's rate-limit headers, to fill (a throwaway dict outside a request)."""
    headers = _RATE_HEADERS.get()
    return headers if headers is not None else {}


def duration(seconds: float) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it: 20ms, 1s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class RateLimitHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        _RATE_HEADERS.set(headers)  # filled in place, so child tasks' copies fill it too

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.encode(), value.encode())
                    for name, value in headers.items()
                    if name.encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


#: How a surface shapes an error body, by path prefix (tokenq's own shape elsewhere).
ErrorShapes = Mapping[str, Callable[[BodyTooLargeError], dict[str, Any]]]


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, shapes: ErrorShapes | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.shapes = shapes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, send)
            return
        if length is None:
            buffered = await self._read_chunked(receive)
            if buffered is None:
                await self._reject(scope, send)
                return
            receive = self._replay(buffered, receive)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLargeError:
            await self._reject(scope, send)

    async def _read_chunked(self, receive: Receive) -> list[Message] | None:
        """The body's messages, or None once they pass the limit."""
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client left: let the app see it
                return messages
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    @staticmethod
    def _replay(messages: list[Message], receive: Receive) -> Receive:
        pending = list(messages)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        return replay

    def _too_large(self) -> BodyTooLargeError:
        return BodyTooLargeError(f"request body over the limit of {self.max_bytes} bytes")

    async def _reject(self, scope: Scope, send: Send) -> None:
        shape = next(
            (f for prefix, f in self.shapes.items() if scope["path"].startswith(prefix)),
            tokenq_error_body,
        )
        body = json.dumps(shape(self._too_large())).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
