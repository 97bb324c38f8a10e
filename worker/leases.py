"""The worker's side of leases: renew every running attempt's lease and the heartbeat together.

One thread per worker process. Every third of a lease it sends one renew.lua call for all the
attempts it holds; an attempt Redis says this worker no longer owns (the reconciler gave its job
to another attempt, or it was cancelled and finished) is stopped. A Redis error is retried a
second later: leases last three renew periods, so a short outage costs nothing, and after a long
one the reconciler waits a whole lease before it takes any job back (worker/reconciler.py).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from jobs.store import WorkerStore

logger = logging.getLogger(__name__)

#: How soon a failed renewal is tried again.
RETRY_S = 1.0


class ErrorCount:
    """A thread-safe count of failed Redis calls."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self._n += 1

    @property
    def value(self) -> int:
        return self._n


#: Redis calls of this worker process that failed (each was retried); its heartbeat reports it
#: (GET /metrics: tokenq_worker_redis_errors_total).
redis_errors = ErrorCount()


class LeaseKeeper:
    def __init__(self, store: WorkerStore, model: str, slots: int, lease_s: float):
        self.store = store
        self.model = model
        self.slots = slots
        self.lease_s = lease_s
        self._held: dict[str, tuple[int, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokenq-leases", daemon=True)

    def start(self) -> None:
        self.renew()  # the heartbeat is up before the first job is claimed
        self._thread.start()

    def hold(self, job_id: str, fence: int, on_lost: Callable[[], None]) -> None:
        """Renew this attempt's lease until release(); on_lost() if Redis says it is not ours."""
        with self._lock:
            self._held[job_id] = (fence, on_lost)

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def running(self) -> int:
        with self._lock:
            return len(self._held)

    def renew(self) -> bool:
        """One renewal of every held lease and the heartbeat; False when Redis failed."""
        with self._lock:
            held = {job_id: fence for job_id, (fence, _) in self._held.items()}
        heartbeat = json.dumps(
            {
                "model": self.model,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "slots": self.slots,
                "running": len(held),
                "redis_errors": redis_errors.value,
                "at": time.time(),
            }
        )
        try:
            lost = self.store.renew(self.model, self.lease_s, heartbeat, list(held.items()))
        except Exception as exc:
            redis_errors.add()
            logger.warning("renewing %d leases failed (%s); retrying", len(held), exc)
            return False
        for job_id in lost:
            with self._lock:
                entry = self._held.pop(job_id, None)
            if entry is not None:
                logger.warning("job %s is no longer this worker's; stopping its attempt", job_id)
                entry[1]()
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.store.leave(self.model)
        except Exception:
            logger.warning("could not remove this worker's heartbeat")

    def _run(self) -> None:
        interval = self.lease_s / 3
        while not self._stop.wait(interval):
            while not self.renew() and not self._stop.wait(RETRY_S):
                pass
