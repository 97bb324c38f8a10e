"""Publish job events off the generation thread, coalesced: one Redis round trip per flush.

Generation never waits on Redis: runners hand events to the Publisher, whose thread sends all
that is pending (every job's events, in order) as one pipeline of `emit` scripts, then tells each
job's Stream whether cancel was requested or its attempt lost the job.

When Redis fails (down, restarting, refusing writes), nothing is dropped: the flush is retried
with backoff while new events queue behind it, and generation goes on. If Redis came back from
an AOF that lost its last second, the log lacks some of an attempt's events (emit answers -2):
the publisher then appends a `reset` and the attempt's whole text as one token event, numbered
above every seq it handed out, so a reader ends up with the exact text again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.events import EventType
from jobs.models import Job
from jobs.store import Emit, WorkerStore
from worker.leases import redis_errors

logger = logging.getLogger(__name__)

#: emit answers (see jobs/lua/emit.lua).
CANCEL, FENCED, LOG_LOST = 1, -1, -2
#: With several jobs streaming, wait this long after the first pending event for the rest of a
#: decode step's events (the task threads hand them over one by one) so that one round trip
#: carries them all. A lone job is flushed at once.
LINGER_S = 0.003
#: Retry delays of a flush that failed: from the first to the longest.
BACKOFF_S = (0.05, 2.0)


@dataclass
class Stream:
    """One attempt's outgoing events; flags are set by the publisher thread."""

    job: Job
    fence: int
    #: called (on the publisher thread) as soon as Redis answers that the job must stop
    on_stop: Callable[[], None] | None = None
    cancel_requested: bool = False
    fenced: bool = False
    #: what the log holds of this attempt, as far as the publisher knows
    written_tokens: int = 0
    written_text: list[str] = field(default_factory=list)
    last_seq: int = 0
    _pending: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_flushed(self, timeout_s: float) -> bool:
        """Block until every event handed over so far is in Redis (or the attempt lost the
        job); False if that took longer than timeout_s."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0 or self.fenced, timeout_s)

    def fence_out(self) -> None:
        """The attempt no longer owns its job (its lease was taken): stop, write nothing more."""
        with self._cond:
            self.fenced = True
            self._cond.notify_all()
        if self.on_stop is not None:
            self.on_stop()


@dataclass
class _Item:
    stream: Stream
    completion_tokens: int
    events: list[tuple[str, str]]
    text: str


class Publisher:
    def __init__(self, store: WorkerStore):
        self.store = store
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.stats = {"flushes": 0, "events": 0, "retries": 0, "resyncs": 0}
        self._open = 0  # streams of running attempts
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="tokenq-publisher", daemon=True)
        self._thread.start()

    def open(self, job: Job, fence: int, on_stop: Callable[[], None] | None = None) -> Stream:
        with self._lock:
            self._open += 1
        return Stream(job, fence, on_stop)

    def close_stream(self, stream: Stream) -> None:
        """The attempt handed over its last event (its final result goes through the store)."""
        with self._lock:
            self._open -= 1

    def send(
        self, stream: Stream, completion_tokens: int, events: list[tuple[str, str]], text: str
    ) -> None:
        """Queue events; `text` is what they add to the attempt's text."""
        with stream._cond:
            stream._pending += 1
        self._queue.put(_Item(stream, completion_tokens, events, text))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        items: list[_Item] = []
        delay = BACKOFF_S[0]
        while True:
            if not items:
                first = self._queue.get()
                if first is None:
                    return
                items = [first]
                if self._open > 1:
                    time.sleep(LINGER_S)
            closing = False
            while True:  # take everything pending: it all goes in one round trip
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                items.append(item)
            if self._flush(items):
                items, delay = [], BACKOFF_S[0]
            else:
                self.stats["retries"] += 1
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
            if closing:
                return

    def _flush(self, items: list[_Item]) -> bool:
        """Send the items; False when Redis failed (the caller retries them all)."""
        # Merge each live stream's items, keeping their order: one emit call per job.
        merged: dict[int, list[_Item]] = {}
        for item in items:
            if not item.stream.fenced:
                merged.setdefault(id(item.stream), []).append(item)
        streams = [group[0].stream for group in merged.values()]
        calls = [
            Emit(
                s.job,
                s.fence,
                group[-1].completion_tokens,
                [event for item in group for event in item.events],
                before=s.written_tokens,
            )
            for s, group in zip(streams, merged.values(), strict=True)
        ]
        try:
            answers = self.store.emit_many(calls) if calls else []
            for i, (code, _) in enumerate(answers):
                if code == LOG_LOST:
                    answers[i] = self._resync(streams[i], list(merged.values())[i])
        except Exception as exc:
            redis_errors.add()
            logger.warning("publishing %d events failed (%s); retrying", len(items), exc)
            return False
        self.stats["flushes"] += 1
        self.stats["events"] += len(items)
        for stream, group, (code, seq) in zip(streams, merged.values(), answers, strict=True):
            stream.last_seq = max(stream.last_seq, seq)
            if code in (0, CANCEL):
                stream.written_tokens = group[-1].completion_tokens
                stream.written_text.extend(item.text for item in group)
            if code in (CANCEL, FENCED) and stream.on_stop is not None:
                stream.on_stop()  # stop decoding now, not when the runner reads its next chunk
            with stream._cond:
                if code == CANCEL:
                    stream.cancel_requested = True
                elif code == FENCED:
                    stream.fenced = True
                stream._cond.notify_all()
        self._settle(items)
        return True

    def _resync(self, stream: Stream, group: list[_Item]) -> tuple[int, int]:
        """The log lost some of this attempt's events: write a reset and the whole text."""
        self.stats["resyncs"] += 1
        text = "".join(stream.written_text) + "".join(item.text for item in group)
        n = group[-1].completion_tokens
        logger.warning("job %s: the log lost events (Redis restarted?); rewriting", stream.job.id)
        reset = (EventType.RESET.value, json.dumps({"attempt": stream.fence, "resync": True}))
        token = (EventType.TOKEN.value, json.dumps({"text": text, "n": n}))
        call = Emit(
            stream.job, stream.fence, n, [reset, token], before=None, seq_floor=stream.last_seq
        )
        [answer] = self.store.emit_many([call])
        return answer

    @staticmethod
    def _settle(items: list[_Item]) -> None:
        for item in items:
            with item.stream._cond:
                item.stream._pending -= 1
                item.stream._cond.notify_all()
