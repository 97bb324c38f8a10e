"""OpenAI's /v1/files: upload a batch input file; read it, or a batch's output and error files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response, StreamingResponse

from api.deps import Service, Tenant
from api.errors import OpenAIRoute
from api.native.results import export_results
from api.openai import batches as openai_batches
from api.openai.protocol import OpenAIFile
from api.service import JobService
from jobs.errors import NotFoundError
from jobs.models import Batch

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=OpenAIRoute)


@router.post("", response_model=OpenAIFile)
async def create_file(
    file: Annotated[UploadFile, File(description="JSONL, one request per line.")],
    purpose: Annotated[str, Form(description="'batch'")],
    tenant: Tenant,
    service: Service,
) -> OpenAIFile:
    content = await file.read()
    record = await openai_batches.upload_file(
        service, tenant, file.filename or "input.jsonl", purpose, content
    )
    return openai_batches.file_object(record)


@router.get("/{file_id}", response_model=OpenAIFile)
async def retrieve_file(file_id: str, tenant: Tenant, service: Service) -> OpenAIFile:
    if (named := openai_batches.batch_file(file_id)) is not None:
        batch = await _owned_batch(service, named[0], tenant, file_id)
        size = 0
        async for part in _batch_file_content(service, batch, named[1]):
            size += len(part)
        return openai_batches.batch_file_object(batch, named[1], size)
    return openai_batches.file_object(await service.owned_file(file_id, tenant))


@router.get("/{file_id}/content")
async def file_content(file_id: str, tenant: Tenant, service: Service) -> Response:
    if (named := openai_batches.batch_file(file_id)) is not None:
        batch = await _owned_batch(service, named[0], tenant, file_id)
        return StreamingResponse(
            _batch_file_content(service, batch, named[1]), media_type="application/jsonl"
        )
    record = await service.owned_file(file_id, tenant)
    content = await service.store.get_file_content(record.id)
    if content is None:
        raise NotFoundError(f"file {file_id} has expired", param="file_id")
    return Response(content, media_type="application/jsonl")


async def _owned_batch(service: JobService, batch_id: str, tenant: str, file_id: str) -> Batch:
    try:
        return await service.owned_batch(batch_id, tenant)
    except NotFoundError:
        raise NotFoundError(f"no file {file_id!r}", param="file_id") from None


def _batch_file_content(service: JobService, batch: Batch, errors: bool) -> AsyncIterator[bytes]:
    """OpenAI's line formats for OpenAI batches; the native result lines for native ones."""
    if openai_batches.is_openai_batch(batch):
        return openai_batches.export_lines(service, batch, errors)
    return export_results(service, batch, errors)
