"""Scheduling on the real stack: interactive work never waits behind a batch, tenants share a
model's slot by weight whoever came first, priorities order a tenant's work, deadlines expire
queued jobs. The "slow" fake model has one slot and takes 0.1 s a token, so the order in which
jobs start is the order the scheduler chose."""

from __future__ import annotations

from typing import Any

import httpx
import redis

from cli.stack import Stack, free_port
from jobs import keys
from tests.conftest import ALICE_KEY, submit, wait_for, wait_job


def _batch(client: httpx.Client, n: int, label: str, **fields: Any) -> dict[str, Any]:
    jobs = [{"prompt": f"{label} job", "max_tokens": 2} for _ in range(n)]
    response = client.post("/v1/batches", json={"model": "slow", "jobs": jobs, **fields})
    assert response.status_code == 202, response.text
    return response.json()


def _jobs(r: redis.Redis, batch_id: str) -> list[str]:
    return [i.decode() for i in r.lrange(keys.batch_jobs(batch_id), 0, -1)]


def _started(r: redis.Redis, job_ids: list[str]) -> dict[str, float]:
    pipe = r.pipeline()
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "started_at")
    return {j: float(t) for j, t in zip(job_ids, pipe.execute(), strict=True) if t}


def _cancel(client: httpx.Client, *batches: dict[str, Any]) -> None:
    for batch in batches:
        assert client.post(f"/v1/batches/{batch['id']}/cancel").status_code in (200, 409)


def test_an_interactive_job_starts_as_soon_as_the_slot_frees(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    # Given a batch of 40 jobs (about 8 s of work) queued on a one-slot model
    batch = _batch(client, 40, "bulk")
    try:
        # When a single job arrives after it
        job = wait_job(client, submit(client, model="slow", prompt="now", max_tokens=2)["id"])
        # Then it ran next: at most the batch jobs already claimed went before it
        started = _started(redis_client, _jobs(redis_client, batch["id"]))
        before = [t for t in started.values() if t < job["started_at"]]
        assert job["status"] == "succeeded" and job["lane"] == "interactive"
        assert len(before) <= 2, f"{len(before)} batch jobs started first"
    finally:
        _cancel(client, batch)


def test_a_second_tenants_batch_gets_its_share_at_once(
    client: httpx.Client, bob: httpx.Client, redis_client: redis.Redis
) -> None:
    # Given alice's batch queued first and bob's right after, same size and cost
    first = _batch(client, 30, "alice")
    second = _batch(bob, 30, "bob")
    try:
        alice, bob_jobs = _jobs(redis_client, first["id"]), _jobs(redis_client, second["id"])

        # When 12 jobs have started after bob's batch was accepted
        def twelve() -> list[tuple[float, str]] | None:
            after = [
                (t, "bob" if j in bob_jobs else "alice")
                for j, t in _started(redis_client, alice + bob_jobs).items()
                if t >= second["created_at"]
            ]
            return sorted(after) if len(after) >= 12 else None

        started = wait_for(twelve, 60, "12 jobs to start")
        # Then bob got half of them (equal weights), though alice came first
        owners = [who for _, who in started[:12]]
        assert 5 <= owners.count("bob") <= 7, owners
    finally:
        _cancel(client, first)
        _cancel(bob, second)


def test_a_high_priority_batch_goes_before_the_same_tenants_normal_one(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    normal = _batch(client, 30, "normal")
    urgent = _batch(client, 3, "urgent", priority="high")
    try:
        done = wait_for(
            lambda: (
                (b := client.get(f"/v1/batches/{urgent['id']}").json())["status"] == "completed"
                and b
            ),
            60,
            "the urgent batch",
        )
        started = _started(redis_client, _jobs(redis_client, normal["id"]))
        assert done["request_counts"]["completed"] == 3
        assert len(started) <= 5, f"{len(started)} normal jobs went first"
        urgent_job = client.get(f"/v1/jobs/{_jobs(redis_client, urgent['id'])[0]}").json()
        assert urgent_job["priority"] == "high" and urgent_job["lane"] == "batch"
    finally:
        _cancel(client, normal, urgent)


def test_a_job_still_queued_at_its_deadline_expires(client: httpx.Client) -> None:
    # A model with no worker: the job can only wait, and the reconciler ends it at its deadline
    job = submit(client, model="idle", prompt="too late", max_tokens=1, deadline_s=1)
    assert job["expires_at"] is not None
    ended = wait_job(client, job["id"], timeout_s=60)
    assert ended["status"] == "expired" and ended["started_at"] is None
    bad = client.post("/v1/jobs", json={"prompt": "x", "deadline_s": -1})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "deadline_s"


def test_openai_service_tier_is_a_priority(client: httpx.Client) -> None:
    body = {"model": "fake", "prompt": "hi", "max_tokens": 1, "service_tier": "flex"}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    job = client.get(f"/v1/jobs/{response.headers['X-Tokenq-Job-Id']}").json()
    assert job["priority"] == "low"


def test_a_batch_whose_window_runs_out_ends_expired(stack: Stack) -> None:
    # An API whose batches have a 2 s window (TOKENQ_BATCH_WINDOW_S; 24 h by default)
    api = Stack(env=dict(stack.env, TOKENQ_BATCH_WINDOW_S="2"), log_dir=stack.log_dir)
    try:
        base = api.start_api("127.0.0.1", free_port())
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ALICE_KEY}"}) as c:
            jobs = [{"prompt": "never runs", "max_tokens": 1}] * 3
            created = c.post("/v1/batches", json={"model": "idle", "jobs": jobs})
            assert created.status_code == 202, created.text
            batch_id = created.json()["id"]
            # Then the reconciler expires its jobs at the window, and the batch ends expired
            batch = wait_for(
                lambda: (b := c.get(f"/v1/batches/{batch_id}").json())["status"] == "expired" and b,
                60,
                "the batch to expire",
            )
            errors = c.get(f"/v1/batches/{batch_id}/errors").text.splitlines()
    finally:
        api.stop()
    assert batch["request_counts"]["expired"] == 3 and batch["expired_at"] is not None
    assert len(errors) == 3
