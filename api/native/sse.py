"""An event log over SSE or a WebSocket, as the native routes send it (one frame per event)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from fastapi import Request, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse

from jobs.errors import InvalidRequestError
from jobs.events import Event

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


def sse_response(events: AsyncIterator[Event], ping_s: float) -> EventSourceResponse:
    """Each event as `id: <seq>`, `event: <type>`, `data: <the event's JSON>`."""

    async def frames() -> AsyncIterator[dict[str, str]]:
        async for event in events:
            yield {"id": str(event.seq), "event": event.type, "data": event.raw}

    return EventSourceResponse(frames(), ping=ping_s, headers={"X-Accel-Buffering": "no"})


async def websocket_stream(websocket: WebSocket, events: AsyncIterator[Event]) -> None:
    """Each event as one text frame (its JSON); the socket closes after the final event."""
    try:
        async for event in events:
            await websocket.send_text(event.raw)
        await websocket.close()
    except WebSocketDisconnect:
        return
