"""Faults: a worker SIGKILLed mid-job, a job whose generation raises."""

from __future__ import annotations

import signal

import httpx

from cli.stack import Stack
from tests.conftest import sse_events, submit, wait_for, wait_job


def test_worker_killed_mid_job_reruns_every_job_it_held_with_one_final_result(
    stack: Stack, client: httpx.Client
) -> None:
    # Given a worker with 3 slots whose unacked jobs become visible again 5 s after delivery
    stack.env.update(TOKENQ_JOB_TIME_LIMIT_S="4", TOKENQ_VISIBILITY_TIMEOUT_S="5")
    try:
        stack.start_worker("crashy", name="crashy-1")
        jobs = [
            submit(client, model="crashy", prompt=f"survive {i}", max_tokens=15) for i in range(3)
        ]
        for job in jobs:
            wait_for(
                lambda job=job: (
                    client.get(f"/v1/jobs/{job['id']}").json()["progress"]["completion_tokens"] >= 3
                ),
                60,
                "every job to be mid-run",
            )

        # When the whole worker process is SIGKILLed and another starts
        stack.stop("crashy-1", sig=signal.SIGKILL)
        assert all(client.get(f"/v1/jobs/{j['id']}").json()["status"] == "running" for j in jobs)
        stack.start_worker("crashy", name="crashy-2")

        # Then every job is redelivered, runs again from a reset, and has one final result
        done = [wait_job(client, job["id"], timeout_s=90) for job in jobs]
    finally:
        stack.stop("crashy-2")
        for name in ("TOKENQ_JOB_TIME_LIMIT_S", "TOKENQ_VISIBILITY_TIMEOUT_S"):
            stack.env.pop(name, None)
    for job in done:
        assert job["status"] == "succeeded"
        assert job["attempt"] == 2
        assert job["text"] == "".join(f" tok{n}" for n in range(15))
        events = sse_events(client, job["urls"]["events"])
        types = [e["type"] for e in events]
        assert types.count("reset") == 1 and types.count("done") == 1
        after_reset = events[types.index("reset") :]
        assert (
            "".join(e["data"]["text"] for e in after_reset if e["type"] == "token") == job["text"]
        )


def test_a_job_that_raises_fails_with_its_error_and_the_worker_goes_on(
    client: httpx.Client,
) -> None:
    failed = wait_job(
        client, submit(client, model="fake", prompt="[[fail]] now", max_tokens=10)["id"]
    )
    assert failed["status"] == "failed" and failed["finish_reason"] == "error"
    assert failed["error"] == {"type": "EngineError", "message": "fake engine failed on purpose"}
    assert failed["text"] == " tok0 tok1"  # the partial text is kept
    events = sse_events(client, failed["urls"]["events"])
    assert events[-1]["type"] == "error"
    ok = wait_job(client, submit(client, model="fake", prompt="next", max_tokens=3)["id"])
    assert ok["status"] == "succeeded"
