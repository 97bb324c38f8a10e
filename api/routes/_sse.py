"""SSE and WebSocket framing over `follow()` (shared by the job and batch routes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse

from api.streaming import follow
from jobs.store import AsyncStore


def last_event_id(request: Request | WebSocket) -> int:
    """Resume point: the Last-Event-ID header (SSE reconnects send it) or ?last_event_id=."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    return int(raw) if raw.strip().isdigit() else 0


def sse_response(request: Request, stream: str, channel: str) -> EventSourceResponse:
    app = request.app
    store: AsyncStore = app.state.store

    async def events() -> AsyncIterator[dict[str, str]]:
        async for event in follow(app.state.hub, store, stream, channel, last_event_id(request)):
            yield {"id": str(event.seq), "event": event.type, "data": event.raw}

    return EventSourceResponse(
        events(), ping=app.state.settings.stream_ping_s, headers={"X-Accel-Buffering": "no"}
    )


async def websocket_stream(websocket: WebSocket, stream: str, channel: str) -> None:
    app = websocket.app
    try:
        async for event in follow(
            app.state.hub, app.state.store, stream, channel, last_event_id(websocket)
        ):
            await websocket.send_text(event.raw)
        await websocket.close()
    except WebSocketDisconnect:
        return
