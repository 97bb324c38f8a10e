"""Dify-compatible completion messages: /v1/completion-messages (blocking or SSE) and stop.

Errors on these routes use Dify's shape, `{"code", "message", "status"}`, and Dify's codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import Service, Tenant
from api.dify import protocol as dify
from api.dify import serving
from api.dify.protocol import CreateCompletionMessageRequest, StopCompletionMessageRequest
from api.errors import REDIS_OUTAGES, error_headers, redis_unavailable
from api.streaming import BoundedEventSourceResponse
from jobs.errors import TokenqError

logger = logging.getLogger(__name__)


def _dify_error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(dify.error_body(status, code, message), status, headers=headers)


class DifyRoute(APIRoute):
    """A route whose errors (validation, auth, tokenq's, unexpected) come out in Dify's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def dify_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _dify_error_response(*dify.request_validation_error(exc))
            except TokenqError as exc:
                return _dify_error_response(*dify.dify_error(exc), error_headers(exc))
            except REDIS_OUTAGES as exc:
                outage = redis_unavailable(exc)
                return _dify_error_response(*dify.dify_error(outage), error_headers(outage))
            except StarletteHTTPException as exc:  # e.g. a body FastAPI could not parse
                return _dify_error_response(*dify.http_error(exc.status_code, str(exc.detail)))
            except Exception:
                logger.exception("unhandled error on %s", request.url.path)
                return _dify_error_response(500, "internal_server_error", "Internal Server Error.")

        return dify_handler


router = APIRouter(prefix="/v1/completion-messages", tags=["dify"], route_class=DifyRoute)


@router.post("", response_model=None)
async def create_completion_message(
    body: CreateCompletionMessageRequest, tenant: Tenant, service: Service
) -> dict[str, Any] | EventSourceResponse:
    """Blocking: the answer with usage. Streaming: Dify's SSE events (validation errors are
    still HTTP errors: nothing is queued until the request is valid)."""
    job = await serving.create(service, body, tenant)
    if not body.streaming:
        return await serving.answer(service, job)
    return BoundedEventSourceResponse(
        serving.stream(service, job),
        ping=min(service.stream_ping_s, dify.DIFY_PING_S),
        ping_message_factory=serving.ping,
        sep="\n",
    )


@router.post("/{task_id}/stop")
async def stop_completion_message(
    task_id: str, body: StopCompletionMessageRequest, tenant: Tenant, service: Service
) -> dict[str, str]:
    """Stop a running task (a queued one never starts). Another tenant's task, or another
    `user`'s, is 404; stopping a finished task changes nothing and succeeds, as in Dify."""
    await serving.stop(service, task_id, tenant, body.user)
    return {"result": "success"}
