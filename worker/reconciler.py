"""The reconciler: puts a lost worker's jobs back in line, expires late jobs, tops up tickets.

Every worker process runs one; a Redis lock lets one act at a time. Each round:
1. the tenants' fair-share weights are written as TOKENQ_TENANT_WEIGHTS says (claims read them);
2. queued jobs past their deadline (their own, or their batch's window) end `expired`;
3. running jobs whose lease lapsed (their worker stopped renewing) go back in line as suspects,
   which run alone (claim_next.lua), or fail if they used up their attempts (requeue.lua);
4. each model whose queued jobs outnumber the tickets waiting in its Celery queue, in this round
   and the one before (tickets an API is sending right now are not missing), gets the missing
   tickets (an API that died after its commit, a broker error, a worker that took a ticket and
   died). A spare ticket costs one claim that finds nothing.
The broker's visibility timeout is only a backstop behind this.

After a Redis error the reconciler acts again only once Redis has answered for a whole lease:
by then every live worker has renewed, so a lease that lapsed during an outage is not taken
from a worker that is still running its job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from jobs import keys
from jobs.store import WorkerStore
from worker.leases import redis_errors

logger = logging.getLogger(__name__)

#: Lapsed leases handled per round (more wait for the next round).
REQUEUE_LIMIT = 1000
#: Tickets sent per model per round.
TICKET_LIMIT = 10_000


class Reconciler:
    def __init__(
        self,
        store: WorkerStore,
        models: Iterable[str],
        send_tickets: Callable[[str, int], None],
        interval_s: float,
        lease_s: float,
        tenant_weights: dict[str, float] | None = None,
    ):
        self.tenant_weights = tenant_weights or {}
        self.store = store
        self.models = list(models)
        self.send_tickets = send_tickets
        self.interval_s = interval_s
        self.lease_s = lease_s
        self._healthy_since: float | None = None
        self._missing: dict[str, int] = {}  # tickets missing per model in the last round
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokenq-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.round()
            except Exception as exc:
                self._healthy_since = None
                redis_errors.add()
                logger.warning("reconcile round failed (%s)", exc)

    def round(self) -> dict[str, int]:
        """One round; returns the jobs put back per model (empty when it did not act)."""
        if not self.store.take_lock(keys.reconciler_lock(), self.interval_s * 3):
            self._healthy_since = self._healthy_since or time.monotonic()
            return {}
        now = time.monotonic()
        if self._healthy_since is None:
            self._healthy_since = now
        if now - self._healthy_since < self.lease_s:
            return {}  # Redis just came back: give live workers a lease to renew first
        self.store.set_tenant_weights(self.tenant_weights)  # as this worker's settings say
        expired = self.store.expire_due(REQUEUE_LIMIT)
        if expired:
            logger.info("%d queued job(s) passed their deadline; expired", expired)
        requeued = self.store.requeue_expired(REQUEUE_LIMIT)
        for model, n in requeued.items():
            logger.warning("%d job(s) of model %s lost their worker; back in line", n, model)
        missing = self.store.tickets_missing(self.models)
        for model, n in missing.items():
            n = min(n, self._missing.get(model, 0) + requeued.get(model, 0), TICKET_LIMIT)
            if n > 0:
                logger.info("model %s: %d queued job(s) had no ticket; sending them", model, n)
                self.send_tickets(model, n)
        self._missing = missing
        return requeued
