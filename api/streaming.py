"""Follow an event log live: replay from Redis Streams, then pub/sub, each event exactly once,
and always to an end.

One `EventHub` per API process holds one pub/sub connection for all streaming clients; each
followed channel is subscribed once however many clients watch it. `follow()` yields a log's raw
events (the native SSE and WebSocket routes send them as they are); the surfaces read a job as
`JobUpdate`s instead (JobService.updates): its text as it grows, restarts, its final record.

Pub/sub is only the fast path. The stream is the source of truth: a follower refills from it on
every gap, overflow or reconnect, and re-reads it on a timer, so a PUBLISH that never arrives
costs at most one interval, never a stream that does not end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis.asyncio as aioredis
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from api.metrics import stream_client
from jobs import keys
from jobs.events import Event
from jobs.models import Job
from jobs.store import AsyncStore

logger = logging.getLogger(__name__)

#: A reader whose socket takes no frame for this long (its buffers full, nothing read) is cut
#: off: one that stopped reading must not hold a connection, a task and a subscription forever.
SEND_TIMEOUT_S = 30.0


class BoundedSends:
    """Mixin for a streaming response (before it in the bases): every ASGI send is bounded by
    SEND_TIMEOUT_S: the start, each frame, each ping and the end (sse_starlette's own
    `send_timeout` leaves the start and the end out, and the end blocks as long as the client's
    socket is full).

    On a timeout the body iterator is closed (a follower lets go of its subscription) and the
    response returns unfinished, so uvicorn closes the transport. ASGI has no way to abort one:
    uvloop (and asyncio) close a transport only once its write buffer drains, so the socket and
    its kernel buffer stay until the peer reads or goes."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            with anyio.move_on_after(SEND_TIMEOUT_S) as waited:
                await send(message)
            if waited.cancelled_caught:
                raise SendTimeoutError  # sse_starlette's own, for any streaming response

        try:
            with stream_client("sse"):
                await super().__call__(scope, receive, bounded_send)  # type: ignore[misc]
        except* SendTimeoutError:
            client = scope.get("client")
            logger.warning(
                "a stream reader (%s) took no data for %.0f s; its stream is cut off",
                f"{client[0]}:{client[1]}" if client else "?",
                SEND_TIMEOUT_S,
            )


class BoundedEventSourceResponse(BoundedSends, EventSourceResponse):
    """sse_starlette's EventSourceResponse with bounded sends (BoundedSends)."""


#: Per-client buffer of live events; a client that falls this far behind is refilled from the
#: stream instead (nothing is lost, the stream is the source of truth).
CLIENT_BUFFER = 4096
#: Events read per XRANGE; a refill reads pages until a short one (the log's end).
PAGE = 1000
#: How long a new subscription waits for Redis to confirm it. Past that its followers go on
#: without (the timer re-check covers what pub/sub may miss) instead of waiting for ever.
SUBSCRIBE_WAIT_S = 5.0
#: Pause after a failed SUBSCRIBE/UNSUBSCRIBE or pub/sub read before the next try.
RETRY_S = 0.5
#: A follower re-reads its log this often when nothing arrives live (the stream ping interval,
#: TOKENQ_STREAM_PING_S, is what JobService passes).
RECHECK_S = 15.0


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


@dataclass(eq=False)
class _Channel:
    """The followers of one channel: their queues, and whether Redis confirmed the SUBSCRIBE."""

    queues: set[asyncio.Queue[Event | None]] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class EventHub:
    """One pub/sub connection fanned out to every follower of the API process.

    Followers only change in-memory state (no await in their clean-up, so a cancelled or
    failing client can leave nothing behind); one task of the hub sends every SUBSCRIBE and
    UNSUBSCRIBE, bringing Redis in line with the channels followed now, and retries until it
    is. `None` in a queue tells its follower to refill from the log.
    """

    def __init__(self, client: aioredis.Redis):
        self._pubsub = client.pubsub(ignore_subscribe_messages=False)
        self._parking = keys.hub_parking_channel()
        self._channels: dict[str, _Channel] = {}
        self._subscribed: set[str] = set()  # sent SUBSCRIBE, no UNSUBSCRIBE since
        self._changed = asyncio.Event()
        self._connected = False  # the parking channel's first confirmation came
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._pubsub.subscribe(self._parking)
        self._tasks = [
            asyncio.create_task(self._read(), name="event-hub-read"),
            asyncio.create_task(self._sync(), name="event-hub-sync"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def subscription(self, channel: str) -> AsyncIterator[asyncio.Queue[Event | None]]:
        """A queue of the channel's live events; subscribed (confirmed by Redis) on entry, or
        SUBSCRIBE_WAIT_S passed. Cancel- and exception-safe: leaving, however, releases it."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=CLIENT_BUFFER)
        entry = self._channels.get(channel)
        if entry is None:
            entry = self._channels[channel] = _Channel()
            self._changed.set()
        entry.queues.add(queue)
        try:
            with anyio.move_on_after(SUBSCRIBE_WAIT_S) as waited:
                await entry.ready.wait()
            if waited.cancelled_caught:
                logger.warning(
                    "no SUBSCRIBE confirmation for %s in %.0f s; following it by re-reads",
                    channel,
                    SUBSCRIBE_WAIT_S,
                )
                entry.ready.set()  # later followers of this channel do not wait again
            yield queue
        finally:
            entry.queues.discard(queue)
            if not entry.queues and self._channels.get(channel) is entry:
                del self._channels[channel]
                self._changed.set()

    async def _sync(self) -> None:
        """Send SUBSCRIBE / UNSUBSCRIBE until Redis has exactly the channels followed now."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            wanted = set(self._channels)
            gone = self._subscribed - wanted
            new = wanted - self._subscribed
            try:
                if gone:
                    await self._pubsub.unsubscribe(*gone)
                    self._subscribed -= gone
                if new:
                    await self._pubsub.subscribe(*new)
                    self._subscribed |= new
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event hub could not (un)subscribe; retrying", exc_info=True)
                self._changed.set()
                await asyncio.sleep(RETRY_S)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # the connection dropped: redis-py reconnects and resubscribes
                logger.warning("event hub read failed; retrying", exc_info=True)
                self._refill_all()  # what was published meanwhile is in the logs only
                await asyncio.sleep(RETRY_S)
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if message["type"] == "message":
                entry = self._channels.get(channel)
                if entry is not None:
                    event = Event.parse(message["data"])
                    for queue in list(entry.queues):
                        _put(queue, event)
            elif message["type"] == "subscribe":
                self._confirmed(channel)

    def _confirmed(self, channel: str) -> None:
        if channel == self._parking:
            if self._connected:
                # A (re)connection: redis-py subscribed again what it knew, its own list, not
                # ours (a channel whose UNSUBSCRIBE was in flight is back): resync, and refill
                # every follower, since events published while it was down are lost to pub/sub.
                self._subscribed = {
                    c.decode() if isinstance(c, bytes) else c for c in self._pubsub.channels
                } - {self._parking}
                self._changed.set()
                self._refill_all()
            self._connected = True
            return
        entry = self._channels.get(channel)
        if entry is None:
            return
        if entry.ready.is_set():  # subscribed again (a reconnection): a gap may precede it
            for queue in list(entry.queues):
                _put(queue, None)
        entry.ready.set()

    def _refill_all(self) -> None:
        for entry in list(self._channels.values()):
            for queue in list(entry.queues):
                _put(queue, None)


def _put(queue: asyncio.Queue[Event | None], item: Event | None) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        # Drop the backlog and leave a marker: the reader refills from the stream.
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)


@dataclass(frozen=True)
class LogFollower:
    """One reader of one log, from after `after_seq`: iterate it for its events (follow())."""

    hub: EventHub
    store: AsyncStore
    stream: str
    channel: str
    after_seq: int = 0
    recheck_s: float = RECHECK_S

    async def past_end(self) -> bool:
        """Whether the log ended at or before after_seq (or has expired): nothing will come."""
        return _ended(await self.store.last_event(self.stream), self.after_seq)

    def __aiter__(self) -> AsyncGenerator[Event, None]:
        return follow(
            self.hub, self.store, self.stream, self.channel, self.after_seq, self.recheck_s
        )


def _ended(tail: Event | None, last: int) -> bool:
    """A log with no entry has expired; one whose final event is at or before `last` ended."""
    return tail is None or (tail.final and tail.seq <= last)


async def follow(
    hub: EventHub,
    store: AsyncStore,
    stream: str,
    channel: str,
    after_seq: int = 0,
    recheck_s: float = RECHECK_S,
) -> AsyncGenerator[Event, None]:
    """Every event with seq > after_seq, in order, once each, until a final event; at once
    when the log has already ended at or before after_seq.

    Read the log to its end; a log that already ended needs no subscription. Otherwise
    subscribe, read again (what came before the subscription took), then follow live dropping
    seqs already sent. A gap in live seqs, an overflowing buffer, a reconnection of the hub,
    or `recheck_s` without a live event: read the log again from the last seq sent.
    """
    last = after_seq
    async with contextlib.AsyncExitStack() as exit_stack:
        live: asyncio.Queue[Event | None] | None = None
        while True:
            read_any = False
            while True:
                page = await store.events_after(stream, last, PAGE)
                for event in page:
                    read_any = True
                    yield event
                    last = event.seq
                    if event.final:
                        return
                if len(page) < PAGE:
                    break
            if not read_any:
                tail = await store.last_event(stream)
                if _ended(tail, last):
                    return
                if tail is not None and tail.seq > last:
                    continue  # appended since the read
            if live is None:
                live = await exit_stack.enter_async_context(hub.subscription(channel))
                continue
            while True:
                live_event = await _next_live(live, recheck_s)
                if live_event is None or live_event.seq > last + 1:
                    break  # refill from the log
                if live_event.seq <= last:
                    if live_event.final:
                        return  # the log ended at or before what this reader has
                    continue
                yield live_event
                last = live_event.seq
                if live_event.final:
                    return


async def _next_live(live: asyncio.Queue[Event | None], timeout_s: float) -> Event | None:
    """The next live event; None for a refill marker or when none came within timeout_s."""
    with anyio.move_on_after(timeout_s):
        return await live.get()
    return None
