"""Redis reads and writes of jobs, batches and their event logs; Lua where a step must be atomic.

`AsyncStore` serves the API (redis.asyncio), `WorkerStore` the worker (blocking redis). Both use
the same scripts from jobs/lua/, each prefixed with _lib.lua.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis

from jobs import keys
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

#: Jobs written per pipeline round trip when creating a batch.
WRITE_CHUNK = 1000


def _script_source(name: str) -> str:
    lua = resources.files("jobs").joinpath("lua")
    return lua.joinpath("_lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


SCRIPT_NAMES = ("claim", "emit", "finish", "cancel", "admit")


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
        jobs: list[Job],
        batch: Batch | None = None,
        line_errors: Sequence[BatchLineError] = (),
        line_errors_ttl_s: int | None = None,
    ) -> None:
        """Write job records (and their batch) before anything is enqueued; the jobs were
        admitted first (admit() counted them in flight).

        Chunks go in MULTI/EXEC transactions so no chunk is half-written; the batch record is
        written last, so a batch id never points at missing jobs. `line_errors` are the batch's
        input lines that never became jobs (kept `line_errors_ttl_s`, past the batch's own end).
        """
        for start in range(0, len(jobs), WRITE_CHUNK):
            pipe = self.redis.pipeline(transaction=True)
            for job in jobs[start : start + WRITE_CHUNK]:
                record = job.to_redis()
                record["seq"] = "1"
                pipe.hset(keys.job(job.id), mapping=record)  # type: ignore[arg-type]
                pipe.xadd(
                    keys.job_events(job.id),
                    {"e": initial_event(job.status, job.created_at)},
                    id="1-0",
                )
            if batch is not None:
                pipe.rpush(
                    keys.batch_jobs(batch.id), *(j.id for j in jobs[start : start + WRITE_CHUNK])
                )
            await pipe.execute()
        if batch is not None:
            pipe = self.redis.pipeline(transaction=True)
            if line_errors:
                errors_key = keys.batch_line_errors(batch.id)
                lines: dict[str | bytes, str] = {
                    str(e.index): e.model_dump_json() for e in line_errors
                }
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
            pipe.zadd(keys.tenant_batches(batch.tenant), {batch.id: batch.created_at})
            await pipe.execute()

    async def inflight(self, tenant: str) -> int:
        """The tenant's jobs accepted and not yet final."""
        return int(await self.redis.get(keys.tenant_inflight(tenant)) or 0)

    async def admit(self, tenant: str, n: int, limit: int) -> int | None:
        """Count n more jobs in flight for the tenant unless that passes `limit`: None when
        admitted, else the count in flight now. Each admitted job is counted down when it ends
        (finish.lua, cancel.lua); jobs admitted and then not created must be release()d."""
        result = await self._scripts["admit"](keys=[keys.tenant_inflight(tenant)], args=[n, limit])
        return None if int(result) == -1 else int(result)

    async def release(self, tenant: str, n: int) -> None:
        """Give back n admitted jobs that were never created."""
        if n > 0:
            await self.redis.decrby(keys.tenant_inflight(tenant), n)

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
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.file_content(record.id), content, ex=ttl_s)
        pipe.hset(keys.file(record.id), mapping=record.to_redis())  # type: ignore[arg-type]
        pipe.expire(keys.file(record.id), ttl_s)
        await pipe.execute()

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

    async def claim_idempotency_key(self, tenant: str, key: str, batch_id: str) -> str | None:
        """Record key -> batch_id unless the key is taken; return the batch id it already names."""
        redis_key = keys.idempotency(tenant, key)
        if await self.redis.set(redis_key, batch_id, nx=True, ex=self.result_ttl_s):
            return None
        existing = await self.redis.get(redis_key)
        return existing.decode() if isinstance(existing, bytes) else existing

    async def release_idempotency_key(self, tenant: str, key: str) -> None:
        await self.redis.delete(keys.idempotency(tenant, key))


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

    def claim(self, job: Job) -> int | None:
        """Start a new attempt; its number is the fencing token. None: nothing to run."""
        result = self._scripts["claim"](
            keys=job_keys(job),
            args=[
                *channels(job.id, job.batch_id),
                time.time(),
                self.result_ttl_s,
                self.max_attempts,
                self.worker_name,
            ],
        )
        return int(result[1]) if result[0] == b"claimed" else None

    @staticmethod
    def _emit_call(
        job: Job, fence: int, completion_tokens: int, events: list[tuple[str, str]]
    ) -> dict[str, Any]:
        args: list[Any] = [keys.job_channel(job.id), fence, completion_tokens]
        for etype, data in events:
            args += [etype, data]
        return {"keys": job_keys(job)[:2], "args": args}

    def emit(
        self, job: Job, fence: int, completion_tokens: int, events: list[tuple[str, str]]
    ) -> int:
        """Append events in one round trip. 0: go on; 1: cancel requested; -1: fenced out."""
        return int(self._scripts["emit"](**self._emit_call(job, fence, completion_tokens, events)))

    def emit_many(self, batch: list[tuple[Job, int, int, list[tuple[str, str]]]]) -> list[int]:
        """emit() for several jobs in one pipelined round trip; one answer per job."""
        if len(batch) == 1:
            return [self.emit(*batch[0])]
        pipe = self.redis.pipeline(transaction=False)
        for call in batch:
            self._scripts["emit"](**self._emit_call(*call), client=pipe)
        return [int(answer) for answer in pipe.execute()]

    def finish(self, job: Job, fence: int, status: JobStatus, result: JobResult) -> bool:
        """Write the final result unless the job already has one or another attempt owns it."""
        written = self._scripts["finish"](
            keys=job_keys(job),
            args=[
                *channels(job.id, job.batch_id),
                time.time(),
                self.result_ttl_s,
                fence,
                status.value,
                result.model_dump_json(),
            ],
        )
        return bool(written)
