"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from api import errors
from api.limits import BodySizeLimit
from api.routes import batches, chatchat, dify, files, health, jobs, openai, ws_chat
from api.service import JobService
from api.streaming import EventHub
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
        celery = make_celery(settings)
        app.state.store = store
        app.state.hub = hub
        app.state.service = JobService(settings, registry, templates, store, celery)
        # Load the default model's tokenizer now, not on the first request.
        app.state.service.tokenizer(registry.default)
        try:
            yield
        finally:
            await hub.close()
            await client.aclose()

    app = FastAPI(title="tokenq", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(dify.router)
    app.include_router(chatchat.router)
    app.include_router(ws_chat.router)
    app.include_router(openai.router)
    app.include_router(files.router)
    return app
