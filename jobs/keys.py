"""Every Redis key and channel name tokenq uses, in one place (api and worker both import it)."""

PREFIX = "tokenq"


def job(job_id: str) -> str:
    """Hash: the job record (request, status, stamps, result)."""
    return f"{PREFIX}:job:{job_id}"


def job_events(job_id: str) -> str:
    """Stream: the job's replayable event log; entry ids are `<seq>-0`."""
    return f"{PREFIX}:job:{job_id}:events"


def job_channel(job_id: str) -> str:
    """Pub/sub channel: live fan-out of the job's events."""
    return f"{PREFIX}:chan:job:{job_id}"


def batch(batch_id: str) -> str:
    """Hash: the batch record and its live counters."""
    return f"{PREFIX}:batch:{batch_id}"


def batch_jobs(batch_id: str) -> str:
    """List: the batch's job ids in input order."""
    return f"{PREFIX}:batch:{batch_id}:jobs"


def batch_events(batch_id: str) -> str:
    """Stream: the batch's replayable event log (per-job completions, counts)."""
    return f"{PREFIX}:batch:{batch_id}:events"


def batch_channel(batch_id: str) -> str:
    """Pub/sub channel: live fan-out of the batch's events."""
    return f"{PREFIX}:chan:batch:{batch_id}"


def batch_line_errors(batch_id: str) -> str:
    """Hash: input lines of a batch that never became jobs: line index -> BatchLineError JSON."""
    return f"{PREFIX}:batch:{batch_id}:line_errors"


def tenant_batches(tenant: str) -> str:
    """Sorted set: a tenant's batch ids scored by created_at (GET /v1/batches lists newest first)."""
    return f"{PREFIX}:tenant:{tenant}:batches"


def file(file_id: str) -> str:
    """Hash: an uploaded file's metadata (OpenAI's Files API: purpose, filename, bytes, stamps)."""
    return f"{PREFIX}:file:{file_id}"


def file_content(file_id: str) -> str:
    """String: an uploaded file's bytes."""
    return f"{PREFIX}:file:{file_id}:content"


def tenant_inflight(tenant: str) -> str:
    """Integer: the tenant's jobs accepted and not yet final (bounded by TOKENQ_MAX_INFLIGHT)."""
    return f"{PREFIX}:tenant:{tenant}:inflight"


def idempotency(tenant: str, key: str) -> str:
    """String: the batch id created for a tenant's Idempotency-Key."""
    return f"{PREFIX}:idem:{tenant}:{key}"


def model_queue(alias: str) -> str:
    """Celery queue (a Redis list in kombu) that the workers of one model consume."""
    return f"{PREFIX}.model.{alias}"


def hub_parking_channel() -> str:
    """Pub/sub channel no one publishes on: the API's event hub subscribes to it at start, since
    a pub/sub connection with no subscription cannot be read."""
    return f"{PREFIX}:chan:_hub"
