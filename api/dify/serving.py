"""Dify's completion-messages over tokenq jobs: submit, answer (blocking or streamed), stop."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from api.dify import protocol as dify
from api.dify.protocol import CreateCompletionMessageRequest
from api.service import JobService
from api.streaming import Restarted, TextDelta
from jobs.errors import CompletionRequestError, NotFoundError, TokenqError
from jobs.models import Job

logger = logging.getLogger(__name__)


async def create(service: JobService, body: CreateCompletionMessageRequest, tenant: str) -> Job:
    [job] = await service.submit([body.to_job_request()], tenant, answer_waits=True)
    return job


async def answer(service: JobService, job: Job) -> dict[str, Any]:
    """The blocking response, once the job is final."""
    final = await service.wait(job.id)
    if (why := final.failure) is not None:
        raise CompletionRequestError(why)
    return dify.blocking_response(final)


async def stream(service: JobService, job: Job) -> AsyncIterator[ServerSentEvent]:
    """Dify's stream: `message` chunks, `message_replace` after a restart, then `message_end`
    (or `error`). Errors after the stream started go in-band."""
    try:
        async for update in service.updates(job.id):
            if isinstance(update, TextDelta):
                if update.text:
                    yield _data(dify.message_event(job, update.text))
            elif isinstance(update, Restarted):
                # The worker was lost and the job starts over: the text so far is void.
                yield _data(dify.message_event(job, "", event="message_replace"))
            elif (why := update.job.failure) is None:
                yield _data(dify.message_end_event(update.job))
            else:
                # A failed generation, as Dify reports one.
                yield _data(dify.error_event(job.id, 400, "completion_request_error", why))
    except TokenqError as exc:
        yield _data(dify.error_event(job.id, *dify.dify_error(exc)))
    except Exception:
        logger.exception("Dify stream of job %s failed", job.id)
        yield _data(
            dify.error_event(job.id, 500, "internal_server_error", "Internal Server Error.")
        )


async def stop(service: JobService, task_id: str, tenant: str, user: str) -> None:
    """Stop the task if it is the caller's and the `user`'s; a finished task stays as it is."""
    job = await service.owned_job(task_id, tenant)
    if job.custom_id != user:
        raise NotFoundError(f"no task {task_id!r} for user {user!r}", param="task_id")
    await service.cancel(job)


def ping() -> ServerSentEvent:
    """Dify's keep-alive: an `event: ping` with no data."""
    return ServerSentEvent(event="ping", sep="\n")


def _data(event: dict[str, Any]) -> ServerSentEvent:
    # Dify sends each event as one `data:` line of JSON, with no `event:` field.
    return ServerSentEvent(json.dumps(event, ensure_ascii=False), sep="\n")
