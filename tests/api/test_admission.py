"""The in-flight limit is exact: admission checks and counts in one Redis step, and what was
admitted but never created is given back."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from cli.stack import Stack, free_port
from jobs import keys
from tests.conftest import create_openai_batch

CAROL_KEY = "carol-secret-key"
LIMIT = 60
#: Jobs a test left queued (model `idle` has no worker); cancelled after it.
PENDING: list[str] = []


@pytest.fixture(scope="module")
def carol_api(stack: Stack) -> Iterator[str]:
    """A second API process on the same Redis and workers, with an in-flight limit of 60 and a
    tenant of its own (so no other test's jobs count against it)."""
    env = dict(
        stack.env,
        TOKENQ_MAX_INFLIGHT=str(LIMIT),
        TOKENQ_API_KEYS=json.dumps({"carol": hashlib.sha256(CAROL_KEY.encode()).hexdigest()}),
    )
    api = Stack(env=env, log_dir=stack.log_dir)
    try:
        yield api.start_api("127.0.0.1", free_port())
    finally:
        api.stop()


@pytest.fixture
def carol(carol_api: str, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=carol_api, headers={"Authorization": f"Bearer {CAROL_KEY}"}, timeout=60
    ) as client:
        yield client
        for job_id in PENDING:
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        PENDING.clear()
        assert _inflight(redis_client) == 0  # cancelling counted them down


def _inflight(redis_client: redis.Redis) -> int:
    return int(redis_client.get(keys.tenant_inflight("carol")) or 0)


def test_150_concurrent_submits_admit_exactly_the_limit(
    carol: httpx.Client, carol_api: str, redis_client: redis.Redis
) -> None:
    assert _inflight(redis_client) == 0

    async def submit_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=carol_api,
            headers={"Authorization": f"Bearer {CAROL_KEY}"},
            timeout=60,
            limits=httpx.Limits(max_connections=150),
        ) as client:
            body = {"model": "idle", "prompt": "wait", "max_tokens": 1}
            return await asyncio.gather(*(client.post("/v1/jobs", json=body) for _ in range(150)))

    responses = asyncio.run(submit_all())
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    PENDING.extend(accepted)
    assert sorted({r.status_code for r in responses}) == [202, 429]
    assert len(accepted) == LIMIT
    assert _inflight(redis_client) == LIMIT
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["Retry-After"] and refused.json()["error"]["code"] == (
        "too_many_jobs_in_flight"
    )


def test_a_refused_batch_gives_back_what_it_was_admitted(
    carol: httpx.Client, redis_client: redis.Redis
) -> None:
    bad = [{"prompt": "a"}, {"prompt": "b", "temperature": 9}]
    response = carol.post("/v1/batches", params={"model": "idle"}, json=bad)
    assert response.status_code == 400, response.text
    assert _inflight(redis_client) == 0


def test_an_openai_batch_counts_only_its_good_lines(
    carol: httpx.Client, redis_client: redis.Redis
) -> None:
    line = {"method": "POST", "url": "/v1/completions"}
    lines = [
        {**line, "custom_id": "a", "body": {"model": "idle", "prompt": "x", "max_tokens": 1}},
        {**line, "custom_id": "b", "body": {"model": "idle", "prompt": "x", "max_tokens": 0}},
        {**line, "custom_id": "c", "body": {"model": "nope", "prompt": "x"}},
    ]
    batch = create_openai_batch(carol, "\n".join(json.dumps(x) for x in lines).encode())
    assert batch.status_code == 200, batch.text
    assert batch.json()["request_counts"]["failed"] == 2
    assert _inflight(redis_client) == 1
    jobs = redis_client.lrange(keys.batch_jobs(batch.json()["id"]), 0, -1)
    PENDING.extend(j.decode() for j in jobs)
