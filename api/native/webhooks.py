"""/v1/webhooks: the caller's webhook (never its secret), its delivery log, and redelivery.

A tenant's webhook is configured by the operator in the tenants file (jobs/webhooks.py); events
are queued with what they are about and delivered by the workers (worker/webhooks.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Service, Tenant
from jobs.errors import NotFoundError

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

#: Event ids name what they are about: `evt_` + a batch or job id (see _lib.lua queue_webhook).
_EVENT_ID = re.compile(r"evt_(batch|job)_[0-9a-f]{24}")


class WebhookInfo(BaseModel):
    object: Literal["webhook"] = "webhook"
    configured: bool
    url: str | None = None
    events: list[str] = []


class DeliveryLog(BaseModel):
    object: Literal["list"] = "list"
    #: each attempt: webhook_id, type, attempt, at, url, status_code, error, state
    #: (delivered | retrying | given_up), next_attempt_at (retrying)
    data: list[dict[str, Any]]


class Redelivery(BaseModel):
    id: str
    object: Literal["event"] = "event"
    state: Literal["pending"] = "pending"


@router.get("", response_model=WebhookInfo)
async def get_webhook(tenant: Tenant, service: Service) -> WebhookInfo:
    config = service.settings.tenant_webhooks.get(tenant)
    if config is None:
        return WebhookInfo(configured=False)
    return WebhookInfo(configured=True, url=config.url, events=config.events)


@router.get("/deliveries", response_model=DeliveryLog)
async def deliveries(
    tenant: Tenant, service: Service, limit: int = Query(50, ge=1, le=1000)
) -> DeliveryLog:
    """The latest delivery attempts of the caller's events, newest first."""
    return DeliveryLog(data=await service.store.webhook_log(tenant, limit))


@router.post("/events/{event_id}/redeliver", status_code=202, response_model=Redelivery)
async def redeliver(event_id: str, tenant: Tenant, service: Service) -> Redelivery:
    """Send one of the caller's events again now (delivered or given up alike; kept 7 days
    after it settled), with the same webhook-id."""
    if _EVENT_ID.fullmatch(event_id) is None or not await service.store.redeliver_webhook(
        tenant, event_id
    ):
        raise NotFoundError(f"no webhook event {event_id}", param="event_id")
    return Redelivery(id=event_id)
