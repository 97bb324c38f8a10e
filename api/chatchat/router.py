"""Chatchat-compatible completion: /other/completion, answered over SSE as Chatchat does.

Chatchat answers with an EventSourceResponse whether or not `stream` is set: streamed, each
text piece is one `data:` event; not streamed, one `data:` event carries the whole answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.chatchat.protocol import ChatchatCompletionRequest
from api.deps import Service, Tenant
from api.errors import error_body, tokenq_error_body
from api.service import JobService
from api.streaming import BoundedEventSourceResponse, Restarted, TextDelta
from jobs.errors import TokenqError
from jobs.models import Job

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/other", tags=["chatchat"])


@router.post("/completion", response_class=EventSourceResponse)
async def completion(
    body: ChatchatCompletionRequest, tenant: Tenant, service: Service
) -> EventSourceResponse:
    [job] = await service.submit([body.to_job_request()], tenant, answer_waits=True)
    pieces = _pieces(service, job) if body.stream else _whole(service, job)
    return BoundedEventSourceResponse(
        pieces, ping=service.stream_ping_s, headers={"X-Tokenq-Job-Id": job.id}
    )


async def _pieces(service: JobService, job: Job) -> AsyncIterator[ServerSentEvent]:
    """Each new piece of text as one `data:` event."""
    try:
        async for update in service.updates(job.id):
            if isinstance(update, TextDelta):
                if update.text:
                    yield ServerSentEvent(update.text)
            elif isinstance(update, Restarted):
                # Text already sent cannot be taken back: say so in a named event.
                yield ServerSentEvent(json.dumps({"attempt": update.attempt}), event="reset")
            elif (failed := _failure(update.job)) is not None:
                yield failed
    except Exception as exc:
        yield _error_event(job, exc)


async def _whole(service: JobService, job: Job) -> AsyncIterator[ServerSentEvent]:
    """The whole answer as one `data:` event, once the job is final."""
    try:
        final = await service.wait(job.id)
    except Exception as exc:
        yield _error_event(job, exc)
        return
    if (failed := _failure(final)) is not None:
        yield failed
    else:
        yield ServerSentEvent(final.result.text if final.result else "")


def _failure(job: Job) -> ServerSentEvent | None:
    if (why := job.failure) is None:
        return None
    return ServerSentEvent(
        json.dumps(error_body(why, "server_error", None, "job_failed")), event="error"
    )


def _error_event(job: Job, exc: Exception) -> ServerSentEvent:
    """An error after the stream started: a named `error` event in tokenq's error shape."""
    if isinstance(exc, TokenqError):
        body = tokenq_error_body(exc)
    else:
        logger.error("Chatchat stream of job %s failed", job.id, exc_info=exc)
        body = error_body("internal error", "server_error", None, "internal_error")
    return ServerSentEvent(json.dumps(body), event="error")
