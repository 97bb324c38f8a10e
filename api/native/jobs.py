"""/v1/jobs: submit one job, poll it, stream its events (SSE or WebSocket), cancel it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, WebSocket, status
from sse_starlette import EventSourceResponse

from api.deps import Service, Tenant, get_tenant
from api.native.sse import last_event_id, log_response, websocket_stream
from api.protocol import CreateJobRequest, JobResponse
from jobs.errors import ConflictError, TokenqError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobResponse)
async def create_job(body: CreateJobRequest, tenant: Tenant, service: Service) -> JobResponse:
    [job] = await service.submit([body], tenant)
    return JobResponse.from_job(job, notice=await service.unserved_notice(job))


@router.get("/{job_id}", response_model=JobResponse)
async def get_job(job_id: str, tenant: Tenant, service: Service) -> JobResponse:
    job = await service.owned_job(job_id, tenant)
    return JobResponse.from_job(job, notice=await service.unserved_notice(job))


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_events(job_id: str, request: Request, tenant: Tenant, service: Service) -> Response:
    """The job's events over SSE; 204 for a reader already at or past the final one."""
    await service.owned_job(job_id, tenant)
    events = service.job_events(job_id, last_event_id(request))
    return await log_response(events, service.stream_ping_s)


@router.websocket("/{job_id}/ws")
async def job_websocket(websocket: WebSocket, job_id: str, service: Service) -> None:
    await websocket.accept()
    try:
        await service.owned_job(job_id, get_tenant(websocket))
        after_seq = last_event_id(websocket)
    except TokenqError as exc:
        # A close code is all a browser sees of a WebSocket error: 4000 + the HTTP status.
        await websocket.close(code=4000 + exc.status_code, reason=exc.message[:120])
        return
    await websocket_stream(websocket, service.job_events(job_id, after_seq))


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
