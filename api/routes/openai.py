"""OpenAI-compatible /v1/models, /v1/completions and /v1/chat/completions (thin: see serving)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from api import openai_serving
from api.deps import Service, Tenant
from api.openai_protocol import (
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
    CreateCompletionRequest,
    CreateCompletionResponse,
    ListModelsResponse,
    Model,
)
from jobs.errors import InvalidRequestError


class OpenAIRoute(APIRoute):
    """Invalid input is 400 `invalid_request_error` here, as OpenAI answers (not FastAPI's 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = exc.errors()
                first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
                loc = [str(p) for p in first["loc"] if p not in ("body", "query", "path")]
                message = str(first["msg"]).removeprefix("Value error, ")
                where = ".".join(loc)
                raise InvalidRequestError(
                    f"{where + ': ' if where else ''}{message}", param=where or None
                ) from exc

        return route


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


def _model(request: Request, alias: str) -> Model:
    settings = request.app.state.settings
    config = request.app.state.registry.get(alias)
    # "created": when the alias was configured (the models file's mtime), not a made-up date.
    return Model(id=alias, created=int(settings.models_config.stat().st_mtime), n_ctx=config.n_ctx)


@router.get("/models", response_model=ListModelsResponse)
async def list_models(request: Request, tenant: Tenant) -> ListModelsResponse:
    aliases = sorted(request.app.state.registry.models)
    return ListModelsResponse(data=[_model(request, alias) for alias in aliases])


@router.get("/models/{model}", response_model=Model)
async def retrieve_model(model: str, request: Request, tenant: Tenant) -> Model:
    return _model(request, model)


@router.post(
    "/completions",
    response_model=None,
    responses={200: {"model": CreateCompletionResponse}},
)
async def create_completion(
    body: CreateCompletionRequest, request: Request, tenant: Tenant, service: Service
) -> Response:
    return await openai_serving.serve_completion(request.app, service, body, tenant)


@router.post(
    "/chat/completions",
    response_model=None,
    responses={200: {"model": CreateChatCompletionResponse}},
)
async def create_chat_completion(
    body: CreateChatCompletionRequest, request: Request, tenant: Tenant, service: Service
) -> Response:
    return await openai_serving.serve_chat_completion(request.app, service, body, tenant)
