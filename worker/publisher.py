"""Publish job events off the generation thread, coalesced: one Redis round trip per flush.

Generation never waits on Redis: runners hand events to the Publisher, whose thread sends all
that is pending (every job's events, in order) as one pipeline of `emit` scripts, then tells each
job's Stream whether cancel was requested or its attempt lost the job.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.models import Job
from jobs.store import WorkerStore

logger = logging.getLogger(__name__)

#: emit answers (see jobs/lua/emit.lua).
CANCEL, FENCED = 1, -1
#: With several jobs streaming, wait this long after the first pending event for the rest of a
#: decode step's events (the task threads hand them over one by one) so that one round trip
#: carries them all. A lone job is flushed at once.
LINGER_S = 0.003


@dataclass
class Stream:
    """One attempt's outgoing events; flags are set by the publisher thread."""

    job: Job
    fence: int
    #: called (on the publisher thread) as soon as Redis answers that the job must stop
    on_stop: Callable[[], None] | None = None
    cancel_requested: bool = False
    fenced: bool = False
    _pending: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_flushed(self, timeout_s: float = 30) -> None:
        """Block until every event handed over so far is in Redis."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending == 0, timeout_s):
                raise TimeoutError(f"events of job {self.job.id} not flushed in {timeout_s}s")


@dataclass
class _Item:
    stream: Stream
    completion_tokens: int
    events: list[tuple[str, str]]


class Publisher:
    def __init__(self, store: WorkerStore):
        self.store = store
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.stats = {"flushes": 0, "events": 0}
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

    def send(self, stream: Stream, completion_tokens: int, events: list[tuple[str, str]]) -> None:
        with stream._cond:
            stream._pending += 1
        self._queue.put(_Item(stream, completion_tokens, events))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            if self._open > 1:
                time.sleep(LINGER_S)
            while True:  # take everything pending: it all goes in one round trip
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._flush(items)
                    return
                items.append(item)
            self._flush(items)

    def _flush(self, items: list[_Item]) -> None:
        self.stats["flushes"] += 1
        self.stats["events"] += len(items)
        # Merge each stream's items, keeping their order: one emit call per job.
        merged: dict[int, tuple[Stream, int, list[tuple[str, str]], int]] = {}
        for item in items:
            key = id(item.stream)
            if key in merged:
                stream, _, events, count = merged[key]
                merged[key] = (stream, item.completion_tokens, events + item.events, count + 1)
            else:
                merged[key] = (item.stream, item.completion_tokens, list(item.events), 1)
        try:
            answers = self.store.emit_many(
                [(s.job, s.fence, n, events) for s, n, events, _ in merged.values()]
            )
        except Exception:  # Redis unreachable: the attempt cannot record its work; stop it
            logger.exception("publishing %d events failed", len(items))
            answers = [FENCED] * len(merged)
        for (stream, _, _, count), answer in zip(merged.values(), answers, strict=True):
            if answer in (CANCEL, FENCED) and stream.on_stop is not None:
                stream.on_stop()  # stop decoding now, not when the runner reads its next chunk
            with stream._cond:
                if answer == CANCEL:
                    stream.cancel_requested = True
                elif answer == FENCED:
                    stream.fenced = True
                stream._pending -= count
                stream._cond.notify_all()
