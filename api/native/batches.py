"""/v1/batches: submit many jobs at once (JSON, JSONL, or OpenAI's input file), watch counts,
list, export results, cancel."""

from __future__ import annotations

import hashlib
import re
from typing import Any, NamedTuple

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from api.deps import Service, Tenant
from api.errors import validation_message
from api.native.results import export_results
from api.native.sse import last_event_id, log_response
from api.openai import batches as openai_batches
from api.openai.protocol import CreateBatchRequest, ListBatchesResponse
from api.protocol import (
    BatchResponse,
    CreateJobsBatchRequest,
    line_json_error,
    load_json,
    metadata_adapter,
    utf8_lines,
)
from api.service import JobService, new_id
from jobs.errors import (
    ConflictError,
    IdempotencyKeyInProgressError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    UnsupportedMediaTypeError,
)
from jobs.models import BatchStatus, Priority

router = APIRouter(prefix="/v1/batches", tags=["batches"])

JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/jsonlines", "text/jsonl")


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    """One job per non-blank line; a malformed line is a 400 naming its number."""
    items = []
    for number, line in enumerate(utf8_lines(data), start=1):
        if not line.strip():
            continue
        try:
            item = load_json(line)
        except ValueError as exc:
            raise InvalidRequestError(
                f"line {number}: invalid JSON ({line_json_error(exc)})",
                param=f"line {number}",
                code="invalid_jsonl",
            ) from exc
        if not isinstance(item, dict):
            raise InvalidRequestError(
                f"line {number}: expected a JSON object",
                param=f"line {number}",
                code="invalid_jsonl",
            )
        items.append(item)
    if not items:
        raise InvalidRequestError("the JSONL upload has no jobs", code="empty_batch")
    return items


def _form_metadata(raw: object) -> dict[str, str] | None:
    """A multipart upload's `metadata` field: a JSON object of up to 16 string pairs."""
    if not raw:
        return None
    try:
        return metadata_adapter.validate_json(str(raw))
    except ValidationError as exc:
        message, _ = validation_message(exc.errors(), "metadata")
        raise InvalidRequestError(message, param="metadata") from exc


def _invalid_body(exc: ValidationError, code: str) -> InvalidRequestError:
    message, param = validation_message(exc.errors())
    return InvalidRequestError(message, param=param, code=code)


class NativeBatchBody(NamedTuple):
    items: list[dict[str, Any]]
    model: str | None
    metadata: dict[str, str] | None
    label: str  #: how an item is named in errors: "jobs[{i}]" or "line {line}"
    priority: Priority | None


def _priority(raw: str | None) -> Priority | None:
    if raw in (None, ""):
        return None
    try:
        return Priority(raw)
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise InvalidRequestError(f"priority must be one of {choices}", param="priority") from None


async def read_batch_body(request: Request) -> NativeBatchBody | CreateBatchRequest:
    """The jobs and their defaults from a JSON array/object, a JSONL body or a multipart file
    (`?model=` and `?priority=` apply to bodies that cannot say); or OpenAI's batch request (a
    JSON object naming an uploaded `input_file_id`)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    model = request.query_params.get("model")
    priority = _priority(request.query_params.get("priority"))
    if content_type.startswith("multipart/"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequestError("multipart upload needs a `file` field", param="file")
        metadata = _form_metadata(form.get("metadata"))
        form_priority = form.get("priority")
        return NativeBatchBody(
            parse_jsonl(await upload.read()),
            str(form.get("model") or model or "") or None,
            metadata,
            "line {line}",
            _priority(form_priority if isinstance(form_priority, str) else None) or priority,
        )
    if content_type not in (*JSONL_TYPES, "application/json", ""):
        # Not a JSON type: a browser's cross-site form (text/plain) must not create batches.
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type!r}: send application/json, application/jsonl or "
            "multipart/form-data",
            param="Content-Type",
        )
    body = await request.body()
    if content_type in JSONL_TYPES:
        return NativeBatchBody(parse_jsonl(body), model, None, "line {line}", priority)
    try:
        payload = load_json(body)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid JSON body ({exc})", code="invalid_json") from exc
    if isinstance(payload, list):
        if not payload or not all(isinstance(i, dict) for i in payload):
            raise InvalidRequestError("expected a non-empty array of job objects", param="jobs")
        return NativeBatchBody(payload, model, None, "jobs[{i}]", priority)
    if isinstance(payload, dict) and "input_file_id" in payload:
        try:
            return CreateBatchRequest.model_validate(payload)
        except ValidationError as exc:
            raise _invalid_body(exc, "invalid_request") from exc
    try:
        parsed = CreateJobsBatchRequest.model_validate(payload)
    except ValidationError as exc:
        raise _invalid_body(exc, "invalid_batch") from exc
    return NativeBatchBody(
        parsed.jobs,
        parsed.model or model,
        parsed.metadata,
        "jobs[{i}]",
        parsed.priority or priority,
    )


@router.post("", status_code=202, response_model=BatchResponse)
async def create_batch(
    request: Request,
    tenant: Tenant,
    service: Service,
    idempotency_key: str | None = Header(None, max_length=256),
) -> Any:
    """Accept many jobs; all are validated before any is written, so a batch is whole or absent.

    OpenAI's body (`input_file_id`, `endpoint`, `completion_window`, `metadata`) reads the jobs
    from an uploaded file instead, where a bad line is a failed request (200, as OpenAI answers).
    With an Idempotency-Key header, a repeated request returns the batch the first one created
    (200); the key is bound to the request's hash, so one with another body is 422, and one while
    the first is still creating its batch is 409 with Retry-After.
    """
    if not idempotency_key:
        return await _create_batch(request, tenant, service, None)
    batch_id = new_id("batch")
    sha256 = await request_sha256(request)
    claim = await service.store.claim_idempotency_key(tenant, idempotency_key, sha256, batch_id)
    if claim.state == "reused":
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was sent with a different request (body, Content-Type or "
            "query); use a new key for a new request",
            param="Idempotency-Key",
        )
    if claim.state == "pending":
        raise IdempotencyKeyInProgressError(
            "the first request with this Idempotency-Key is still creating its batch; retry "
            "shortly",
            param="Idempotency-Key",
        )
    if claim.state == "done":
        batch = await service.owned_batch(claim.batch_id or "", tenant)
        return JSONResponse(BatchResponse.from_batch(batch).model_dump(mode="json"), 200)
    try:
        async with service.store.holding_idempotency_key(tenant, idempotency_key, batch_id):
            response = await _create_batch(request, tenant, service, batch_id)
    except Exception:
        await service.store.release_idempotency_key(tenant, idempotency_key, batch_id)
        raise
    await service.store.finish_idempotency_key(tenant, idempotency_key, batch_id)
    return response


async def _create_batch(
    request: Request, tenant: str, service: JobService, batch_id: str | None
) -> Any:
    body = await read_batch_body(request)
    if isinstance(body, CreateBatchRequest):
        batch = await openai_batches.create_batch(service, body, tenant, batch_id)
        return JSONResponse(BatchResponse.from_batch(batch).model_dump(mode="json"), 200)
    batch = await service.submit_batch(
        body.items,
        tenant,
        model=body.model,
        metadata=body.metadata,
        item_label=body.label,
        batch_id=batch_id,
        priority=body.priority,
    )
    return BatchResponse.from_batch(batch)


async def request_sha256(request: Request) -> str:
    """What an Idempotency-Key is bound to: the sha256 of the request's Content-Type, query
    string and body bytes. A multipart body's boundary is left out (most clients draw a new one
    for each upload, a retry too): it only delimits the parts."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()  # kept by the request: read_batch_body reads it again
    boundary = _BOUNDARY.search(content_type)
    if content_type.lower().startswith("multipart/") and boundary:
        content_type = content_type.replace(boundary.group(1), "")
        body = body.replace(b"--" + boundary.group(1).encode("latin-1"), b"--")
    digest = hashlib.sha256()
    for part in (content_type.encode("latin-1"), request.url.query.encode("latin-1"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


#: A multipart Content-Type's boundary parameter (RFC 2046 5.1.1), quoted or not.
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


@router.get("", response_model=ListBatchesResponse)
async def list_batches(
    tenant: Tenant,
    service: Service,
    after: str | None = Query(None, max_length=256, description="List after this batch id."),
    limit: int = Query(20, ge=1, le=100),
) -> ListBatchesResponse:
    """The caller's batches (native and OpenAI's alike), newest first."""
    batches, has_more = await service.store.list_batches(tenant, after, limit)
    return ListBatchesResponse(
        data=[BatchResponse.from_batch(b) for b in batches],
        first_id=batches[0].id if batches else None,
        last_id=batches[-1].id if batches else None,
        has_more=has_more,
    )


@router.get("/{batch_id}", response_model=BatchResponse)
async def get_batch(batch_id: str, tenant: Tenant, service: Service) -> BatchResponse:
    return BatchResponse.from_batch(await service.owned_batch(batch_id, tenant))


@router.post("/{batch_id}/cancel", response_model=BatchResponse)
async def cancel_batch(batch_id: str, tenant: Tenant, service: Service) -> BatchResponse:
    batch = await service.owned_batch(batch_id, tenant)
    if batch.status not in (BatchStatus.IN_PROGRESS, BatchStatus.VALIDATING):
        raise ConflictError(
            f"batch {batch_id} is {batch.status}; nothing to cancel", code="batch_finished"
        )
    await service.cancel_batch(batch)
    return BatchResponse.from_batch(await service.owned_batch(batch_id, tenant))


@router.post("/{batch_id}/retry", status_code=202, response_model=BatchResponse)
async def retry_batch(batch_id: str, tenant: Tenant, service: Service) -> BatchResponse:
    """A new batch that runs the finished batch's failed and expired jobs again (same
    requests and custom_ids; `retry_of` names the original); the good ones are not re-run."""
    batch = await service.owned_batch(batch_id, tenant)
    return BatchResponse.from_batch(await service.retry_batch(batch))


@router.get("/{batch_id}/results")
async def batch_results(batch_id: str, tenant: Tenant, service: Service) -> StreamingResponse:
    batch = await service.owned_batch(batch_id, tenant)
    return StreamingResponse(
        export_results(service, batch, errors=False),
        media_type="application/jsonl",
        headers=_attachment(f"{batch.id}-results.jsonl"),
    )


@router.get("/{batch_id}/errors")
async def batch_errors(batch_id: str, tenant: Tenant, service: Service) -> StreamingResponse:
    batch = await service.owned_batch(batch_id, tenant)
    return StreamingResponse(
        export_results(service, batch, errors=True),
        media_type="application/jsonl",
        headers=_attachment(f"{batch.id}-errors.jsonl"),
    )


def _attachment(filename: str) -> dict[str, str]:
    """Saved under this name by a browser (the id is hex and `_`: nothing to quote)."""
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


@router.get("/{batch_id}/events", response_class=EventSourceResponse)
async def batch_events(
    batch_id: str, request: Request, tenant: Tenant, service: Service
) -> Response:
    """The batch's events over SSE; 204 for a reader already at or past the final one."""
    await service.owned_batch(batch_id, tenant)
    events = service.batch_events(batch_id, last_event_id(request))
    return await log_response(events, service.stream_ping_s)
