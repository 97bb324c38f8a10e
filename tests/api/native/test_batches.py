"""Bulk submission: JSON and JSONL, live counts over SSE, results in input order, idempotency."""

from __future__ import annotations

import json

import httpx
import redis

from jobs import keys
from tests.conftest import MAX_BATCH_JOBS, MAX_INFLIGHT, sse_events, wait_for


def _jsonl(items: list[dict]) -> bytes:
    return "\n".join(json.dumps(i) for i in items).encode()


def test_bulk_of_200_jobs_streams_counts_and_exports_results_in_order(client: httpx.Client) -> None:
    # Given 200 jobs uploaded as JSONL, each with its own custom_id
    items = [
        {"custom_id": f"req-{i}", "prompt": f"item {i}", "max_tokens": 5 + i % 4}
        for i in range(200)
    ]
    response = client.post(
        "/v1/batches",
        content=_jsonl(items),
        params={"model": "fake"},
        headers={"Content-Type": "application/jsonl"},
    )
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["object"] == "batch" and batch["status"] == "in_progress"
    assert batch["request_counts"] == {
        "total": 200,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "expired": 0,
    }

    # When we follow the batch's events to the end
    events = sse_events(client, batch["events_url"], timeout_s=180)

    # Then there is one job event per job, counts rise to 200, and the batch completes
    job_events = [e for e in events if e["type"] == "job"]
    assert len(job_events) == 200
    assert sorted(e["data"]["custom_id"] for e in job_events) == sorted(
        i["custom_id"] for i in items
    )
    assert job_events[-1]["data"]["counts"]["succeeded"] == 200
    assert events[-1]["type"] == "done" and events[-1]["data"]["status"] == "completed"
    final = client.get(f"/v1/batches/{batch['id']}").json()
    assert final["status"] == "completed"
    assert final["request_counts"]["completed"] == 200
    assert final["completed_at"] and final["output_file_id"] and final["error_file_id"] is None

    # And the results come back in input order with their custom_id and text
    lines = [json.loads(x) for x in client.get(final["results_url"]).text.splitlines()]
    assert [x["custom_id"] for x in lines] == [i["custom_id"] for i in items]
    for item, line in zip(items, lines, strict=True):
        assert line["status"] == "succeeded"
        assert line["response"]["usage"]["completion_tokens"] == item["max_tokens"]
        assert line["response"]["text"] == "".join(f" tok{n}" for n in range(item["max_tokens"]))
    assert client.get(final["errors_url"]).text == ""


def test_batch_as_json_array_json_object_and_multipart(client: httpx.Client) -> None:
    as_array = client.post(
        "/v1/batches", params={"model": "fake"}, json=[{"prompt": "a"}, {"prompt": "b"}]
    )
    as_object = client.post(
        "/v1/batches", json={"model": "fake", "jobs": [{"prompt": "c"}], "metadata": {"team": "x"}}
    )
    as_file = client.post(
        "/v1/batches",
        data={"model": "fake"},
        files={"file": ("jobs.jsonl", _jsonl([{"prompt": "d"}, {"prompt": "e"}, {"prompt": "f"}]))},
    )
    for response, total in ((as_array, 2), (as_object, 1), (as_file, 3)):
        assert response.status_code == 202, response.text
        assert response.json()["request_counts"]["total"] == total
        assert response.json()["model"] == "fake"
    assert as_object.json()["metadata"] == {"team": "x"}


def test_failed_jobs_go_to_the_error_file(client: httpx.Client) -> None:
    items = [
        {"custom_id": "ok", "prompt": "fine"},
        {"custom_id": "bad", "prompt": "[[fail]] please"},
    ]
    batch = client.post("/v1/batches", json={"model": "fake", "jobs": items}).json()
    events = sse_events(client, batch["events_url"])
    assert events[-1]["data"]["counts"] == {
        "total": 2,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
        "expired": 0,
    }
    errors = [json.loads(x) for x in client.get(batch["errors_url"]).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["bad"]
    assert errors[0]["error"]["type"] == "EngineError"
    exported = client.get(batch["results_url"])
    results = [json.loads(x) for x in exported.text.splitlines()]
    assert [r["custom_id"] for r in results] == ["ok"]
    # a browser saves them under the batch's name
    disposition = f'attachment; filename="{batch["id"]}-results.jsonl"'
    assert exported.headers["content-disposition"] == disposition


def test_retry_runs_only_the_failed_and_expired_jobs_again(
    client: httpx.Client, bob: httpx.Client, redis_client: redis.Redis
) -> None:
    # Given a finished batch with good jobs, failed ones and one that expired in line
    items = [{"custom_id": f"ok{i}", "prompt": "fine", "max_tokens": 3} for i in range(4)]
    items[1] = {"custom_id": "bad1", "prompt": "[[fail]] one", "max_tokens": 3}
    items.append({"custom_id": "bad2", "prompt": "[[fail]] two", "max_tokens": 3})
    items.append({"custom_id": "late", "prompt": "p", "max_tokens": 3, "model": "idle",
                  "deadline_s": 0.5})  # fmt: skip
    batch = client.post("/v1/batches", json={"model": "fake", "jobs": items}).json()
    assert client.post(f"/v1/batches/{batch['id']}/retry").status_code == 409  # still running
    done = wait_for(
        lambda: (
            (b := client.get(f"/v1/batches/{batch['id']}").json())["status"] == "completed" and b
        ),
        60,
        "the batch to end (its idle job expires)",
    )
    assert done["request_counts"] == {
        "total": 6, "completed": 3, "failed": 2, "cancelled": 0, "expired": 1
    }  # fmt: skip

    # When it is retried
    response = client.post(f"/v1/batches/{batch['id']}/retry")
    assert response.status_code == 202, response.text
    retry = response.json()

    # Then a new batch runs just those three, in their order, with their custom_ids
    assert retry["id"] != batch["id"] and retry["retry_of"] == batch["id"]
    assert retry["request_counts"]["total"] == 3
    ids = [i.decode() for i in redis_client.lrange(keys.batch_jobs(retry["id"]), 0, -1)]
    customs = [client.get(f"/v1/jobs/{i}").json()["custom_id"] for i in ids]
    assert customs == ["bad1", "bad2", "late"]
    for job_id in ids:
        client.post(f"/v1/jobs/{job_id}/cancel")  # `late` waits on `idle` for ever otherwise
    # and the original's good jobs did not run again: still one job each
    assert client.get(f"/v1/batches/{batch['id']}").json()["request_counts"]["completed"] == 3

    # A batch with nothing failed, and another tenant's batch, are refused
    clean = client.post("/v1/batches", json={"model": "fake", "jobs": items[:1]}).json()
    wait_for(
        lambda: client.get(f"/v1/batches/{clean['id']}").json()["status"] == "completed",
        60,
        "the clean batch",
    )
    nothing = client.post(f"/v1/batches/{clean['id']}/retry")
    assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "nothing_to_retry"
    assert bob.post(f"/v1/batches/{batch['id']}/retry").status_code == 404


def test_same_idempotency_key_returns_the_same_batch(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    body = {"model": "fake", "jobs": [{"prompt": "once"}]}
    headers = {"Idempotency-Key": "retry-safe-123"}
    first = client.post("/v1/batches", json=body, headers=headers)
    again = client.post("/v1/batches", json=body, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert redis_client.llen(keys.batch_jobs(first.json()["id"])) == 1


def test_ten_thousand_jobs_in_one_request_are_all_queued_then_cancelled(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    # Given 10,000 jobs for a model with no worker running, so they stay queued
    queue = keys.model_queue("idle")
    before = redis_client.llen(queue)
    items = [{"prompt": f"p{i}", "max_tokens": 1} for i in range(10_000)]
    response = client.post("/v1/batches", json={"model": "idle", "jobs": items}, timeout=120)
    assert response.status_code == 202, response.text
    batch = response.json()
    # Then every job has a record and a broker message
    assert redis_client.llen(keys.batch_jobs(batch["id"])) == 10_000
    assert redis_client.llen(queue) - before == 10_000
    # And with 10,000 in flight, more than the tenant's limit allows is refused, whole
    more = client.post(
        "/v1/batches", json={"model": "idle", "jobs": items[: MAX_INFLIGHT - 10_000 + 1]}
    )
    assert more.status_code == 429, more.text
    assert more.json()["error"]["code"] == "too_many_jobs_in_flight"
    assert int(more.headers["Retry-After"]) > 0
    # When the batch is cancelled, every queued job is cancelled at once and the batch ends
    cancelled = client.post(f"/v1/batches/{batch['id']}/cancel", timeout=120)
    assert cancelled.status_code == 200
    final = wait_for(
        lambda: (
            (b := client.get(f"/v1/batches/{batch['id']}").json())["status"] == "cancelled" and b
        ),
        30,
    )
    assert final["request_counts"]["cancelled"] == 10_000
    assert final["cancelled_at"] is not None
    # Then the cancelled jobs no longer count against the tenant
    assert (
        client.post("/v1/batches", json={"model": "fake", "jobs": items[:1001]}).status_code == 202
    )
    assert MAX_BATCH_JOBS > 10_000
