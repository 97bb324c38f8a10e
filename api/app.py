"""The FastAPI application factory: the one JobService, middleware, error handlers, routers.

This is the only module that reads or writes `app.state` besides api/deps.py, and the only one
that imports router modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI

from api import errors
from api import metrics as api_metrics
from api.chatchat.router import router as chatchat_router
from api.dify import protocol as dify_protocol
from api.dify.router import router as dify_router
from api.limits import BodySizeLimit, RateLimitHeaders
from api.metrics import WebSocketClients
from api.native.batches import router as batches_router
from api.native.files import router as files_router
from api.native.health import router as health_router
from api.native.jobs import router as jobs_router
from api.native.metrics import router as metrics_router
from api.native.web import router as web_router
from api.native.web import static_files
from api.native.webhooks import router as webhooks_router
from api.openai.router import router as openai_router
from api.service import JobService
from api.streaming import EventHub
from api.ws_chat.router import router as ws_chat_router
from jobs.queue import make_celery
from jobs.registry import Registry
from jobs.settings import Settings
from jobs.store import AsyncStore
from jobs.templates import PromptTemplates


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = Registry.load(settings.models_config)
    templates = PromptTemplates.load(settings.templates_config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(settings.redis_url, max_connections=512)
        hub = EventHub(client)
        await hub.start()
        store = AsyncStore(client, settings.result_ttl_s)
        service = JobService(settings, registry, templates, store, make_celery(settings), hub)
        # Load the default model's tokenizer now, not on the first request.
        service.tokenizer(registry.default)
        app.state.service = service
        try:
            yield
        finally:
            await hub.close()
            await client.aclose()
            service.sandbox.close()
            api_metrics.process_ended()

    app = FastAPI(title="tokenq", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings  # authentication reads it (api/deps.py)
    errors.install(app)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(WebSocketClients)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        shapes={dify_router.prefix: dify_protocol.error_body_of},
    )
    for router in (
        health_router,
        metrics_router,
        jobs_router,
        batches_router,
        dify_router,
        chatchat_router,
        ws_chat_router,
        openai_router,
        files_router,
        webhooks_router,
        web_router,
    ):
        app.include_router(router, responses=_error_responses(router))
    app.mount("/web", static_files, name="web")
    return app


def _error_responses(router: APIRouter) -> dict[int | str, dict[str, Any]] | None:
    """The error responses the OpenAPI schema shows for a router's routes: the shape they
    answer in (the health probes answer none of them; a WebSocket is not in the schema)."""
    if router in (health_router, metrics_router, ws_chat_router, web_router):
        return None
    if router is dify_router:
        return dify_protocol.DIFY_ERROR_RESPONSES
    return errors.ERROR_RESPONSES
