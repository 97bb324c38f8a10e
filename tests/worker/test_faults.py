"""A job whose generation raises fails with its error, and its worker goes on.

Worker deaths, Redis outages and poison jobs are in tests/faults/."""

from __future__ import annotations

import httpx

from tests.conftest import sse_events, submit, wait_job


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
