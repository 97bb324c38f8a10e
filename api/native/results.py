"""A native batch's result and error lines (`GET /v1/batches/{id}/results`, `/errors`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from api.service import JobService
from jobs.models import Batch, Job, JobStatus


def result_line(job: Job) -> dict[str, Any]:
    result = job.result
    return {
        "id": job.id,
        "custom_id": job.custom_id,
        "status": job.status,
        "response": None
        if result is None or job.status == JobStatus.FAILED
        else {
            "text": result.text,
            "finish_reason": result.finish_reason,
            "usage": result.usage.model_dump() if result.usage else None,
        },
        "error": result.error.model_dump() if result and result.error else None,
    }


async def export_results(service: JobService, batch: Batch, errors: bool) -> AsyncIterator[bytes]:
    """Finished jobs in input order, as JSONL: succeeded ones (results) or the others (errors)."""
    async for jobs in service.batch_jobs(batch):
        lines = [
            json.dumps(result_line(job)) + "\n"
            for job in jobs
            if job.status.terminal and (job.status != JobStatus.SUCCEEDED) == errors
        ]
        if lines:
            yield "".join(lines).encode()
