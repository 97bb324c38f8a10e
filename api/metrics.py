"""This API process's own metrics, and the text GET /metrics answers.

The service's counters, histograms and queue gauges live in Redis (jobs/metrics.py): any API
process serves all of them. What only a process knows is kept here with prometheus-client: the
stream clients it holds and the Redis errors it answered 503 for, and the process' CPU and
memory. Run several API processes with PROMETHEUS_MULTIPROC_DIR set (prometheus-client's
multiprocess mode): each then serves the sum over all of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Receive, Scope, Send

#: GET /metrics answers in the Prometheus text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STREAM_CLIENTS = Gauge(
    "tokenq_stream_clients",
    "Streaming clients connected to the API, by transport (SSE, WebSocket)",
    ["transport"],
    multiprocess_mode="livesum",
)
API_REDIS_ERRORS = Counter(
    "tokenq_api_redis_errors", "Requests the API answered 503 because Redis did not answer"
)


@contextlib.contextmanager
def stream_client(transport: str) -> Iterator[None]:
    """Count a streaming client for as long as it is connected."""
    gauge = STREAM_CLIENTS.labels(transport)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def process_ended() -> None:
    """In multiprocess mode, drop this process's live gauges from the others' sums (a process
    killed without this keeps its last values in them until the directory is emptied)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        mark_process_dead(os.getpid())


class _Families:
    def __init__(self, families: Iterable[Metric]):
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(service_families: Iterable[Metric]) -> bytes:
    """The exposition: this process's metrics (all API processes' in multiprocess mode), then
    the service's, read from Redis by the caller."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        local = CollectorRegistry()
        MultiProcessCollector(local)
        own = generate_latest(local)
    else:
        own = generate_latest(REGISTRY)
    shared = CollectorRegistry()
    shared.register(_Families(service_families))
    return own + generate_latest(shared)


class WebSocketClients:
    """ASGI middleware: counts every WebSocket connection while it lasts (all routes)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        with stream_client("websocket"):
            await self.app(scope, receive, send)
