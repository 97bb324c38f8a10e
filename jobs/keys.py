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


def tenant_reservations(tenant: str) -> str:
    """Sorted set: jobs admitted and not yet written, as `<reservation id>:<n>` scored by the
    time the reservation lapses (an API killed mid-submit gives its admission back by itself)."""
    return f"{PREFIX}:tenant:{tenant}:reserved"


def pending(model: str) -> str:
    """Sorted set: the model's queued job ids, scored by their place in line (pending_seq).
    The source of truth for what waits; a Celery message is only a ticket to claim from it."""
    return f"{PREFIX}:pending:{model}"


def suspects(model: str) -> str:
    """Sorted set: the model's queued jobs whose last attempt lost its worker. Each runs alone,
    so that a job that kills its worker cannot take healthy jobs with it."""
    return f"{PREFIX}:suspects:{model}"


def lane(model: str, lane: str, priority: str) -> str:
    """Sorted set: tenants with jobs waiting in one lane and priority of a model, scored by their
    virtual time (tokens served / weight): claim_next.lua serves the lowest first."""
    return f"{PREFIX}:lane:{model}:{lane}:{priority}"


def lane_jobs(model: str, lane: str, priority: str, tenant: str) -> str:
    """Sorted set: one tenant's jobs waiting in one lane and priority, scored by place in line."""
    return f"{PREFIX}:lane:{model}:{lane}:{priority}:{tenant}"


def tenant_weights() -> str:
    """Hash: tenant -> its weight in fair share (absent: 1). The API writes it at start."""
    return f"{PREFIX}:tenant_weights"


def deadlines() -> str:
    """Sorted set: queued job ids scored by the time they expire if not started by then."""
    return f"{PREFIX}:deadlines"


def pending_seq() -> str:
    """Integer: the last place in line handed out (pending scores, FIFO across batches)."""
    return f"{PREFIX}:pending:seq"


def leases() -> str:
    """Sorted set: running job ids scored by the time their attempt's lease lapses."""
    return f"{PREFIX}:leases"


def workers(model: str) -> str:
    """Sorted set: worker names serving a model, scored by the time their heartbeat lapses."""
    return f"{PREFIX}:workers:{model}"


def worker(name: str) -> str:
    """Hash (with a TTL): one worker's heartbeat: model, host, pid, slots, running jobs."""
    return f"{PREFIX}:worker:{name}"


def reconciler_lock() -> str:
    """String (with a TTL): the worker whose reconciler runs now (one at a time)."""
    return f"{PREFIX}:reconciler"


def drainer(model: str) -> str:
    """String (with a TTL): the worker emptying its slots to run a suspect of the model alone."""
    return f"{PREFIX}:drainer:{model}"


def tenant_rate(tenant: str, what: str) -> str:
    """Hash (with a TTL): a tenant's token bucket for `what` ("requests" or "tokens") per minute:
    level, at, cap (ratelimit.lua; a finished job gives back the tokens it did not use)."""
    return f"{PREFIX}:tenant:{tenant}:rate:{what}"


def idempotency(tenant: str, key: str) -> str:
    """String (with a TTL): a tenant's Idempotency-Key, JSON `{state, sha256, batch_id}`: the
    request's hash and the batch it makes (`pending`, a short TTL) or made (`done`)."""
    return f"{PREFIX}:idem:{tenant}:{key}"


def model_queue(alias: str) -> str:
    """Celery queue (a Redis list in kombu) that the workers of one model consume: its messages
    are tickets, each lets one worker claim the next job of pending(alias)."""
    return f"{PREFIX}.model.{alias}"


def hub_parking_channel() -> str:
    """Pub/sub channel no one publishes on: the API's event hub subscribes to it at start, since
    a pub/sub connection with no subscription cannot be read."""
    return f"{PREFIX}:chan:_hub"


def tenant_files(tenant: str) -> str:
    """Sorted set: a tenant's stored files (file ids, and `admit:<id>` for uploads admitted and
    not yet stored) scored by the time they expire; file_quota.lua drops the expired ones."""
    return f"{PREFIX}:tenant:{tenant}:files"


def tenant_file_sizes(tenant: str) -> str:
    """Hash: member of tenant_files(tenant) -> its bytes."""
    return f"{PREFIX}:tenant:{tenant}:file_sizes"


def tenant_file_bytes(tenant: str) -> str:
    """Integer: the sum of tenant_file_sizes(tenant) (bounded by TOKENQ_MAX_TENANT_FILE_BYTES)."""
    return f"{PREFIX}:tenant:{tenant}:file_bytes"


def metrics() -> str:
    """Hash: the service's counters and histograms, kept in Redis so that every API process
    and worker adds to the same totals (jobs/metrics.py: field `<name>|<label values>`)."""
    return f"{PREFIX}:metrics"


def claim_rate(model: str) -> str:
    """Hash: jobs of a model claimed per 10-second window (field: the window's start), the
    service rate that queue positions turn into an estimated start (claim_next.lua)."""
    return f"{PREFIX}:claims:{model}"


def tenant_jobs(tenant: str) -> str:
    """Sorted set: a tenant's latest single jobs (not in a batch) scored by creation time,
    capped (commit.lua), for GET /v1/jobs."""
    return f"{PREFIX}:tenant:{tenant}:jobs"


def webhook_event(event_id: str) -> str:
    """Hash: one webhook event to deliver: tenant, body (the signed JSON), created_at, attempt,
    state (`pending`, `delivered`, `given_up`); queued by finish_job (_lib.lua)."""
    return f"{PREFIX}:webhook:{event_id}"


def webhooks_due() -> str:
    """Sorted set: webhook event ids scored by when their next delivery is due (a sender that
    takes one pushes it a delivery lease ahead, so a dead sender's event comes due again)."""
    return f"{PREFIX}:webhooks:due"


def tenant_webhook_events(tenant: str) -> str:
    """String (with a TTL): the event types a tenant's webhook takes, comma-separated; kept by
    the workers from their settings, read by finish_job to decide whether to queue an event."""
    return f"{PREFIX}:tenant:{tenant}:webhook_events"


def tenant_webhook_log(tenant: str) -> str:
    """List: a tenant's latest webhook delivery attempts, newest first (JSON each), capped."""
    return f"{PREFIX}:tenant:{tenant}:webhook_log"
