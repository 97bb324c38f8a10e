"""Chatchat-compatible completion: /other/completion, answered over SSE as Chatchat does.

Chatchat answers with an EventSourceResponse whether or not `stream` is set: streamed, each
text piece is one `data:` event; not streamed, one `data:` event carries the whole answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import jobflow
from api.chatchat_protocol import ChatchatCompletionRequest
from api.compat_protocol import failure
from api.deps import Service, Tenant
from api.errors import error_body
from api.service import JobService
from jobs.errors import ContextOverflowError, TokenqError
from jobs.models import MAX_TOKENS_CAP, Job

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/other", tags=["chatchat"])


def context_left(service: JobService, body: ChatchatCompletionRequest) -> int:
    """max_tokens for "no limit": what the model's context leaves after the prompt."""
    model = service.registry.get(body.model_name)
    prompt = service.templates.render(body.prompt_name, {"input": body.query})
    prompt_tokens = service.tokenizer(model.alias).count(prompt, special=False)
    left = min(model.n_ctx - prompt_tokens, MAX_TOKENS_CAP)
    if left < 1:
        raise ContextOverflowError(
            f"the prompt is {prompt_tokens} tokens and fills model {model.alias!r}'s context "
            f"of {model.n_ctx} tokens",
            param="query",
        )
    return left


@router.post("/completion", response_class=EventSourceResponse)
async def completion(
    body: ChatchatCompletionRequest, request: Request, tenant: Tenant, service: Service
) -> EventSourceResponse:
    max_tokens = body.max_tokens or 0
    if max_tokens <= 0:  # Chatchat: None or <= 0 means no limit but the model's context
        max_tokens = context_left(service, body)
    [job] = await jobflow.submit(service, [body.to_job_request(max_tokens)], tenant)
    pieces = _pieces(request.app, job) if body.stream else _whole(request.app, job)
    return EventSourceResponse(
        pieces,
        ping=request.app.state.settings.stream_ping_s,
        headers={"X-Tokenq-Job-Id": job.id},
    )


async def _pieces(app: FastAPI, job: Job) -> AsyncIterator[ServerSentEvent]:
    """Each new piece of text as one `data:` event."""
    try:
        async for update in jobflow.updates(app, job.id):
            if isinstance(update, jobflow.TextDelta):
                if update.text:
                    yield ServerSentEvent(update.text)
            elif isinstance(update, jobflow.Restarted):
                # Text already sent cannot be taken back: say so in a named event.
                yield ServerSentEvent(json.dumps({"attempt": update.attempt}), event="reset")
            elif (failed := _failure(update.job)) is not None:
                yield failed
    except Exception as exc:
        yield _error_event(job, exc)


async def _whole(app: FastAPI, job: Job) -> AsyncIterator[ServerSentEvent]:
    """The whole answer as one `data:` event, once the job is final."""
    try:
        final = await jobflow.wait(app, job.id)
    except Exception as exc:
        yield _error_event(job, exc)
        return
    if (failed := _failure(final)) is not None:
        yield failed
    else:
        yield ServerSentEvent(final.result.text if final.result else "")


def _failure(job: Job) -> ServerSentEvent | None:
    if (why := failure(job)) is None:
        return None
    return ServerSentEvent(
        json.dumps(error_body(why, "server_error", None, "job_failed")), event="error"
    )


def _error_event(job: Job, exc: Exception) -> ServerSentEvent:
    """An error after the stream started: a named `error` event in tokenq's error shape."""
    if isinstance(exc, TokenqError):
        body = error_body(exc.message, exc.type, exc.param, exc.code)
    else:
        logger.error("Chatchat stream of job %s failed", job.id, exc_info=exc)
        body = error_body("internal error", "server_error", None, "internal_error")
    return ServerSentEvent(json.dumps(body), event="error")
