"""From exceptions to responses, in one place.

Every error tokenq raises is a `jobs.errors.TokenqError` that carries its HTTP status (the tree is
drawn in jobs/errors.py); here it becomes `{"error": {message, type, param, code}}`. Pydantic's
validation errors, wherever they are caught, are described by the one `validation_message`.
The Dify surface maps the same errors to Dify's shape (dify/router.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.metrics import API_REDIS_ERRORS
from jobs.errors import (
    ContextOverflowError,
    InvalidRequestError,
    TokenqError,
    UnavailableError,
)

logger = logging.getLogger(__name__)

#: Redis errors that mean Redis is not serving right now (down, restarting, loading its AOF, out of
#: memory, a read-only replica), not a bug: answered 503 with Retry-After.
REDIS_OUTAGES: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # BusyLoadingError (loading its AOF) is one of these
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)


def redis_unavailable(exc: Exception) -> UnavailableError:
    API_REDIS_ERRORS.inc()
    return UnavailableError(f"Redis is not serving requests ({type(exc).__name__}); retry shortly")


#: The first item of a FastAPI error's `loc` says where the value was; the field path follows.
_LOCATIONS = ("body", "query", "path", "header", "cookie")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error response but Dify's (OpenAI's shape)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


#: What the OpenAPI schema says of the error responses of a route in this shape (in place of
#: FastAPI's default 422 `{"detail": [...]}`, which no route of tokenq answers).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "The request was refused"},
    "5XX": {"model": ErrorResponse, "description": "The service could not answer"},
}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def tokenq_error_body(exc: TokenqError) -> dict:
    return error_body(exc.message, exc.type, exc.param, exc.code)


def validation_message(errors: Sequence[Any], prefix: str = "") -> tuple[str, str | None]:
    """(message, param) for pydantic's errors: the first one's `field.path: message`, and how
    many more there are; `prefix` goes before the path (e.g. "body" for a batch line's body)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ())]
    where = ".".join([prefix, *loc] if prefix else loc)
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    message = f"{where}: {message}" if where else message
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message, where or None


def request_errors(exc: RequestValidationError) -> list[Any]:
    """FastAPI's errors without the first item of each `loc` (body, query, path, ...): it says
    where the value was, and the rest is the field path the client knows."""
    return [
        {**e, "loc": tuple(e["loc"][1:]) if e["loc"] and e["loc"][0] in _LOCATIONS else e["loc"]}
        for e in exc.errors()
    ]


def invalid_request(errors: Sequence[Any], prefix: str = "", **kwargs: Any) -> InvalidRequestError:
    """A 400 for pydantic's errors (OpenAI's status for invalid input)."""
    message, param = validation_message(errors, prefix)
    return InvalidRequestError(message, **{"param": param, **kwargs})


class OpenAIRoute(APIRoute):
    """Invalid input is 400 `invalid_request_error` on these routes, as OpenAI answers: FastAPI's
    validation errors and context overflows (422 on the native routes) alike."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise invalid_request(request_errors(exc)) from exc
            except ContextOverflowError as exc:
                raise InvalidRequestError(exc.message, param=exc.param, code=exc.code) from exc

        return route


def error_headers(exc: TokenqError) -> dict[str, str] | None:
    """The headers an error's response carries, on every surface: Retry-After where the error
    says when to retry (429s, 503s, 409 idempotency_key_in_progress), its own headers (the
    x-ratelimit-* of a rate limit), WWW-Authenticate on 401."""
    headers = dict(exc.headers)
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers or None


def _tokenq_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TokenqError)
    return JSONResponse(tokenq_error_body(exc), exc.status_code, headers=error_headers(exc))


def _redis_outage(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("redis unavailable on %s: %r", request.url.path, exc)
    return _tokenq_error(request, redis_unavailable(exc))


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(request_errors(exc))
    return JSONResponse(
        error_body(message, "invalid_request_error", param, "validation_error"), 422
    )


def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body(str(exc.detail), "invalid_request_error", None, f"http_{exc.status_code}"),
        exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal error", "server_error", None, "internal_error"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TokenqError, _tokenq_error)
    for outage in REDIS_OUTAGES:
        app.add_exception_handler(outage, _redis_outage)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
