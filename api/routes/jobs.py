"""/v1/jobs: submit one job, poll it, stream its events (SSE or WebSocket), cancel it."""

from __future__ import annotations

from fastapi import APIRouter, Request, WebSocket, status
from sse_starlette import EventSourceResponse

from api.deps import Service, Tenant, get_ws_tenant
from api.protocol import CreateJobRequest, JobResponse
from api.routes._sse import sse_response, websocket_stream
from jobs import keys
from jobs.errors import ConflictError, NotFoundError, TokenqError
from jobs.models import Job
from jobs.store import AsyncStore

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def owned_job(store: AsyncStore, job_id: str, tenant: str) -> Job:
    """The job if it exists and belongs to the caller; another tenant's job is 404 too."""
    job = await store.get_job(job_id)
    if job is None or job.tenant != tenant:
        raise NotFoundError(f"no job {job_id!r}", param="job_id")
    return job


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobResponse)
async def create_job(body: CreateJobRequest, tenant: Tenant, service: Service) -> JobResponse:
    job = await service.submit_job(body, tenant)
    return JobResponse.from_job(job)


@router.get("/{job_id}", response_model=JobResponse)
async def get_job(job_id: str, tenant: Tenant, service: Service) -> JobResponse:
    return JobResponse.from_job(await owned_job(service.store, job_id, tenant))


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job_id: str, request: Request, tenant: Tenant, service: Service
) -> EventSourceResponse:
    await owned_job(service.store, job_id, tenant)
    return sse_response(request, keys.job_events(job_id), keys.job_channel(job_id))


@router.websocket("/{job_id}/ws")
async def job_websocket(websocket: WebSocket, job_id: str) -> None:
    await websocket.accept()
    try:
        tenant = get_ws_tenant(websocket)
        await owned_job(websocket.app.state.store, job_id, tenant)
    except TokenqError as exc:
        # A close code is all a browser sees of a WebSocket error: 4000 + the HTTP status.
        await websocket.close(code=4000 + exc.status_code, reason=exc.message[:120])
        return
    await websocket_stream(websocket, keys.job_events(job_id), keys.job_channel(job_id))


@router.post("/{job_id}/cancel", response_model=JobResponse)
async def cancel_job(job_id: str, tenant: Tenant, service: Service) -> JobResponse:
    """Queued: cancelled at once, never starts. Running: stops at its next token (202 semantics,
    the response shows it still running). Finished: 409."""
    job = await owned_job(service.store, job_id, tenant)
    outcome = await service.store.cancel(job)
    if outcome not in ("cancelled", "cancelling"):
        raise ConflictError(
            f"job {job_id} is already {outcome}; nothing to cancel", code="job_finished"
        )
    return JobResponse.from_job(await owned_job(service.store, job_id, tenant))
