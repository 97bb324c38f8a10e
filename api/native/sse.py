"""An event log over SSE or a WebSocket, as the native routes send it (one frame per event).

Every stream ends: a reader already at or past the final event of an ended log is answered
204 No Content (what makes a browser's EventSource stop reconnecting, as the HTML spec has it),
and a reader that takes no frame for SEND_TIMEOUT_S is cut off and its subscription released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, cast

import anyio
from fastapi import Request, Response, WebSocket, WebSocketDisconnect, status
from sse_starlette import EventSourceResponse

from api.streaming import SEND_TIMEOUT_S, BoundedEventSourceResponse, LogFollower
from jobs.errors import InvalidRequestError
from jobs.events import Event, EventType

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


#: A queued job's stream says where the job stands in line at most this often (when it moved).
QUEUE_NOTE_S = 2.0

#: Where a queued job stands now (JobService.queue_note), or None once it is no longer queued.
QueueNote = Callable[[], Awaitable[dict[str, Any] | None]]


def _generator(events: AsyncIterable[Event]) -> AsyncGenerator[Event, None]:
    """The events' iterator: a follower's and with_queue_notes() are generators (closable)."""
    return cast(AsyncGenerator[Event, None], aiter(events))


def sse_response(events: AsyncIterable[Event], ping_s: float) -> EventSourceResponse:
    """Each event as `id: <seq>`, `event: <type>`, `data: <the event's JSON>`; a `queued`
    note without an id (it is not in the log: a reconnection resumes after the event before)."""

    async def frames() -> AsyncIterator[dict[str, str]]:
        async with contextlib.aclosing(_generator(events)) as log:  # closed with the response
            async for event in log:
                if event.type == EventType.QUEUED:
                    yield {"event": event.type, "data": event.raw}
                else:
                    yield {"id": str(event.seq), "event": event.type, "data": event.raw}

    return BoundedEventSourceResponse(frames(), ping=ping_s, headers={"X-Accel-Buffering": "no"})


async def log_response(
    events: LogFollower, ping_s: float, queue_note: QueueNote | None = None
) -> Response:
    """204 No Content when the reader is already at or past the end of an ended log (a
    browser's EventSource reconnects after every normal end with exactly the final event's
    id, and stops only on a 204); else the log's events over SSE, with `queue_note`'s notes
    while the job waits."""
    if await events.past_end():
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return sse_response(with_queue_notes(events, queue_note), ping_s)


async def with_queue_notes(
    events: AsyncIterable[Event], queue_note: QueueNote | None
) -> AsyncGenerator[Event, None]:
    """The events, and while the job is queued a `queued` note each time its position changed
    (checked every QUEUE_NOTE_S, first after one: a job that starts at once gets none).
    Without `queue_note`, the events alone."""
    log = _generator(events)
    if queue_note is None:
        async with contextlib.aclosing(log):
            async for event in log:
                yield event
        return
    last_seq, shown = 0, None
    waiting: asyncio.Future[Event] | None = None
    note: dict[str, Any] | None = {"position": None}  # not asked yet: ask after QUEUE_NOTE_S
    try:
        while True:
            if note is not None and note["position"] not in (shown, None):
                shown = note["position"]
                yield Event(
                    last_seq, EventType.QUEUED, Event.encode(last_seq, EventType.QUEUED, note)
                )
            if waiting is None:
                waiting = asyncio.ensure_future(anext(log))
            if note is not None:
                done, _ = await asyncio.wait({waiting}, timeout=QUEUE_NOTE_S)
                if not done:
                    try:
                        note = await queue_note()
                    except Exception:  # Redis: the follower itself retries; keep the last note
                        logger.warning("could not read a queued job's position", exc_info=True)
                    continue
            try:
                event = await waiting
            except StopAsyncIteration:
                return
            waiting = None
            yield event
            last_seq = event.seq
            if event.type == EventType.STATUS and event.data.get("status") != "queued":
                note = None  # it started (or ended): nothing more to say about the line
    finally:
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await waiting
        await log.aclose()


async def websocket_stream(websocket: WebSocket, events: AsyncIterable[Event]) -> None:
    """Each event as one text frame (its JSON); the socket closes after the final event (at
    once for a reader already past it). A frame the client does not take within
    SEND_TIMEOUT_S ends the stream."""
    try:
        async with contextlib.aclosing(_generator(events)) as log:
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
