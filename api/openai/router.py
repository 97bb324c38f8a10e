"""OpenAI-compatible /v1/models, /v1/completions and /v1/chat/completions (thin: see serving)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import Service, Tenant
from api.errors import OpenAIRoute
from api.openai import serving
from api.openai.protocol import (
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
    CreateCompletionRequest,
    CreateCompletionResponse,
    ListModelsResponse,
    Model,
)
from api.service import JobService

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


def _model(service: JobService, alias: str, workers: int) -> Model:
    config = service.registry.get(alias)
    # "created": when the alias was configured (the models file's mtime), not a made-up date.
    created = int(service.settings.models_config.stat().st_mtime)
    return Model(id=alias, created=created, n_ctx=config.n_ctx, workers=workers)


@router.get("/models", response_model=ListModelsResponse)
async def list_models(tenant: Tenant, service: Service) -> ListModelsResponse:
    """The models a live worker serves now: a client that picks one from this list gets
    answers (a configured model with no worker is left out; GET /readyz names it)."""
    live = await service.live_workers()
    served = sorted(alias for alias, workers in live.items() if workers)
    return ListModelsResponse(data=[_model(service, alias, live[alias]) for alias in served])


@router.get("/models/{model}", response_model=Model)
async def retrieve_model(model: str, tenant: Tenant, service: Service) -> Model:
    """Any configured model, with its live worker count (0: requests for it are 503)."""
    service.registry.get(model)
    return _model(service, model, (await service.live_workers()).get(model, 0))


@router.post(
    "/completions",
    response_model=None,
    responses={200: {"model": CreateCompletionResponse}},
)
async def create_completion(
    body: CreateCompletionRequest, tenant: Tenant, service: Service
) -> Response:
    return await serving.serve(service, body, tenant)


@router.post(
    "/chat/completions",
    response_model=None,
    responses={200: {"model": CreateChatCompletionResponse}},
)
async def create_chat_completion(
    body: CreateChatCompletionRequest, tenant: Tenant, service: Service
) -> Response:
    return await serving.serve(service, body, tenant)
