"""/v1/jobs: submit one job, poll it, stream its events (SSE or WebSocket), cancel it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response, WebSocket, status
from sse_starlette import EventSourceResponse

from api.deps import Service, Tenant, get_tenant
from api.native.sse import (
    QueueNote,
    last_event_id,
    log_response,
    websocket_stream,
    with_queue_notes,
)
from api.protocol import CreateJobRequest, JobList, JobResponse, QueueInfo
from api.service import JobService
from jobs.errors import ConflictError, TokenqError
from jobs.models import Job, JobStatus

#: GET /v1/jobs lists at most this many (the store keeps a tenant's latest 1,000).
MAX_LISTED = 100

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobResponse)
async def create_job(body: CreateJobRequest, tenant: Tenant, service: Service) -> JobResponse:
    [job] = await service.submit([body], tenant)
    return await _job_response(service, job)


@router.get("", response_model=JobList)
async def list_jobs(
    tenant: Tenant, service: Service, limit: int = Query(20, ge=1, le=MAX_LISTED)
) -> JobList:
    """The caller's latest single jobs (not those of batches: GET /v1/batches), newest first."""
    jobs = await service.store.tenant_jobs(tenant, limit)
    return JobList(data=[JobResponse.from_job(job) for job in jobs])


@router.get("/{job_id}", response_model=JobResponse)
async def get_job(job_id: str, tenant: Tenant, service: Service) -> JobResponse:
    return await _job_response(service, await service.owned_job(job_id, tenant))


async def _job_response(service: JobService, job: Job) -> JobResponse:
    """The job object, with its place in line while it waits."""
    return JobResponse.from_job(
        job, notice=await service.unserved_notice(job), queue=await service.queue_position(job)
    )


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_events(job_id: str, request: Request, tenant: Tenant, service: Service) -> Response:
    """The job's events over SSE; 204 for a reader already at or past the final one. While
    the job waits, `queued` notes (no id) say where it stands in line when that changes."""
    job = await service.owned_job(job_id, tenant)
    events = service.job_events(job_id, last_event_id(request))
    return await log_response(events, service.stream_ping_s, _queue_note(service, job))


def _queue_note(service: JobService, job: Job) -> QueueNote | None:
    """What a queued job's stream says about its place in line (None for a job that started)."""
    if job.status is not JobStatus.QUEUED:
        return None

    async def note() -> dict[str, Any] | None:
        found = await service.queue_position(job)
        return QueueInfo.of(found).model_dump() if found is not None else None

    return note


@router.websocket("/{job_id}/ws")
async def job_websocket(websocket: WebSocket, job_id: str, service: Service) -> None:
    await websocket.accept()
    try:
        job = await service.owned_job(job_id, get_tenant(websocket))
        after_seq = last_event_id(websocket)
    except TokenqError as exc:
        # A close code is all a browser sees of a WebSocket error: 4000 + the HTTP status.
        await websocket.close(code=4000 + exc.status_code, reason=exc.message[:120])
        return
    events = service.job_events(job_id, after_seq)
    await websocket_stream(websocket, with_queue_notes(events, _queue_note(service, job)))


@router.post("/{job_id}/cancel", response_model=JobResponse)
async def cancel_job(job_id: str, tenant: Tenant, service: Service) -> JobResponse:
    """Queued: cancelled at once, never starts. Running: stops at its next token (202 semantics,
    the response shows it still running). Finished: 409."""
    job = await service.owned_job(job_id, tenant)
    outcome = await service.cancel(job)
    if outcome not in ("cancelled", "cancelling"):
        raise ConflictError(
            f"job {job_id} is already {outcome}; nothing to cancel", code="job_finished"
        )
    return JobResponse.from_job(await service.owned_job(job_id, tenant))
