"""An event log over SSE or a WebSocket, as the native routes send it (one frame per event).

Every stream ends: a reader already at or past the final event of an ended log is answered
204 No Content (what makes a browser's EventSource stop reconnecting, as the HTML spec has it),
and a reader that takes no frame for SEND_TIMEOUT_S is cut off and its subscription released.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator

import anyio
from fastapi import Request, Response, WebSocket, WebSocketDisconnect, status
from sse_starlette import EventSourceResponse

from api.streaming import SEND_TIMEOUT_S, BoundedEventSourceResponse, LogFollower
from jobs.errors import InvalidRequestError

logger = logging.getLogger(__name__)

#: Event seqs are decimal; 18 digits are more events than any log holds.
_SEQ = re.compile(r"[0-9]{1,18}")


def last_event_id(request: Request | WebSocket) -> int:
    """Resume point: the Last-Event-ID header (SSE reconnects send it) or ?last_event_id=.
    An empty one means from the start, as the SSE spec has it; anything but decimal digits is 400."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or ""
    raw = raw.strip()
    if not raw:
        return 0
    if _SEQ.fullmatch(raw) is None:
        raise InvalidRequestError(
            "Last-Event-ID must be an event's seq: up to 18 decimal digits",
            param="Last-Event-ID",
            code="invalid_last_event_id",
        )
    return int(raw)


def sse_response(events: LogFollower, ping_s: float) -> EventSourceResponse:
    """Each event as `id: <seq>`, `event: <type>`, `data: <the event's JSON>`."""

    async def frames() -> AsyncIterator[dict[str, str]]:
        async with contextlib.aclosing(aiter(events)) as log:  # closed with the response
            async for event in log:
                yield {"id": str(event.seq), "event": event.type, "data": event.raw}

    return BoundedEventSourceResponse(frames(), ping=ping_s, headers={"X-Accel-Buffering": "no"})


async def log_response(events: LogFollower, ping_s: float) -> Response:
    """204 No Content when the reader is already at or past the end of an ended log (a
    browser's EventSource reconnects after every normal end with exactly the final event's
    id, and stops only on a 204); else the log's events over SSE."""
    if await events.past_end():
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return sse_response(events, ping_s)


async def websocket_stream(websocket: WebSocket, events: LogFollower) -> None:
    """Each event as one text frame (its JSON); the socket closes after the final event (at
    once for a reader already past it). A frame the client does not take within
    SEND_TIMEOUT_S ends the stream."""
    try:
        async with contextlib.aclosing(aiter(events)) as log:
            async for event in log:
                with anyio.move_on_after(SEND_TIMEOUT_S) as waited:
                    await websocket.send_text(event.raw)
                if waited.cancelled_caught:
                    logger.warning(
                        "a WebSocket reader took no data for %.0f s; its stream is cut off",
                        SEND_TIMEOUT_S,
                    )
                    return
        await websocket.close()
    except WebSocketDisconnect:
        return
