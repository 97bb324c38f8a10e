"""Follow an event log live: replay from Redis Streams, then pub/sub, each event exactly once.

One `EventHub` per API process holds one pub/sub connection for all streaming clients; each
followed channel is subscribed once however many clients watch it. `follow()` yields a log's raw
events (the native SSE and WebSocket routes send them as they are); the surfaces read a job as
`JobUpdate`s instead (JobService.updates): its text as it grows, restarts, its final record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from jobs import keys
from jobs.events import Event
from jobs.models import Job
from jobs.store import AsyncStore

logger = logging.getLogger(__name__)

#: Per-client buffer of live events; a client that falls this far behind is refilled from the
#: stream instead (nothing is lost, the stream is the source of truth).
CLIENT_BUFFER = 4096


@dataclass(frozen=True)
class TextDelta:
    """New text of a job (one generated token's worth, or the echoed prompt)."""

    job_id: str
    text: str
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Restarted:
    """The job's worker was lost and a new attempt starts over: drop the text so far."""

    job_id: str
    attempt: int


@dataclass(frozen=True)
class Finished:
    """The job reached its final status; `job` is its record, result included."""

    job: Job


JobUpdate = TextDelta | Restarted | Finished


class EventHub:
    def __init__(self, client: aioredis.Redis):
        self._pubsub = client.pubsub(ignore_subscribe_messages=False)
        self._queues: dict[str, set[asyncio.Queue[Event | None]]] = defaultdict(set)
        self._ready: dict[str, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._pubsub.subscribe(keys.hub_parking_channel())
        self._reader = asyncio.create_task(self._read(), name="event-hub")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def subscription(self, channel: str) -> AsyncIterator[asyncio.Queue[Event | None]]:
        """A queue of the channel's live events, subscribed (confirmed by Redis) on entry."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=CLIENT_BUFFER)
        async with self._lock:
            first = not self._queues[channel]
            self._queues[channel].add(queue)
            if first:
                self._ready[channel] = asyncio.Event()
                await self._pubsub.subscribe(channel)
            ready = self._ready[channel]
        await ready.wait()
        try:
            yield queue
        finally:
            async with self._lock:
                self._queues[channel].discard(queue)
                if not self._queues[channel]:
                    del self._queues[channel]
                    self._ready.pop(channel, None)
                    await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # the connection dropped: redis-py reconnects and resubscribes
                logger.exception("event hub read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if message["type"] == "subscribe":
                ready = self._ready.get(channel)
                if ready is not None:
                    ready.set()
                continue
            if message["type"] != "message":
                continue
            event = Event.parse(message["data"])
            for queue in list(self._queues.get(channel, ())):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    # Drop the backlog and leave a marker: the reader refills from the stream.
                    while not queue.empty():
                        queue.get_nowait()
                    queue.put_nowait(None)


async def follow(
    hub: EventHub, store: AsyncStore, stream: str, channel: str, after_seq: int = 0
) -> AsyncIterator[Event]:
    """Every event with seq > after_seq, in order, once each, until a final event.

    Subscribe first, then replay the stream, then follow live dropping what replay already sent;
    a gap in live seqs (or an overflowing buffer) is filled from the stream.
    """
    last = after_seq
    async with hub.subscription(channel) as live:
        while True:
            page = await store.events_after(stream, last)
            for event in page:
                yield event
                last = event.seq
                if event.final:
                    return
            if len(page) < 1000:
                break
        while True:
            live_event = await live.get()
            if live_event is None or live_event.seq > last + 1:
                for missed in await store.events_after(stream, last):
                    yield missed
                    last = missed.seq
                    if missed.final:
                        return
                continue
            if live_event.seq <= last:
                continue
            yield live_event
            last = live_event.seq
            if live_event.final:
                return
