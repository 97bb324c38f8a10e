"""Redis reads and writes of jobs, batches and their event logs; Lua where a step must be atomic.

`AsyncStore` serves the API (redis.asyncio), `WorkerStore` the worker (blocking redis). Both use
the same scripts from jobs/lua/, each prefixed with _lib.lua.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis

from jobs import keys, metrics
from jobs.events import Event, EventType
from jobs.models import (
    Batch,
    BatchLineError,
    BatchStatus,
    Job,
    JobResult,
    JobStatus,
    StoredFile,
)

logger = logging.getLogger(__name__)

#: Jobs written per pipeline round trip when creating a batch.
WRITE_CHUNK = 1000


def _script_source(name: str) -> str:
    lua = resources.files("jobs").joinpath("lua")
    return lua.joinpath("_lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


SCRIPT_NAMES = (
    "claim_next",
    "emit",
    "finish",
    "cancel",
    "admit",
    "commit",
    "requeue",
    "renew",
    "expire",
    "ratelimit",
    "idempotency",
    "file_quota",
    "position",
    "queue_state",
    "webhook_claim",
    "webhook_queue",
)

#: Jobs written before their commit carry this TTL: an API killed between the writes and the
#: commit leaves nothing behind for long (a batch exists whole or not at all).
STAGING_TTL_S = 3600
#: An admission lapses this long after it was made if its jobs were never committed.
RESERVATION_TTL_S = 600
#: A pending Idempotency-Key lapses this long after its creator last refreshed it (every third of
#: it while the batch is made): a retry after the creator died is not refused for long.
IDEMPOTENCY_PENDING_TTL_S = 30
#: An upload admitted against its tenant's storage quota is counted this long at most before
#: its file is stored (then the file is counted instead).
FILE_ADMISSION_TTL_S = 300


@dataclass(frozen=True)
class Admission:
    """Jobs admitted for a tenant (counted against its limit) and not yet committed."""

    tenant: str
    member: str  #: `<reservation id>:<n>` in keys.tenant_reservations(tenant)


@dataclass(frozen=True)
class IdempotencyClaim:
    """What an Idempotency-Key says (idempotency.lua): `claimed` (this request makes the batch),
    `pending` (another request is making `batch_id`), `done` (it made `batch_id`) or `reused`
    (it was sent with another request)."""

    state: str
    batch_id: str | None = None


@dataclass(frozen=True)
class FileAdmission:
    """Room taken in a tenant's storage quota for one upload until its file is stored."""

    tenant: str
    member: str  #: `admit:<id>` in keys.tenant_files(tenant)


@dataclass(frozen=True)
class QuotaRefusal:
    """An upload past the tenant's storage quota: what it stores now, and how long until enough
    of that expires for the upload to fit."""

    files: int
    bytes: int
    retry_after_s: float


@dataclass(frozen=True)
class Emit:
    """One attempt's events for emit.lua (see WorkerStore.emit_many)."""

    job: Job
    fence: int
    completion_tokens: int
    events: list[tuple[str, str]]
    #: the completion_tokens the attempt wrote last (None: do not check)
    before: int | None = 0
    #: the highest seq the attempt handed out (None: none); the log goes on above it
    seq_floor: int | None = None


@dataclass(frozen=True)
class RateVerdict:
    """ratelimit.lua's answer; -1 stands for an unlimited bucket."""

    admitted: bool
    requests_left: float
    tokens_left: float
    requests_reset_s: float
    tokens_reset_s: float
    retry_after_s: float


@dataclass(frozen=True)
class Claim:
    """An attempt a worker claimed: the job, its fencing token, and whether it must run alone."""

    job: Job
    fence: int
    suspect: bool


def job_keys(job: Job) -> list[str]:
    """The KEYS every script takes: job hash, job stream, batch hash, batch stream, batch list,
    the tenant's in-flight counter."""
    own = [keys.job(job.id), keys.job_events(job.id)]
    inflight = keys.tenant_inflight(job.tenant)
    if not job.batch_id:
        return [*own, *own, own[0], inflight]
    batch = [
        keys.batch(job.batch_id),
        keys.batch_events(job.batch_id),
        keys.batch_jobs(job.batch_id),
    ]
    return [*own, *batch, inflight]


def channels(job_id: str, batch_id: str | None) -> list[str]:
    return [keys.job_channel(job_id), keys.batch_channel(batch_id) if batch_id else ""]


def initial_event(status: str, at: float) -> str:
    return Event.encode(1, EventType.STATUS, {"status": status, "at": at})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


class AsyncStore:
    """The API's view of Redis."""

    def __init__(self, client: aioredis.Redis, result_ttl_s: int):
        self.redis = client
        self.result_ttl_s = result_ttl_s
        self._scripts = {n: client.register_script(_script_source(n)) for n in SCRIPT_NAMES}

    async def create(
        self,
        admission: Admission,
        jobs: list[Job],
        batch: Batch | None = None,
        line_errors: Sequence[BatchLineError] = (),
        line_errors_ttl_s: int | None = None,
    ) -> None:
        """Write the admitted jobs (and their batch), then make them live in one atomic step.

        Records are written first with a staging TTL, WRITE_CHUNK per MULTI; the last MULTI
        writes the batch record and runs commit.lua, which puts every job in its model's line,
        drops the TTLs and turns the admission into in-flight count. Killed before that last
        step, the writes expire and the admission lapses: a batch exists whole or not at all.
        `line_errors` are the batch's input lines that never became jobs (kept
        `line_errors_ttl_s`, past the batch's own end).
        """
        for start in range(0, len(jobs), WRITE_CHUNK):
            pipe = self.redis.pipeline(transaction=True)
            chunk = jobs[start : start + WRITE_CHUNK]
            for job in chunk:
                record = job.to_redis()
                record["seq"] = "1"
                pipe.hset(keys.job(job.id), mapping=record)  # type: ignore[arg-type]
                pipe.xadd(
                    keys.job_events(job.id),
                    {"e": initial_event(job.status, job.created_at)},
                    id="1-0",
                )
                pipe.expire(keys.job(job.id), STAGING_TTL_S)
                pipe.expire(keys.job_events(job.id), STAGING_TTL_S)
            if batch is not None and chunk:
                pipe.rpush(keys.batch_jobs(batch.id), *(j.id for j in chunk))
                pipe.expire(keys.batch_jobs(batch.id), STAGING_TTL_S)
            if batch is None and start + WRITE_CHUNK >= len(jobs):
                await self._commit(pipe, admission, jobs, None)  # a request's jobs: one MULTI
            await pipe.execute()
        if batch is None:
            return
        pipe = self.redis.pipeline(transaction=True)
        if line_errors:
            errors_key = keys.batch_line_errors(batch.id)
            lines: dict[str | bytes, str] = {str(e.index): e.model_dump_json() for e in line_errors}
            pipe.hset(errors_key, mapping=lines)  # type: ignore[arg-type]
            pipe.expire(errors_key, line_errors_ttl_s or self.result_ttl_s)
        pipe.hset(
            keys.batch(batch.id),
            mapping={**batch.to_redis(), "seq": "1"},  # type: ignore[dict-item]
        )
        pipe.xadd(
            keys.batch_events(batch.id),
            {"e": initial_event(batch.status, batch.created_at)},
            id="1-0",
        )
        if batch.status == BatchStatus.FAILED:
            # Failed before any job ran: no job will end its log or start its TTL, so here.
            counts = {
                "total": batch.total,
                "succeeded": 0,
                "failed": batch.failed,
                "cancelled": 0,
                "expired": 0,
            }
            done = Event.encode(2, EventType.DONE, {"status": batch.status, "counts": counts})
            pipe.xadd(keys.batch_events(batch.id), {"e": done}, id="2-0")
            pipe.hset(keys.batch(batch.id), "seq", "2")
            pipe.expire(keys.batch(batch.id), self.result_ttl_s)
            pipe.expire(keys.batch_events(batch.id), self.result_ttl_s)
            await self._scripts["webhook_queue"](
                keys=[], args=[batch.tenant, "batch.failed", batch.id, time.time()], client=pipe
            )
        pipe.zadd(keys.tenant_batches(batch.tenant), {batch.id: batch.created_at})
        await self._commit(pipe, admission, jobs, batch)
        await pipe.execute()

    async def _commit(
        self, pipe: Any, admission: Admission, jobs: list[Job], batch: Batch | None
    ) -> None:
        tenant = admission.tenant
        args: list[str] = [admission.member, keys.batch_jobs(batch.id) if batch else "", tenant]
        for job in jobs:
            expires_at = "" if job.expires_at is None else repr(job.expires_at)
            args += [job.id, job.spec.model, job.lane.value, job.priority.value, expires_at]
        await self._scripts["commit"](  # queued in the pipeline, run at its EXEC
            keys=[keys.tenant_inflight(tenant), keys.tenant_reservations(tenant)],
            args=args,
            client=pipe,
        )

    async def admit(self, tenant: str, n: int, limit: int) -> Admission | int:
        """Admit n more jobs for the tenant unless that passes `limit`: an Admission to create()
        them with (or to release()), else the count in flight now. Each committed job is
        counted down when it ends (finish_job in _lib.lua)."""
        reservation = secrets.token_hex(8)
        result = await self._scripts["admit"](
            keys=[keys.tenant_inflight(tenant), keys.tenant_reservations(tenant)],
            args=[n, limit, time.time(), reservation, RESERVATION_TTL_S],
        )
        if int(result) != -1:
            return int(result)
        return Admission(tenant, f"{reservation}:{n}")

    async def take_rate(
        self, tenant: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> RateVerdict:
        """Take one request and `tokens` from the tenant's per-minute buckets, or neither."""
        reply = await self._scripts["ratelimit"](
            keys=[keys.tenant_rate(tenant, "requests"), keys.tenant_rate(tenant, "tokens")],
            args=[time.time(), rpm or "", tpm or "", tokens],
        )
        values = [float(v) for v in reply]
        return RateVerdict(values[0] == 1, *values[1:])

    async def queue_depth(self, model: str) -> int:
        """Jobs queued for the model (its line and its suspects)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.pending(model))
        pipe.zcard(keys.suspects(model))
        return sum(await pipe.execute())

    async def release(self, admission: Admission) -> None:
        """Give back an admission whose jobs were never committed."""
        await self.redis.zrem(keys.tenant_reservations(admission.tenant), admission.member)

    async def live_workers(self, models: Iterable[str]) -> dict[str, int]:
        """Workers per model whose heartbeat has not lapsed (renew.lua keeps them)."""
        names = list(models)
        pipe = self.redis.pipeline(transaction=False)
        now = time.time()
        for model in names:
            pipe.zcount(keys.workers(model), f"({now}", "+inf")
        return dict(zip(names, await pipe.execute(), strict=True))

    async def queue_position(self, job_id: str, scheduling: str) -> QueuePosition | None:
        """Where a queued job stands in its model's line, and the model's recent service
        rate (position.lua); None when the job is not queued."""
        reply = await self._scripts["position"](keys=[], args=[job_id, time.time(), scheduling])
        if not reply:
            return None
        position, claims, span = reply
        return QueuePosition(int(position), int(claims) / float(span))

    async def queue_state(self, models: Iterable[str]) -> list[metrics.ModelQueue]:
        """Each model's line and live workers (queue_state.lua), for GET /metrics."""
        raw = await self._scripts["queue_state"](keys=[], args=[time.time(), *models])
        return metrics.parse_queue_state(raw)

    async def metrics_fields(self) -> dict[Any, Any]:
        """The service's counters and histograms (jobs/metrics.py)."""
        return await self.redis.hgetall(keys.metrics())

    async def tenant_jobs(self, tenant: str, limit: int) -> list[Job]:
        """A tenant's latest single jobs, newest first (those whose records have expired are
        left out)."""
        ids = await self.redis.zrevrange(keys.tenant_jobs(tenant), 0, limit - 1)
        found = await self.get_jobs(i.decode() if isinstance(i, bytes) else str(i) for i in ids)
        return [job for job in found if job is not None]

    async def get_job(self, job_id: str) -> Job | None:
        raw = await self.redis.hgetall(keys.job(job_id))
        return Job.from_redis(_decode(raw)) if raw else None

    async def get_batch(self, batch_id: str) -> Batch | None:
        raw = await self.redis.hgetall(keys.batch(batch_id))
        return Batch.from_redis(_decode(raw)) if raw else None

    async def batch_job_ids(self, batch_id: str, start: int = 0, stop: int = -1) -> list[str]:
        ids = await self.redis.lrange(keys.batch_jobs(batch_id), start, stop)
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    async def batch_line_errors(self, batch_id: str) -> list[BatchLineError]:
        """The batch's input lines that never became jobs, in input order."""
        raw = await self.redis.hvals(keys.batch_line_errors(batch_id))
        errors = [BatchLineError.model_validate_json(r) for r in raw]
        return sorted(errors, key=lambda e: e.index)

    async def list_batches(
        self, tenant: str, after: str | None = None, limit: int = 20
    ) -> tuple[list[Batch], bool]:
        """A tenant's batches, newest first, after the batch id `after`; and whether more follow.

        Entries of batches that expired are dropped from the index as they are met.
        """
        index = keys.tenant_batches(tenant)
        start = 0
        if after is not None:
            # redis-py types ZREVRANK for WITHSCORE too (a list); without it, an int or None.
            rank: int | None = await self.redis.zrevrank(index, after)  # type: ignore[assignment]
            if rank is None:
                return [], False
            start = rank + 1
        found: list[Batch] = []
        while len(found) <= limit:
            ids: list[str] = [
                i.decode() if isinstance(i, bytes) else str(i)
                for i in await self.redis.zrevrange(index, start, start + limit)
            ]
            if not ids:
                break
            pipe = self.redis.pipeline(transaction=False)
            for batch_id in ids:
                pipe.hgetall(keys.batch(batch_id))
            gone = []
            for batch_id, raw in zip(ids, await pipe.execute(), strict=True):
                if raw:
                    found.append(Batch.from_redis(_decode(raw)))
                else:
                    gone.append(batch_id)
            if gone:
                await self.redis.zrem(index, *gone)
            start += len(ids) - len(gone)
        return found[:limit], len(found) > limit

    async def put_file(self, record: StoredFile, content: bytes, ttl_s: int) -> None:
        """Store the file, and count it in its tenant's storage quota, in one MULTI (see
        admit_file for the check)."""
        expires_at = record.expires_at if record.expires_at is not None else time.time() + ttl_s
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.file_content(record.id), content, ex=ttl_s)
        pipe.hset(keys.file(record.id), mapping=record.to_redis())  # type: ignore[arg-type]
        pipe.expire(keys.file(record.id), ttl_s)
        await self._file_quota(
            record.tenant, "add", record.id, record.bytes, repr(expires_at), client=pipe
        )
        await pipe.execute()

    async def admit_file(
        self, tenant: str, size: int, max_bytes: int, max_files: int
    ) -> FileAdmission | QuotaRefusal:
        """Take room for a file of `size` bytes in the tenant's storage quota, unless that
        passes it: a FileAdmission to give back (release_file_admission) once the file is
        stored or failed to be, else what the tenant stores now. Stored files are counted until
        they expire or are deleted."""
        member = f"admit:{secrets.token_hex(8)}"
        lapses_at = time.time() + FILE_ADMISSION_TTL_S
        reply = await self._file_quota(
            tenant, "admit", member, size, repr(lapses_at), max_bytes, max_files
        )
        if int(reply[0]) == 1:
            return FileAdmission(tenant, member)
        return QuotaRefusal(int(reply[1]), int(reply[2]), float(_text(reply[3])))

    async def release_file_admission(self, admission: FileAdmission) -> None:
        await self._file_quota(admission.tenant, "remove", admission.member)

    async def delete_file(self, record: StoredFile) -> None:
        """Delete an uploaded file and give back what it took of its tenant's quota."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.file(record.id), keys.file_content(record.id))
        await self._file_quota(record.tenant, "remove", record.id, client=pipe)
        await pipe.execute()

    async def _file_quota(self, tenant: str, step: str, *args: Any, client: Any = None) -> Any:
        return await self._scripts["file_quota"](
            keys=[
                keys.tenant_files(tenant),
                keys.tenant_file_sizes(tenant),
                keys.tenant_file_bytes(tenant),
            ],
            args=[step, time.time(), *args],
            client=client,
        )

    async def get_file(self, file_id: str) -> StoredFile | None:
        raw = await self.redis.hgetall(keys.file(file_id))
        return StoredFile.from_redis(_decode(raw)) if raw else None

    async def get_file_content(self, file_id: str) -> bytes | None:
        content = await self.redis.get(keys.file_content(file_id))
        return content.encode() if isinstance(content, str) else content

    async def get_jobs(self, job_ids: Iterable[str]) -> list[Job | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [Job.from_redis(_decode(r)) if r else None for r in await pipe.execute()]

    async def cancel(self, job: Job) -> str:
        """'cancelled' | 'cancelling' | the terminal status the job already had | 'missing'."""
        result = await self._scripts["cancel"](
            keys=job_keys(job),
            args=[*channels(job.id, job.batch_id), time.time(), self.result_ttl_s],
        )
        return result.decode() if isinstance(result, bytes) else result

    async def mark_batch(self, batch_id: str, status: str, stamp: str) -> None:
        await self.redis.hset(keys.batch(batch_id), mapping={"status": status, stamp: time.time()})

    async def events_after(self, stream: str, after_seq: int, count: int = 1000) -> list[Event]:
        """Events with seq > after_seq, oldest first (entry ids are `<seq>-0`)."""
        entries: list[tuple[bytes, dict[bytes | str, bytes]]] = await self.redis.xrange(  # type: ignore[assignment]
            stream, min=f"({after_seq}-0", max="+", count=count
        )
        return [
            Event.parse(fields[b"e"] if b"e" in fields else fields["e"]) for _, fields in entries
        ]

    async def last_event(self, stream: str) -> Event | None:
        """The log's newest event (a final one: the log has ended), None when there is no log."""
        entries: list[tuple[bytes, dict[bytes | str, bytes]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            stream, count=1
        )
        if not entries:
            return None
        fields = entries[0][1]
        return Event.parse(fields[b"e"] if b"e" in fields else fields["e"])

    async def claim_idempotency_key(
        self, tenant: str, key: str, sha256: str, batch_id: str
    ) -> IdempotencyClaim:
        """Take the key for a request whose hash is `sha256` and the batch it will make, unless
        another request has it. A pending key whose batch is already committed (its creator
        died before finish_idempotency_key) is finished here and answered `done`."""
        redis_key = keys.idempotency(tenant, key)
        reply = await self._idempotency(
            redis_key, "claim", sha256, batch_id, IDEMPOTENCY_PENDING_TTL_S * 1000
        )
        state = _text(reply[0])
        found = _text(reply[1]) if len(reply) > 1 else None
        if state == "pending" and found and await self.redis.exists(keys.batch(found)):
            await self._idempotency(redis_key, "finish", found, self.result_ttl_s)
            state = "done"
        return IdempotencyClaim(state, found)

    @asynccontextmanager
    async def holding_idempotency_key(
        self, tenant: str, key: str, batch_id: str
    ) -> AsyncIterator[None]:
        """Keep our pending key alive while its batch is made (every third of its TTL)."""

        async def refresh() -> None:
            while True:
                await asyncio.sleep(IDEMPOTENCY_PENDING_TTL_S / 3)
                try:
                    await self._idempotency(
                        keys.idempotency(tenant, key),
                        "refresh",
                        batch_id,
                        IDEMPOTENCY_PENDING_TTL_S * 1000,
                    )
                except redis.RedisError as exc:  # the next refresh may find Redis back
                    logger.warning("could not refresh Idempotency-Key %r: %s", key, exc)

        task = asyncio.create_task(refresh())
        try:
            yield
        finally:
            task.cancel()

    async def finish_idempotency_key(self, tenant: str, key: str, batch_id: str) -> None:
        """Our batch is committed: the key names it for as long as results are kept."""
        await self._idempotency(
            keys.idempotency(tenant, key), "finish", batch_id, self.result_ttl_s
        )

    async def release_idempotency_key(self, tenant: str, key: str, batch_id: str) -> None:
        """Our request failed before its batch was committed: a retry may try again."""
        await self._idempotency(keys.idempotency(tenant, key), "release", batch_id)

    async def _idempotency(self, redis_key: str, *args: Any) -> Any:
        return await self._scripts["idempotency"](keys=[redis_key], args=list(args))

    async def webhook_log(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        """A tenant's latest webhook delivery attempts, newest first."""
        raw = await self.redis.lrange(keys.tenant_webhook_log(tenant), 0, limit - 1)
        return [json.loads(entry) for entry in raw]

    async def redeliver_webhook(self, tenant: str, event_id: str) -> bool:
        """Send a tenant's event again, now (whatever became of it); False if there is none."""
        key = keys.webhook_event(event_id)
        owner = await self.redis.hget(key, "tenant")
        if owner is None or _text(owner) != tenant:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"state": "pending", "attempt": 0, "created_at": time.time()})
        pipe.persist(key)
        pipe.zadd(keys.webhooks_due(), {event_id: time.time()})
        await pipe.execute()
        return True


#: Webhook delivery attempts kept per tenant (its delivery log).
WEBHOOK_LOG_KEPT = 1000


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    tenant: str
    type: str
    body: str  #: the JSON that is signed and sent
    created_at: float
    attempt: int  #: this attempt's number (from 1)


@dataclass(frozen=True)
class QueuePosition:
    position: int  #: jobs of the model expected to start before this one
    rate_per_s: float  #: jobs of the model claimed per second, over the last minute or so


class WorkerStore:
    """The worker's view of Redis: claim an attempt, append its events, write its result once."""

    def __init__(self, client: redis.Redis, result_ttl_s: int, max_attempts: int, worker_name: str):
        self.redis = client
        self.worker_name = worker_name
        self.result_ttl_s = result_ttl_s
        self.max_attempts = max_attempts
        self._scripts = {n: client.register_script(_script_source(n)) for n in SCRIPT_NAMES}

    def get_job(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(keys.job(job_id))
        return Job.from_redis(_decode(raw)) if raw else None

    def claim_next(
        self, model: str, lease_s: float, may_run_suspect: bool, scheduling: str = "fair"
    ) -> Claim | str:
        """Claim the next job in the model's line for a new attempt (its number is the fencing
        token) under a lease; or "drain" (suspects wait: empty this worker first, then ask with
        may_run_suspect) or "empty" (nothing waits). `scheduling`: "fair" (lanes, priorities,
        tenants by weight) or "fifo" (the model's oldest job)."""
        reply = self._scripts["claim_next"](
            keys=[],
            args=[
                model,
                time.time(),
                self.result_ttl_s,
                self.max_attempts,
                self.worker_name,
                lease_s,
                "1" if may_run_suspect else "0",
                scheduling,
            ],
        )
        outcome = reply[0].decode()
        if outcome != "claimed":
            return outcome
        fields = [v.decode() for v in reply[3:]]
        job = Job.from_redis(dict(zip(fields[::2], fields[1::2], strict=True)))
        return Claim(job, int(reply[1]), reply[2] == b"1")

    def renew(
        self, model: str, lease_s: float, heartbeat: str, held: Sequence[tuple[str, int]]
    ) -> list[str]:
        """Renew the leases of this worker's attempts (job id, fence) and its heartbeat in one
        round trip; returns the ids of jobs it no longer owns."""
        args: list[Any] = [time.time(), lease_s, self.worker_name, model, heartbeat]
        for job_id, fence in held:
            args += [job_id, fence]
        lost = self._scripts["renew"](keys=[], args=args)
        return [i.decode() for i in lost]

    def publish_webhook_subscriptions(self, events: dict[str, list[str]], ttl_s: int) -> None:
        """Which event types each tenant's webhook takes (finish_job reads them); they lapse
        ttl_s after the last worker configured with them stops renewing them."""
        if not events:
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant, types in events.items():
            pipe.set(keys.tenant_webhook_events(tenant), ",".join(types), ex=ttl_s)
        pipe.execute()

    def claim_webhooks(self, lease_s: float, limit: int) -> list[WebhookEvent]:
        """Webhook events due now, each taken for one delivery attempt (webhook_claim.lua)."""
        reply = self._scripts["webhook_claim"](keys=[], args=[time.time(), lease_s, limit])
        events, i = [], 0
        values = [_text(v) for v in reply]
        while i < len(values):
            event_id, i = values[i], i + 1
            fields: dict[str, str] = {}
            while values[i] != "":
                fields[values[i]] = values[i + 1]
                i += 2
            i += 1
            events.append(
                WebhookEvent(
                    id=event_id,
                    tenant=fields["tenant"],
                    type=fields["type"],
                    body=fields["body"],
                    created_at=float(fields["created_at"]),
                    attempt=int(fields["attempt"]),
                )
            )
        return events

    def settle_webhook(
        self,
        event: WebhookEvent,
        entry: dict[str, Any],
        *,
        retry_at: float | None,
        keep_s: int,
    ) -> None:
        """Record an attempt in the tenant's log; then either due again at retry_at, or
        settled (delivered or given up: entry["state"]) and kept keep_s for a redelivery."""
        key = keys.webhook_event(event.id)
        log = keys.tenant_webhook_log(event.tenant)
        pipe = self.redis.pipeline(transaction=True)
        if retry_at is not None:
            pipe.zadd(keys.webhooks_due(), {event.id: retry_at})
        else:
            pipe.zrem(keys.webhooks_due(), event.id)
            pipe.hset(key, "state", entry["state"])
            pipe.expire(key, keep_s)
        pipe.lpush(log, json.dumps(entry, separators=(",", ":")))
        pipe.ltrim(log, 0, WEBHOOK_LOG_KEPT - 1)
        pipe.expire(log, keep_s)
        pipe.execute()

    def leave(self, model: str) -> None:
        """This worker stops: it no longer serves the model."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(keys.workers(model), self.worker_name)
        pipe.delete(keys.worker(self.worker_name))
        pipe.execute()

    def requeue_expired(self, limit: int = 1000) -> dict[str, int]:
        """Put running jobs whose lease lapsed back in line (as suspects), or fail those out of
        attempts; returns how many went back per model."""
        reply = self._scripts["requeue"](
            keys=[], args=[time.time(), self.result_ttl_s, self.max_attempts, limit]
        )
        return {reply[i].decode(): int(reply[i + 1]) for i in range(0, len(reply), 2)}

    def set_tenant_weights(self, weights: dict[str, float]) -> None:
        """The fair-share weights claim_next.lua reads (a tenant not listed weighs 1)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.tenant_weights())
        if weights:
            pipe.hset(keys.tenant_weights(), mapping=weights)  # type: ignore[arg-type]
        pipe.execute()

    def expire_due(self, limit: int = 1000) -> int:
        """End queued jobs whose deadline passed (expire.lua); returns how many."""
        return int(self._scripts["expire"](keys=[], args=[time.time(), self.result_ttl_s, limit]))

    def tickets_missing(self, models: Iterable[str]) -> dict[str, int]:
        """Per model, queued jobs beyond the tickets waiting in its Celery queue (a ticket can be
        lost: the API died after its commit, the broker failed, a worker took one and died)."""
        names = list(models)
        pipe = self.redis.pipeline(transaction=False)
        for model in names:
            pipe.zcard(keys.pending(model))
            pipe.zcard(keys.suspects(model))
            pipe.llen(keys.model_queue(model))
        counts = pipe.execute()
        missing = {}
        for i, model in enumerate(names):
            queued, suspects, tickets = counts[3 * i : 3 * i + 3]
            if queued + suspects > tickets:
                missing[model] = queued + suspects - tickets
        return missing

    def take_lock(self, key: str, ttl_s: float) -> bool:
        """Hold `key` for ttl_s unless another worker holds it (extending our own hold)."""
        if self.redis.set(key, self.worker_name, nx=True, px=int(ttl_s * 1000)):
            return True
        if self.redis.get(key) == self.worker_name.encode():
            self.redis.pexpire(key, int(ttl_s * 1000))
            return True
        return False

    def emit_many(self, calls: Sequence[Emit]) -> list[tuple[int, int]]:
        """Append each attempt's events (emit.lua), all in one pipelined round trip; per call
        (code, the log's last seq): code 0 go on, 1 cancel requested, -1 fenced out, -2 the log
        lacks events the attempt wrote before."""
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            args: list[Any] = [
                keys.job_channel(call.job.id),
                call.fence,
                call.completion_tokens,
                "" if call.before is None else call.before,
                "" if call.seq_floor is None else call.seq_floor,
            ]
            for etype, data in call.events:
                args += [etype, data]
            self._scripts["emit"](keys=job_keys(call.job)[:2], args=args, client=pipe)
        return [(int(code), int(seq)) for code, seq in pipe.execute()]

    def finish(
        self, job: Job, fence: int, status: JobStatus, result: JobResult, cached_tokens: int = 0
    ) -> bool:
        """Write the final result unless the job already has one or another attempt owns it;
        with it, the attempt's latencies and tokens join the service's metrics."""
        now = time.time()
        args: list[Any] = [
            *channels(job.id, job.batch_id),
            now,
            self.result_ttl_s,
            fence,
            status.value,
            result.model_dump_json(),
        ]
        for name, increment in metrics.job_observations(job, result, now, cached_tokens):
            args += [name, increment]
        return bool(self._scripts["finish"](keys=job_keys(job), args=args))
