"""Run jobs for the API's compatibility surfaces (OpenAI, Dify, Chatchat, WebSocket chat).

Every surface is a thin adapter: it turns its request into native `CreateJobRequest`s, submits
them here (the same validation, records and queue as /v1/jobs), and reads their text back from
the same event log as /v1/jobs/{id}/events. There is no second path to the model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from api.protocol import CreateJobRequest
from api.service import JobService
from api.streaming import follow
from jobs import keys
from jobs.errors import NotFoundError
from jobs.events import EventType
from jobs.models import Job


@dataclass(frozen=True)
class TextDelta:
    """New text of a job (one generated token's worth, or the echoed prompt)."""

    job_id: str
    text: str
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Restarted:
    """The job's worker was lost and a new attempt starts over: drop the text so far."""

    job_id: str
    attempt: int


@dataclass(frozen=True)
class Finished:
    """The job reached its final status; `job` is its record, result included."""

    job: Job


JobUpdate = TextDelta | Restarted | Finished


async def submit(service: JobService, requests: list[CreateJobRequest], tenant: str) -> list[Job]:
    """Validate all requests first (one bad request rejects them all), then write and enqueue."""
    jobs = [service.build_job(request, tenant) for request in requests]
    await service.admit(tenant, len(jobs))
    await service.store.create(jobs)
    await service.enqueue(jobs)
    return jobs


async def updates(app: FastAPI, job_id: str, after_seq: int = 0) -> AsyncIterator[JobUpdate]:
    """A job's text as it grows, then its final record (resumable with after_seq)."""
    store = app.state.store
    async for event in follow(
        app.state.hub, store, keys.job_events(job_id), keys.job_channel(job_id), after_seq
    ):
        if event.type == EventType.TOKEN:
            data = event.data
            yield TextDelta(job_id, data["text"], data["n"], data.get("logprobs"))
        elif event.type == EventType.RESET:
            yield Restarted(job_id, event.data["attempt"])
        elif event.final:
            job = await store.get_job(job_id)
            if job is None:
                raise NotFoundError(f"job {job_id} expired while it was being read")
            yield Finished(job)


async def wait(app: FastAPI, job_id: str) -> Job:
    """The job's final record, once it has one."""
    async for update in updates(app, job_id):
        if isinstance(update, Finished):
            return update.job
    raise NotFoundError(f"job {job_id} ended without a final event")
