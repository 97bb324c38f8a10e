"""GET /metrics: the whole service's metrics in Prometheus' text format (jobs/metrics.py)."""

from __future__ import annotations

import itertools

from fastapi import APIRouter, Response

from api import metrics as api_metrics
from api.deps import Service
from jobs import metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(service: Service) -> Response:
    """Counters and histograms of every job, each model's line and live workers now, and this
    API process's own. Open to any caller, like /healthz: it names models, lanes and workers,
    never tenants or jobs. 503 when Redis does not answer."""
    fields = await service.store.metrics_fields()
    queues = await service.store.queue_state(sorted(service.registry.models))
    families = itertools.chain(metrics.stored_families(fields), metrics.queue_families(queues))
    return Response(api_metrics.render(families), media_type=api_metrics.CONTENT_TYPE)
