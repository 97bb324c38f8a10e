"""Nothing accepted is lost, with default settings: a worker host dies, Redis is killed and
restarts on its AOF, Redis pauses or refuses writes, a job kills its worker every time, the API
dies half-way through a batch. Each test asserts every accepted job ends with exactly one final
result, no innocent job fails, nothing answers 500, and nothing is left behind."""

from __future__ import annotations

import threading
import time

import httpx
import redis

from jobs import keys
from jobs.store import RESERVATION_TTL_S, STAGING_TTL_S
from tests.conftest import sse_events, wait_for
from tests.faults.conftest import (
    FaultStack,
    assert_nothing_left,
    assert_one_final_result,
    elapsed_since,
    expected_text,
    log_events,
    text_after_last_reset,
    wait_batch,
    worker_name,
)


def _batch(client: httpx.Client, prompts: list[str], max_tokens: int, model: str = "f") -> str:
    jobs = [{"prompt": p, "max_tokens": max_tokens} for p in prompts]
    response = client.post("/v1/batches", json={"model": model, "jobs": jobs})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _job_ids(r: redis.Redis, batch_id: str) -> list[str]:
    return [i.decode() for i in r.lrange(keys.batch_jobs(batch_id), 0, -1)]


def _running_on(r: redis.Redis, job_ids: list[str], worker: str) -> list[str]:
    pipe = r.pipeline()
    for job_id in job_ids:
        pipe.hmget(keys.job(job_id), "status", "worker")
    return [
        job_id
        for job_id, (status, name) in zip(job_ids, pipe.execute(), strict=True)
        if status == b"running" and name == worker.encode()
    ]


def _assert_all_succeeded(r: redis.Redis, job_ids: list[str], max_tokens: int) -> None:
    for job_id in job_ids:
        events = assert_one_final_result(r, job_id)
        assert r.hget(keys.job(job_id), "status") == b"succeeded", job_id
        assert text_after_last_reset(events) == expected_text(max_tokens), job_id


def test_a_dead_worker_hosts_jobs_run_again_elsewhere_within_a_lease(
    faults: FaultStack,
) -> None:
    # Given two workers of a model and a batch of 200 jobs running on both
    faults.start({"w1": "f", "w2": "f"})
    r = faults.redis()
    with faults.client() as client:
        batch_id = _batch(client, [f"job {i}" for i in range(200)], max_tokens=30)
        ids = _job_ids(r, batch_id)
        doomed = worker_name(faults.worker("w1"))
        held = wait_for(lambda: len(_running_on(r, ids, doomed)) >= 8 and ids, 60, "w1 busy")
        lost = _running_on(r, held, doomed)

        # When the whole worker process is SIGKILLed mid-batch
        faults.kill("w1")
        killed_at = time.monotonic()

        # Then the model is served by one worker once the dead one's heartbeat lapses,
        def served_by() -> int:
            return int(client.get("/v1/models/f").json()["workers"])

        wait_for(lambda: served_by() == 1, 60, "the dead worker's heartbeat to lapse")
        # and its jobs go back in line and the other worker finishes every job of the batch
        batch = wait_batch(client, batch_id, 120)
        print(f"worker host loss: all 200 final {elapsed_since(killed_at)}s after the kill")
    assert batch["status"] == "completed"
    assert batch["request_counts"]["completed"] == 200
    _assert_all_succeeded(r, ids, 30)
    for job_id in lost:
        assert r.hget(keys.job(job_id), "attempt") == b"2", job_id
        assert [e["type"] for e in log_events(r, job_id)].count("reset") == 1
    with faults.client() as client:  # a reader of the stream sees the restart and the text
        events = sse_events(client, f"/v1/jobs/{lost[0]}/events")
    types = [e["type"] for e in events]
    assert types.count("reset") == 1 and types[-1] == "done"
    assert text_after_last_reset(events) == expected_text(30)
    assert_nothing_left(r)


def test_redis_killed_and_restarted_on_its_aof_loses_no_accepted_job(
    faults: FaultStack,
) -> None:
    # Given a batch running on a worker
    faults.start({"w1": "f"})
    with faults.client() as client:
        batch_id = _batch(client, [f"job {i}" for i in range(40)], max_tokens=50)
        ids = _job_ids(faults.redis(), batch_id)
        wait_for(
            lambda: (
                client.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] >= 8
            ),
            60,
            "some jobs to finish",
        )
        time.sleep(1.5)  # the batch's records are older than AOF everysec's window

        # When Redis is killed -9, stays down a while, and restarts on its AOF
        statuses: list[int] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                for method, path in (("GET", f"/v1/batches/{batch_id}"), ("POST", "/v1/jobs")):
                    body = {"model": "idle", "prompt": "x", "max_tokens": 1}
                    response = client.request(method, path, json=body if method == "POST" else None)
                    statuses.append(response.status_code)
                time.sleep(0.1)

        poller = threading.Thread(target=poll)
        faults.kill_redis()
        poller.start()
        try:
            time.sleep(3)
            faults.start_redis()
            restarted_at = time.monotonic()
            batch = wait_batch(client, batch_id, 120)
            print(f"redis kill -9: all final {elapsed_since(restarted_at)}s after the restart")
        finally:
            stop.set()
            poller.join()

    # Then nothing answered 500 (503 while Redis was away) and every job ended once
    assert 500 not in statuses and 503 in statuses, sorted(set(statuses))
    assert batch["status"] == "completed"
    r = faults.redis()
    _assert_all_succeeded(r, ids, 50)
    with faults.client() as client:  # the jobs accepted while polling wait for no worker
        for job_id in r.zrange(keys.pending("idle"), 0, -1):
            assert client.post(f"/v1/jobs/{job_id.decode()}/cancel").status_code == 200
    assert_nothing_left(r, models=("f", "idle"))


def test_redis_paused_or_refusing_writes_delays_jobs_and_loses_no_token(
    faults: FaultStack,
) -> None:
    faults.start({"w1": "f"})
    r = faults.redis()
    with faults.client() as client:
        batch_id = _batch(client, [f"job {i}" for i in range(16)], max_tokens=150)
        ids = _job_ids(r, batch_id)
        wait_for(lambda: len(_running_on(r, ids, worker_name(faults.worker("w1")))) == 8, 60)

        # When Redis pauses every write for 8 s
        r.execute_command("CLIENT", "PAUSE", 8000, "WRITE")
        time.sleep(8.5)
        # and then refuses writes for 5 s (out of memory under noeviction)
        r.config_set("maxmemory", "1")
        try:
            time.sleep(1)
            refused = client.post("/v1/jobs", json={"model": "f", "prompt": "x"})
            time.sleep(4)
        finally:
            r.config_set("maxmemory", "0")

        # Then the API said so with 503, and every job ends once with its whole text
        assert refused.status_code == 503, refused.text
        batch = wait_batch(client, batch_id, 120)
    assert batch["request_counts"]["completed"] == 16
    _assert_all_succeeded(r, ids, 150)
    assert_nothing_left(r)


def test_a_job_that_kills_its_worker_fails_alone_after_its_attempts(
    faults: FaultStack,
) -> None:
    # Given two workers and a batch with one job that SIGKILLs its worker every time it runs
    faults.start({"w1": "f", "w2": "f"})
    r = faults.redis()
    prompts = [f"job {i}" for i in range(22)]
    prompts.insert(5, "[[crash]] poison")
    kills = 0
    with faults.client() as client:
        batch_id = _batch(client, prompts, max_tokens=30)
        ids = _job_ids(r, batch_id)

        # When the workers are restarted each time they die (as systemd or docker would)
        def ended() -> bool:
            nonlocal kills
            for name in ("w1", "w2"):
                if faults.worker(name).poll() is not None:
                    kills += 1
                    faults.kill(name)
                    faults.start_worker(name)
            status = client.get(f"/v1/batches/{batch_id}").json()["status"]
            return status == "completed"

        wait_for(ended, 240, "the batch to end")

    # Then only the poison job failed, after exactly the configured 3 attempts
    poison, innocent = ids[5], ids[:5] + ids[6:]
    assert assert_one_final_result(r, poison)[-1]["type"] == "error"
    record = r.hgetall(keys.job(poison))
    assert record[b"status"] == b"failed" and record[b"attempt"] == b"3"
    assert b"AttemptsExceededError" in record[b"result"]
    assert kills == 3
    _assert_all_succeeded(r, innocent, 30)
    assert_nothing_left(r)


def test_an_api_killed_mid_batch_leaves_no_half_batch_and_no_count(faults: FaultStack) -> None:
    # Given a batch large enough that writing it takes a while
    faults.start({})
    r = faults.redis()
    before = r.dbsize()
    jobs = [{"prompt": f"p{i}", "max_tokens": 1} for i in range(40_000)]
    failed: list[BaseException] = []

    def post() -> None:
        try:
            with faults.client() as client:
                client.post("/v1/batches", json={"model": "idle", "jobs": jobs}, timeout=120)
        except httpx.HTTPError as exc:
            failed.append(exc)

    sender = threading.Thread(target=post)
    sender.start()
    # When the API is SIGKILLed once it has written some of the jobs
    wait_for(lambda: r.dbsize() > before + 2000, 120, "the first jobs to be written")
    faults.restart_api()
    sender.join()

    # Then no batch exists, nothing is in line, and nothing counts against the tenant for good
    assert failed, "the request was answered, so the API was not killed mid-batch"
    staged = list(r.scan_iter(match=keys.batch("*"))) + list(r.scan_iter(match=keys.job("*")))
    assert [key for key in staged if r.type(key) == b"hash" and b"batch:" in key] == []
    assert r.zcard(keys.pending("idle")) == 0
    assert int(r.get(keys.tenant_inflight("anonymous")) or 0) == 0
    assert len(staged) > 2000 and all(0 < r.ttl(key) <= STAGING_TTL_S for key in staged)
    for _, lapses_at in r.zrange(keys.tenant_reservations("anonymous"), 0, -1, withscores=True):
        assert lapses_at <= time.time() + RESERVATION_TTL_S
    with faults.client() as client:  # and the tenant can submit again at once
        assert client.post("/v1/jobs", json={"model": "idle", "prompt": "x"}).status_code == 202
