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


def _model(service: JobService, alias: str) -> Model:
    config = service.registry.get(alias)
    # "created": when the alias was configured (the models file's mtime), not a made-up date.
    created = int(service.settings.models_config.stat().st_mtime)
    return Model(id=alias, created=created, n_ctx=config.n_ctx)


@router.get("/models", response_model=ListModelsResponse)
async def list_models(tenant: Tenant, service: Service) -> ListModelsResponse:
    aliases = sorted(service.registry.models)
    return ListModelsResponse(data=[_model(service, alias) for alias in aliases])


@router.get("/models/{model}", response_model=Model)
async def retrieve_model(model: str, tenant: Tenant, service: Service) -> Model:
    return _model(service, model)


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
