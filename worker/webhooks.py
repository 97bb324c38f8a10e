"""Deliver webhook events: at least once, signed, retried with exponential backoff.

One thread per worker process. Every POLL_S it takes the events due now (webhook_claim.lua
pushes each a delivery lease ahead, so an event whose worker dies mid-delivery comes due again,
on any worker) and POSTs each to its tenant's endpoint, as that worker's settings say, signed
per Standard Webhooks (jobs/webhooks.py). A 2xx settles it. Anything else (an error status, a
refused or timed-out connection, a refused address) schedules the next attempt RETRY_BASE_S x
2^(attempt-1) later, at most RETRY_MAX_S, until TOKENQ_WEBHOOK_RETRY_WINDOW_S after the event,
when it is given up. Every attempt goes to the tenant's delivery log. Events live in Redis like
jobs do, so they survive worker restarts and a Redis restart on its AOF.

The thread also renews, every SUBSCRIPTIONS_S, which event types each tenant's webhook takes
(the tenants file), which is what lets finish_job queue events at all.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from jobs import webhooks
from jobs.store import WebhookEvent, WorkerStore
from jobs.webhooks import WebhookConfig
from worker.leases import redis_errors

logger = logging.getLogger(__name__)

POLL_S = 1.0
#: An event taken for delivery comes due again this long after, unless settled first.
DELIVERY_LEASE_S = 60.0
#: Events taken per poll.
BATCH = 20
#: One delivery's limit (connect, send, answer).
TIMEOUT_S = 10.0
RETRY_BASE_S = 5.0
RETRY_MAX_S = 3600.0
#: How often the subscriptions are renewed, and how long they outlive the last renewal.
SUBSCRIPTIONS_S = 10.0
SUBSCRIPTIONS_TTL_S = 60
#: A settled event is kept this long for a redelivery.
KEEP_S = 7 * 24 * 3600


def backoff_s(attempt: int) -> float:
    """The wait after failed attempt number `attempt` (from 1): 5 s, 10 s, 20 s, ... 1 h."""
    return min(RETRY_BASE_S * 2 ** (attempt - 1), RETRY_MAX_S)


class WebhookSender:
    def __init__(
        self,
        store: WorkerStore,
        tenant_webhooks: dict[str, WebhookConfig],
        allow_private: bool,
        retry_window_s: float,
    ):
        self.store = store
        self.tenant_webhooks = tenant_webhooks
        self.allow_private = allow_private
        self.retry_window_s = retry_window_s
        self._http = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokenq-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_S + 5)
        self._http.close()

    def _run(self) -> None:
        renewed = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - renewed > SUBSCRIPTIONS_S:
                    self.store.publish_webhook_subscriptions(
                        {t: w.events for t, w in self.tenant_webhooks.items()}, SUBSCRIPTIONS_TTL_S
                    )
                    renewed = time.monotonic()
                events = self.store.claim_webhooks(DELIVERY_LEASE_S, BATCH)
                for event in events:
                    self.deliver(event)
            except Exception as exc:  # Redis: the next poll tries again
                redis_errors.add()
                logger.warning("webhook delivery round failed (%s)", exc)
                events = []
            if not events:
                self._stop.wait(POLL_S)

    def deliver(self, event: WebhookEvent) -> None:
        """One attempt, then settle: delivered, due again later, or given up."""
        config = self.tenant_webhooks.get(event.tenant)
        now = time.time()
        entry: dict[str, Any] = {
            "webhook_id": event.id,
            "type": event.type,
            "attempt": event.attempt,
            "at": now,
            "status_code": None,
            "error": None,
        }
        if config is None:  # not in this worker's settings: another worker's may have it
            error: str | None = f"tenant {event.tenant!r} has no webhook configured"
        else:
            entry["url"] = config.url
            error = webhooks.address_problem(config.url, self.allow_private)
        if config is not None and error is None:
            body = event.body.encode()
            try:
                response = self._http.post(
                    config.url,
                    content=body,
                    headers=webhooks.headers(config.secret, event.id, int(now), body),
                )
                entry["status_code"] = response.status_code
                if 200 <= response.status_code < 300:
                    entry["state"] = "delivered"
                    self.store.settle_webhook(event, entry, retry_at=None, keep_s=KEEP_S)
                    return
                error = f"the endpoint answered {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        entry["error"] = error
        retry_at = now + backoff_s(event.attempt)
        if retry_at > event.created_at + self.retry_window_s:
            entry["state"] = "given_up"
            logger.warning(
                "webhook %s given up after %d attempts: %s", event.id, event.attempt, error
            )
            self.store.settle_webhook(event, entry, retry_at=None, keep_s=KEEP_S)
            return
        entry.update(state="retrying", next_attempt_at=retry_at)
        self.store.settle_webhook(event, entry, retry_at=retry_at, keep_s=KEEP_S)
