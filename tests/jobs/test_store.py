"""The Lua-backed store on a real Redis: claims take jobs in line under leases and fence
attempts, lapsed leases put jobs back as suspects, results are written once.

Each test uses a model of its own (no worker serves it), so no real worker claims its jobs.
"""

from __future__ import annotations

import time
import uuid
from importlib import resources

import pytest
import redis

from jobs import keys
from jobs.models import (
    FinishReason,
    Job,
    JobResult,
    JobSpec,
    JobStatus,
    Lane,
    Priority,
    SamplingParams,
)
from jobs.store import Claim, Emit, WorkerStore, channels, job_keys

LEASE_S = 15


def _queued(
    store: WorkerStore,
    model: str,
    batch_id: str = "",
    tenant: str = "t",
    lane: Lane = Lane.INTERACTIVE,
    priority: Priority = Priority.NORMAL,
    expires_at: float | None = None,
) -> Job:
    """A job record in its model's line, written and committed as the API does."""
    job = Job(
        id=f"job_unit_{uuid.uuid4().hex}",
        tenant=tenant,
        status=JobStatus.QUEUED,
        spec=JobSpec(model=model, prompt="p", prompt_tokens=2, sampling=SamplingParams()),
        batch_id=batch_id or None,
        lane=lane,
        priority=priority,
        created_at=time.time(),
        expires_at=expires_at,
    )
    store.redis.hset(keys.job(job.id), mapping={**job.to_redis(), "seq": "1"})
    expires = "" if expires_at is None else repr(expires_at)
    store._scripts["commit"](
        keys=[keys.tenant_inflight(tenant), keys.tenant_reservations(tenant)],
        args=["r:1", "", tenant, job.id, model, lane.value, priority.value, expires],
    )
    return job


@pytest.fixture
def model() -> str:
    return f"unit-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_client: redis.Redis) -> WorkerStore:
    return WorkerStore(redis_client, result_ttl_s=60, max_attempts=2, worker_name="unit@test")


def _claim(store: WorkerStore, model: str, alone: bool = True) -> Claim:
    claim = store.claim_next(model, LEASE_S, may_run_suspect=alone)
    assert isinstance(claim, Claim), claim
    return claim


def _lapse(redis_client: redis.Redis, job: Job) -> None:
    """As if the attempt's worker died a lease ago."""
    redis_client.zadd(keys.leases(), {job.id: time.time() - 1})


def test_jobs_are_claimed_in_line_and_a_running_job_is_never_claimed_twice(
    store: WorkerStore, redis_client: redis.Redis, model: str
) -> None:
    first = _queued(store, model)
    second = _queued(store, model)
    assert _claim(store, model).job.id == first.id
    assert _claim(store, model).job.id == second.id
    # a duplicate ticket finds nothing: the running jobs are not in line any more
    assert store.claim_next(model, LEASE_S, may_run_suspect=True) == "empty"
    assert redis_client.zscore(keys.leases(), first.id) > time.time() + LEASE_S - 5
    assert store.get_job(first.id).status == JobStatus.RUNNING


def _order(store: WorkerStore, model: str, scheduling: str = "fair") -> list[str]:
    """The ids in the order a worker claims them, until none waits."""
    claimed = []
    while isinstance(claim := store.claim_next(model, LEASE_S, True, scheduling), Claim):
        claimed.append(claim.job.id)
    return claimed


def test_interactive_work_goes_first_then_priority_then_place(
    store: WorkerStore, model: str
) -> None:
    batch = [_queued(store, model, lane=Lane.BATCH).id for _ in range(3)]
    urgent = _queued(store, model, lane=Lane.BATCH, priority=Priority.HIGH).id
    interactive = _queued(store, model).id
    low = _queued(store, model, priority=Priority.LOW).id
    assert _order(store, model) == [interactive, low, urgent, *batch]


def test_tenants_share_a_lane_by_weight_whoever_came_first(
    store: WorkerStore, redis_client: redis.Redis, model: str
) -> None:
    first = [_queued(store, model, tenant="a", lane=Lane.BATCH).id for _ in range(6)]
    later = [_queued(store, model, tenant="b", lane=Lane.BATCH).id for _ in range(3)]
    assert _order(store, model) == [
        first[0], later[0], first[1], later[1], first[2], later[2], *first[3:]
    ]  # fmt: skip
    # b weighs 2: it gets two jobs for each of a's
    redis_client.hset(keys.tenant_weights(), "b", 2)
    try:
        first = [_queued(store, model, tenant="a", lane=Lane.BATCH).id for _ in range(3)]
        later = [_queued(store, model, tenant="b", lane=Lane.BATCH).id for _ in range(4)]
        order = _order(store, model)
    finally:
        redis_client.hdel(keys.tenant_weights(), "b")
    assert order == [first[0], later[0], later[1], first[1], later[2], later[3], first[2]]


def test_fifo_scheduling_takes_the_oldest_job_whatever_its_lane(
    store: WorkerStore, model: str
) -> None:
    jobs = [
        _queued(store, model, tenant="a", lane=Lane.BATCH).id,
        _queued(store, model, tenant="b").id,
        _queued(store, model, tenant="a", priority=Priority.HIGH).id,
    ]
    assert _order(store, model, "fifo") == jobs
    assert _order(store, model) == []  # nothing left in the lanes either


def _position(store: WorkerStore, job_id: str, scheduling: str = "fair") -> int | None:
    reply = store._scripts["position"](keys=[], args=[job_id, time.time(), scheduling])
    return int(reply[0]) if reply else None


@pytest.mark.parametrize("scheduling", ["fair", "fifo"])
def test_a_queued_jobs_position_is_how_many_start_before_it(
    store: WorkerStore, redis_client: redis.Redis, model: str, scheduling: str
) -> None:
    """Lanes, priorities, and tenants of one lane by weight (b weighs 2): each job's position
    is the number of jobs claimed before it, in the order claim_next.lua really takes them."""
    redis_client.hset(keys.tenant_weights(), "b", 2)
    try:
        ids = [_queued(store, model, tenant="a", lane=Lane.BATCH).id for _ in range(5)]
        ids += [_queued(store, model, tenant="b", lane=Lane.BATCH).id for _ in range(6)]
        ids += [_queued(store, model, tenant="c", lane=Lane.BATCH).id for _ in range(2)]
        ids += [_queued(store, model, tenant="c", priority=Priority.LOW).id for _ in range(2)]
        ids += [_queued(store, model, tenant="a").id for _ in range(3)]
        positions = {job_id: _position(store, job_id, scheduling) for job_id in ids}
        order = _order(store, model, scheduling)
    finally:
        redis_client.hdel(keys.tenant_weights(), "b")
    assert sorted(order) == sorted(ids)
    assert positions == {job_id: order.index(job_id) for job_id in ids}
    assert _position(store, ids[0], scheduling) is None  # running: no longer in line


def test_claims_are_counted_as_the_service_rate(store: WorkerStore, model: str) -> None:
    waiting = [_queued(store, model) for _ in range(4)]
    for _ in range(3):
        _claim(store, model)
    reply = store._scripts["position"](keys=[], args=[waiting[3].id, time.time(), "fair"])
    position, claims, span = int(reply[0]), int(reply[1]), float(reply[2])
    assert (position, claims) == (0, 3)
    assert 60 <= span <= 70


def test_a_job_past_its_deadline_expires_and_never_starts(store: WorkerStore, model: str) -> None:
    late = _queued(store, model, expires_at=time.time() - 1)
    on_time = _queued(store, model, expires_at=time.time() + 3600)
    assert store.expire_due() >= 1
    assert store.get_job(late.id).status == JobStatus.EXPIRED
    assert _order(store, model) == [on_time.id]


def test_final_result_is_written_once_and_stale_attempts_are_fenced(
    store: WorkerStore, redis_client: redis.Redis, model: str
) -> None:
    job = _queued(store, model)
    first = _claim(store, model).fence
    _lapse(redis_client, job)
    assert store.requeue_expired() == {model: 1}
    second = _claim(store, model)  # the job went back in line as a suspect
    assert (first, second.fence, second.suspect) == (1, 2, True)
    stale = Emit(job, first, 1, [("token", '{"text":"x","n":1}')])
    fresh = Emit(job, second.fence, 1, [("token", '{"text":"y","n":1}')])
    assert [code for code, _ in store.emit_many([stale, fresh])] == [-1, 0]
    result = JobResult(text="y", finish_reason=FinishReason.STOP)
    assert store.finish(job, first, JobStatus.SUCCEEDED, result) is False
    assert store.finish(job, second.fence, JobStatus.SUCCEEDED, result) is True
    assert store.finish(job, second.fence, JobStatus.FAILED, result) is False
    assert store.get_job(job.id).status == JobStatus.SUCCEEDED
    assert redis_client.zscore(keys.leases(), job.id) is None
    assert store.renew(model, LEASE_S, "{}", [(job.id, second.fence)]) == [job.id]


def test_a_suspect_waits_for_a_worker_that_runs_nothing_else(
    store: WorkerStore, redis_client: redis.Redis, model: str
) -> None:
    suspect = _queued(store, model)
    _claim(store, model)
    _lapse(redis_client, suspect)
    store.requeue_expired()
    healthy = _queued(store, model)
    # a busy worker is told to drain first (and only one worker drains for the model)
    assert store.claim_next(model, LEASE_S, may_run_suspect=False) == "drain"
    other = WorkerStore(redis_client, 60, 2, "other@test")
    assert _claim(other, model, alone=False).job.id == healthy.id
    claim = _claim(store, model, alone=True)
    assert (claim.job.id, claim.suspect) == (suspect.id, True)
    assert redis_client.get(keys.drainer(model)) is None


def test_attempts_are_capped(store: WorkerStore, redis_client: redis.Redis, model: str) -> None:
    job = _queued(store, model)
    for _ in range(2):
        _claim(store, model)
        _lapse(redis_client, job)
        store.requeue_expired()
    final = store.get_job(job.id)
    assert final.status == JobStatus.FAILED
    assert final.attempt == 2
    assert final.result.error.type == "AttemptsExceededError"
    assert store.claim_next(model, LEASE_S, may_run_suspect=True) == "empty"


def test_a_log_that_lost_its_tail_is_noticed(
    store: WorkerStore, redis_client: redis.Redis, model: str
) -> None:
    job = _queued(store, model)
    fence = _claim(store, model).fence
    [(code, seq)] = store.emit_many([Emit(job, fence, 2, [("token", '{"text":"ab","n":2}')])])
    assert code == 0
    # As if Redis came back from an AOF without that write: the attempt wrote 2 tokens before
    redis_client.hset(keys.job(job.id), "completion_tokens", 0)
    [(code, _)] = store.emit_many([Emit(job, fence, 3, [("t", "{}")], before=2)])
    assert code == -2
    [(code, resynced)] = store.emit_many(
        [Emit(job, fence, 3, [("reset", "{}")], before=None, seq_floor=seq + 10)]
    )
    assert code == 0 and resynced == seq + 11


def test_lua_key_names_agree_with_jobs_keys(
    store: WorkerStore, redis_client: redis.Redis, model: str
) -> None:
    lua = resources.files("jobs").joinpath("lua")
    source = lua.joinpath("_lib.lua").read_text() + (
        "\nlocal k, chan, bchan = keys_of(ARGV[1])\n"
        "return {k[1], k[2], k[3], k[4], k[5], k[6], chan, bchan, pending_key(ARGV[2]),"
        " suspects_key(ARGV[2]), LEASES, DEADLINES, lane_key(ARGV[2], 'batch', 'low'),"
        " METRICS, tenant_jobs_key('t'), claims_key(ARGV[2])}"
    )
    script = redis_client.register_script(source)
    for batch_id in ("", "batch_unit"):
        job = _queued(store, model, batch_id=batch_id)
        names = [n.decode() for n in script(keys=[], args=[job.id, model])]
        expected = job_keys(job) + [c or "" for c in channels(job.id, job.batch_id)]
        expected += [keys.pending(model), keys.suspects(model), keys.leases(), keys.deadlines()]
        expected += [keys.lane(model, "batch", "low")]
        expected += [keys.metrics(), keys.tenant_jobs("t"), keys.claim_rate(model)]
        assert names == expected
