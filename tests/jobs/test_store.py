"""The Lua-backed store on a real Redis: claim fences attempts, results are written once."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from jobs.models import FinishReason, Job, JobResult, JobSpec, JobStatus, SamplingParams
from jobs.store import WorkerStore


def _job(redis_client: redis.Redis) -> Job:
    job = Job(
        id=f"job_unit_{uuid.uuid4().hex}",
        tenant="t",
        status=JobStatus.QUEUED,
        spec=JobSpec(model="fake", prompt="p", prompt_tokens=2, sampling=SamplingParams()),
        created_at=time.time(),
    )
    from jobs import keys

    redis_client.hset(keys.job(job.id), mapping={**job.to_redis(), "seq": "1"})
    return job


@pytest.fixture
def store(redis_client: redis.Redis) -> WorkerStore:
    return WorkerStore(redis_client, result_ttl_s=60, max_attempts=2, worker_name="unit@test")


def test_final_result_is_written_once_and_stale_attempts_are_fenced(
    store: WorkerStore, redis_client: redis.Redis
) -> None:
    job = _job(redis_client)
    first = store.claim(job)
    second = store.claim(job)  # a redelivery while the first attempt still runs
    assert (first, second) == (1, 2)
    assert store.emit(job, first, 1, [("token", '{"text":"x","n":1}')]) == -1  # fenced out
    assert store.emit(job, second, 1, [("token", '{"text":"y","n":1}')]) == 0
    result = JobResult(text="y", finish_reason=FinishReason.STOP)
    assert store.finish(job, first, JobStatus.SUCCEEDED, result) is False
    assert store.finish(job, second, JobStatus.SUCCEEDED, result) is True
    assert store.finish(job, second, JobStatus.FAILED, result) is False
    assert store.get_job(job.id).status == JobStatus.SUCCEEDED
    assert store.claim(job) is None  # a finished job is never run again


def test_attempts_are_capped(store: WorkerStore, redis_client: redis.Redis) -> None:
    job = _job(redis_client)
    assert store.claim(job) == 1 and store.claim(job) == 2
    assert store.claim(job) is None
    final = store.get_job(job.id)
    assert final.status == JobStatus.FAILED
    assert final.result.error.type == "AttemptsExceededError"
