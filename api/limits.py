"""Request body size limit, enforced before the body is read (ASGI middleware)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import tokenq_error_body
from jobs.errors import BodyTooLargeError


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
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
            await self._reject(send)

    def _too_large(self) -> BodyTooLargeError:
        return BodyTooLargeError(f"request body over the limit of {self.max_bytes} bytes")

    async def _reject(self, send: Send) -> None:
        body = json.dumps(tokenq_error_body(self._too_large())).encode()
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
