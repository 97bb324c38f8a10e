"""OpenAI's /v1/files: upload a batch input file (within the tenant's storage quota); read or
delete it; read a batch's output and error files."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from api.deps import Service, Tenant
from api.errors import OpenAIRoute
from api.native.results import export_results
from api.openai import batches as openai_batches
from api.openai.protocol import OpenAIFile
from api.service import JobService
from jobs.errors import FileTooLargeError, InvalidRequestError, NotFoundError, StorageQuotaError
from jobs.models import Batch
from jobs.store import FileAdmission, QuotaRefusal

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=OpenAIRoute)


@router.post("", response_model=OpenAIFile)
async def create_file(
    file: Annotated[UploadFile, File(description="JSONL, one request per line.")],
    purpose: Annotated[str, Form(description="'batch'")],
    tenant: Tenant,
    service: Service,
) -> OpenAIFile:
    content = await file.read()
    admission = await _admit(service, tenant, len(content))
    try:
        record = await openai_batches.upload_file(
            service, tenant, file.filename or "input.jsonl", purpose, content
        )
    finally:
        # Stored, the file counts itself (put_file); failed, it takes nothing.
        await service.store.release_file_admission(admission)
    return openai_batches.file_object(record)


class DeletedFile(BaseModel):
    """OpenAI's answer to a file's deletion."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


@router.delete("/{file_id}", response_model=DeletedFile)
async def delete_file(file_id: str, tenant: Tenant, service: Service) -> DeletedFile:
    """Delete an uploaded file; what it took of the tenant's storage quota is given back."""
    if openai_batches.batch_file(file_id) is not None:
        raise InvalidRequestError(
            f"{file_id} is a batch's output or error file: it is not stored, it goes with its "
            "batch",
            param="file_id",
        )
    record = await service.owned_file(file_id, tenant)
    await service.store.delete_file(record)
    return DeletedFile(id=record.id)


async def _admit(service: JobService, tenant: str, size: int) -> FileAdmission:
    """Room for a file of `size` bytes in the tenant's storage quota: 413 for a file larger
    than the quota itself, 429 for one that does not fit beside the files already stored."""
    max_bytes = service.settings.max_tenant_file_bytes
    max_files = service.settings.max_tenant_files
    if size > max_bytes:
        raise FileTooLargeError(
            f"a file of {size} bytes is larger than the tenant's storage quota of {max_bytes} "
            "bytes",
            param="file",
        )
    verdict = await service.store.admit_file(tenant, size, max_bytes, max_files)
    if isinstance(verdict, QuotaRefusal):
        retry_after_s = max(1, math.ceil(verdict.retry_after_s))
        raise StorageQuotaError(
            f"storage quota exceeded: the tenant stores {verdict.files} files of "
            f"{verdict.bytes} bytes, and a file of {size} bytes more would pass its quota of "
            f"{max_files} files or {max_bytes} bytes. Delete files (DELETE /v1/files/{{id}}), "
            f"or retry after {retry_after_s} s, when enough of them will have expired",
            retry_after_s=retry_after_s,
        )
    return verdict


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
