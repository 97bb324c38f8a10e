"""Cancel: a queued job never starts, a running one stops within a token, a finished one is 409."""

from __future__ import annotations

import httpx

from tests.conftest import sse_events, submit, wait_for, wait_job


def _progress(client: httpx.Client, job_id: str) -> int:
    return client.get(f"/v1/jobs/{job_id}").json()["progress"]["completion_tokens"]


def test_cancel_queued_and_running_jobs(client: httpx.Client) -> None:
    # Given a long job occupying the one slow worker, and a second job queued behind it
    running = submit(client, model="slow", prompt="long", max_tokens=500)
    queued = submit(client, model="slow", prompt="behind", max_tokens=5)
    wait_for(lambda: _progress(client, running["id"]) >= 3, 30, "the first job to generate")

    # When the queued one is cancelled, it is final at once
    response = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"

    # And when the running one is cancelled, it stops within a token, keeping its partial text
    response = client.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 200
    at_cancel = response.json()["progress"]["completion_tokens"]
    done = wait_job(client, running["id"])
    assert done["status"] == "cancelled" and done["finish_reason"] == "cancelled"
    assert at_cancel <= done["usage"]["completion_tokens"] <= at_cancel + 2
    assert done["text"].startswith(" tok0 tok1 tok2")

    # Then the queued job never started, even after the worker freed up
    after = submit(client, model="slow", prompt="later", max_tokens=1)
    assert wait_job(client, after["id"])["status"] == "succeeded"
    never = client.get(f"/v1/jobs/{queued['id']}").json()
    assert never["status"] == "cancelled" and never["started_at"] is None and never["attempt"] == 0
    events = sse_events(client, never["urls"]["events"])
    assert [e["data"]["status"] for e in events if e["type"] == "status"] == ["queued", "cancelled"]


def test_cancel_stops_the_real_model_mid_generation(client: httpx.Client) -> None:
    # Greedy, so every run is the same: this prompt goes on for hundreds of tokens. (Sampled at
    # temperature 0.7, a story prompt sometimes ended at once with end-of-sequence.)
    job = submit(
        client,
        prompt="Once upon a time, in a small village by the sea,",
        max_tokens=1500,
        temperature=0,
    )
    state = wait_for(
        lambda: (
            (j := client.get(f"/v1/jobs/{job['id']}").json())["progress"]["completion_tokens"] >= 5
            or j["status"] != "running"
            and j["status"] != "queued"
            and j
        ),
        60,
        "tokens from the real model",
    )
    assert state is True, f"the job ended before it could be cancelled: {state}"
    at_cancel = client.post(f"/v1/jobs/{job['id']}/cancel").json()["progress"]["completion_tokens"]
    done = wait_job(client, job["id"])
    assert done["status"] == "cancelled"
    assert at_cancel <= done["usage"]["completion_tokens"] <= at_cancel + 2
    assert done["text"]


def test_cancelling_a_finished_job_is_409(client: httpx.Client) -> None:
    job = wait_job(client, submit(client, model="fake", prompt="quick", max_tokens=2)["id"])
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_finished"
