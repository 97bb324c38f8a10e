"""OpenAI's Files and Batch API over tokenq's one batch resource.

An uploaded JSONL file's lines become the items of a native batch (JobService.submit_batch): good
lines are jobs, bad lines failed requests of the batch. The output and error files are not stored:
they are written from the batch's jobs on request, in input order, by the same conversions as
/v1/completions and /v1/chat/completions.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.errors import validation_message
from api.openai.protocol import (
    CHAT_COMPLETIONS_URL,
    COMPLETIONS_URL,
    BatchRequestInput,
    BatchRequestOutput,
    BatchRequestOutputError,
    BatchRequestOutputResponse,
    CreateBatchRequest,
    CreateChatCompletionRequest,
    CreateCompletionRequest,
    OpenAIFile,
)
from api.openai.render import chat_completion_response, completion_response
from api.openai.serving import DEFAULT_MAX_TOKENS, chat_job_requests, completion_job_requests
from api.protocol import line_json_error, load_json, utf8_lines
from api.service import BatchItem, JobService
from jobs.errors import InvalidRequestError, NotFoundError, TokenqError
from jobs.models import Batch, BatchLineError, Job, JobStatus, StoredFile

#: The purposes a file may be uploaded for: tokenq keeps files for the Batch API only.
UPLOAD_PURPOSES = ("batch",)
#: A batch's output and error files are named after it (api.protocol.BatchResponse).
OUTPUT_SUFFIX = "-output"
ERRORS_SUFFIX = "-errors"
#: Messages of error-file lines for requests that never produced a result.
CANCELLED_MESSAGE = "the batch was cancelled before this request finished"
EXPIRED_MESSAGE = "the request could not be started before the batch's completion window ended"


# --- files -----------------------------------------------------------------------------------


async def upload_file(
    service: JobService, tenant: str, filename: str, purpose: str, content: bytes
) -> StoredFile:
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequestError(
            f"purpose {purpose!r} is not supported: tokenq keeps files for the Batch API "
            "(purpose 'batch')",
            param="purpose",
        )
    now = time.time()
    ttl_s = service.settings.result_ttl_s
    record = StoredFile(
        id=f"file-{secrets.token_hex(12)}",
        tenant=tenant,
        filename=filename,
        purpose=purpose,
        bytes=len(content),
        created_at=now,
        expires_at=now + ttl_s,
    )
    await service.store.put_file(record, content, ttl_s)
    return record


def file_object(record: StoredFile) -> OpenAIFile:
    return OpenAIFile(
        id=record.id,
        bytes=record.bytes,
        created_at=int(record.created_at),
        expires_at=int(record.expires_at) if record.expires_at else None,
        filename=record.filename,
        purpose=record.purpose,
    )


def batch_file(file_id: str) -> tuple[str, bool] | None:
    """(batch id, is the error file) when the id names a batch's output or error file."""
    for suffix, errors in ((OUTPUT_SUFFIX, False), (ERRORS_SUFFIX, True)):
        if file_id.startswith("batch_") and file_id.endswith(suffix):
            return file_id.removesuffix(suffix), errors
    return None


def batch_file_object(batch: Batch, errors: bool, size: int) -> OpenAIFile:
    ended = batch.completed_at or batch.cancelled_at or batch.expired_at or batch.created_at
    return OpenAIFile(
        id=f"{batch.id}{ERRORS_SUFFIX if errors else OUTPUT_SUFFIX}",
        bytes=size,
        created_at=int(ended),
        filename=f"{batch.id}_{'error' if errors else 'output'}.jsonl",
        purpose="batch_output",
    )


def is_openai_batch(batch: Batch) -> bool:
    return batch.endpoint in (CHAT_COMPLETIONS_URL, COMPLETIONS_URL)


# --- input file -> batch ---------------------------------------------------------------------


async def create_batch(
    service: JobService, request: CreateBatchRequest, tenant: str, batch_id: str | None = None
) -> Batch:
    """A batch from an uploaded file: every line validated, bad ones failed, the rest queued."""
    record = await service.owned_file(request.input_file_id, tenant, "input_file_id")
    if record.purpose != "batch":
        raise InvalidRequestError(
            f"file {record.id} was uploaded for {record.purpose!r}, not 'batch'",
            param="input_file_id",
        )
    content = await service.store.get_file_content(record.id)
    if content is None:
        raise NotFoundError(f"file {record.id} has expired", param="input_file_id")
    items = await run_in_threadpool(parse_batch_input, service, content, request.endpoint)
    return await service.submit_batch(
        items,
        tenant,
        model=None,
        metadata=request.metadata,
        item_label="line {line}",
        batch_id=batch_id,
        endpoint=request.endpoint,
        input_file_id=record.id,
        fail_bad_items=True,
        default_max_tokens=DEFAULT_MAX_TOKENS,
    )


def parse_batch_input(service: JobService, content: bytes, endpoint: str) -> list[BatchItem]:
    """One item per non-blank line: a job request, or the reason the line cannot be one."""
    items: list[BatchItem] = []
    seen: set[str] = set()
    for number, line in enumerate(utf8_lines(content), start=1):
        if line.strip():
            items.append(_parse_line(service, line, number, len(items), endpoint, seen))
    return items


def _parse_line(
    service: JobService, line: str, number: int, index: int, endpoint: str, seen: set[str]
) -> BatchItem:
    custom_id: str | None = None

    def failed(code: str, message: str, param: str | None = None) -> BatchLineError:
        return BatchLineError(
            index=index,
            line=number,
            custom_id=custom_id,
            code=code,
            message=f"line {number}: {message}",
            param=param,
        )

    try:
        raw = load_json(line)
    except ValueError as exc:
        return failed("invalid_json", f"invalid JSON ({line_json_error(exc)})")
    if not isinstance(raw, dict):
        return failed("invalid_json", "expected a JSON object")
    custom_id = raw.get("custom_id") if isinstance(raw.get("custom_id"), str) else None
    try:
        entry = BatchRequestInput.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        return failed("invalid_request", message, param)
    if entry.url != endpoint:
        return failed(
            "invalid_url", f"url {entry.url!r} is not the batch's endpoint {endpoint}", "url"
        )
    if entry.custom_id in seen:
        return failed("duplicate_custom_id", f"custom_id {entry.custom_id!r} repeats", "custom_id")
    seen.add(entry.custom_id)
    try:
        body: CreateChatCompletionRequest | CreateCompletionRequest
        if endpoint == CHAT_COMPLETIONS_URL:
            body = CreateChatCompletionRequest.model_validate(entry.body)
            choices = body.n
        else:
            body = CreateCompletionRequest.model_validate(entry.body)
            choices = body.n * len(body.prompts)
        service.registry.get(body.model)  # an unknown model is this line's error
        if choices != 1:
            requests = []
        elif isinstance(body, CreateChatCompletionRequest):
            requests = chat_job_requests(body, entry.custom_id)
        else:
            requests = completion_job_requests(body, entry.custom_id)
    except ValidationError as exc:
        message, param = validation_message(exc.errors(), "body")
        return failed("invalid_request", message, param)
    except TokenqError as exc:
        param = f"body.{exc.param}" if exc.param else None
        return failed(exc.code or "invalid_request", exc.message, param)
    if choices != 1:
        return failed(
            "unsupported_value",
            "a batch request gives one choice: n > 1 and prompt arrays are not supported",
            "body.n",
        )
    return requests[0]


# --- batch -> output and error files ---------------------------------------------------------


def batch_request_id(batch: Batch, index: int) -> str:
    return f"batch_req_{batch.id.removeprefix('batch_')}_{index}"


def output_line(batch: Batch, job: Job) -> BatchRequestOutput:
    """A succeeded request: the same response object its endpoint returns."""
    chat = batch.endpoint == CHAT_COMPLETIONS_URL
    response = chat_completion_response([job]) if chat else completion_response([job])
    body = response.model_dump(mode="json")
    return BatchRequestOutput(
        id=batch_request_id(batch, job.index or 0),
        custom_id=job.custom_id,
        response=BatchRequestOutputResponse(status_code=200, request_id=job.id, body=body),
        error=None,
    )


def job_error_line(batch: Batch, job: Job) -> BatchRequestOutput:
    """A request that ran but did not succeed: failed, cancelled or expired."""
    if job.status == JobStatus.FAILED:
        error = job.result.error if job.result else None
        code = "generation_failed"
        message = f"{error.type}: {error.message}" if error else "the generation failed"
    elif job.status == JobStatus.CANCELLED:
        code, message = "batch_cancelled", CANCELLED_MESSAGE
    else:
        code, message = "batch_expired", EXPIRED_MESSAGE
    return BatchRequestOutput(
        id=batch_request_id(batch, job.index or 0),
        custom_id=job.custom_id,
        response=None,
        error=BatchRequestOutputError(code=code, message=message),
    )


def line_error_line(batch: Batch, error: BatchLineError) -> BatchRequestOutput:
    """An input line that never became a request."""
    return BatchRequestOutput(
        id=batch_request_id(batch, error.index),
        custom_id=error.custom_id,
        response=None,
        error=BatchRequestOutputError(code=error.code, message=error.message),
    )


async def export_lines(service: JobService, batch: Batch, errors: bool) -> AsyncIterator[bytes]:
    """The output file (succeeded requests) or error file (the rest), in input order.

    Jobs still running are not in either yet.
    """
    pending = deque(await service.store.batch_line_errors(batch.id) if errors else ())
    async for jobs in service.batch_jobs(batch):
        lines = []
        for job in jobs:
            if not job.status.terminal:
                continue
            while pending and pending[0].index < (job.index or 0):
                lines.append(line_error_line(batch, pending.popleft()))
            if job.status == JobStatus.SUCCEEDED and not errors:
                lines.append(output_line(batch, job))
            elif job.status != JobStatus.SUCCEEDED and errors:
                lines.append(job_error_line(batch, job))
        if lines:
            yield "".join(line.model_dump_json() + "\n" for line in lines).encode()
    if pending:
        yield "".join(line_error_line(batch, e).model_dump_json() + "\n" for e in pending).encode()
