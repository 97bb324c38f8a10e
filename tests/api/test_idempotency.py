"""An Idempotency-Key is bound to its request: the same request again returns the first one's
batch, another request is 422, and a retry while the first is still creating it is 409 (never
404); the pending key lapses by itself when its creator dies."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from cli.stack import Stack, free_port
from jobs import keys
from jobs.store import IDEMPOTENCY_PENDING_TTL_S

DAVE_KEY = "dave-secret-key"
#: Jobs in a batch slow enough to create that a retry overlaps it (model `idle`: no worker).
SLOW_BATCH_JOBS = 10_000


def _dave_env(stack: Stack) -> dict[str, str]:
    keys_json = json.dumps({"dave": hashlib.sha256(DAVE_KEY.encode()).hexdigest()})
    # Room for a killed replica's admission (it lapses in minutes) beside the retry's batch.
    inflight = str(3 * SLOW_BATCH_JOBS)
    return dict(stack.env, TOKENQ_API_KEYS=keys_json, TOKENQ_MAX_INFLIGHT=inflight)


@pytest.fixture(scope="module")
def dave_api(stack: Stack) -> Iterator[str]:
    """A second API process on the same Redis, with a tenant of its own: its slow batches
    count against no other test's in-flight limit."""
    api = Stack(env=_dave_env(stack), log_dir=stack.log_dir)
    try:
        yield api.start_api("127.0.0.1", free_port())
    finally:
        api.stop()


@pytest.fixture
def dave(dave_api: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=dave_api, headers={"Authorization": f"Bearer {DAVE_KEY}"}, timeout=120
    ) as client:
        yield client


def _record(redis_client: redis.Redis, tenant: str, key: str) -> dict[str, Any] | None:
    raw = redis_client.get(keys.idempotency(tenant, key))
    return json.loads(raw) if raw else None


def _slow_batch() -> dict[str, Any]:
    jobs = [{"prompt": f"p{i}", "max_tokens": 1} for i in range(SLOW_BATCH_JOBS)]
    return {"model": "idle", "jobs": jobs}


def _post_in_thread(
    base_url: str, body: dict[str, Any], key: str, into: list[httpx.Response | Exception]
) -> threading.Thread:
    def post() -> None:
        try:
            into.append(
                httpx.post(
                    f"{base_url}/v1/batches",
                    json=body,
                    headers={"Authorization": f"Bearer {DAVE_KEY}", "Idempotency-Key": key},
                    timeout=120,
                )
            )
        except httpx.HTTPError as exc:
            into.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _wait_pending(redis_client: redis.Redis, key: str, done: threading.Thread) -> dict[str, Any]:
    """The pending record of dave's `key` once its creator has taken it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = _record(redis_client, "dave", key)
        if record is not None:
            return record
        assert done.is_alive(), "the first request ended before its key was seen"
        time.sleep(0.01)
    raise AssertionError("the first request never took its Idempotency-Key")


def test_a_retry_with_another_body_is_422(client: httpx.Client, redis_client: redis.Redis) -> None:
    # Given a batch made with a key
    body = {"model": "fake", "jobs": [{"prompt": "first", "max_tokens": 1}]}
    headers = {"Idempotency-Key": "bound-to-its-body"}
    first = client.post("/v1/batches", json=body, headers=headers)
    assert first.status_code == 202, first.text
    batches = redis_client.zcard(keys.tenant_batches("alice"))
    # When the key comes again with another body, or the same body and another query string
    other_body = {"model": "fake", "jobs": [{"prompt": "second", "max_tokens": 1}]}
    refused = [
        client.post("/v1/batches", json=other_body, headers=headers),
        client.post("/v1/batches", json=body, headers=headers, params={"priority": "high"}),
    ]
    # Then each is 422 in tokenq's error shape, and no batch was made
    for response in refused:
        assert response.status_code == 422, response.text
        assert response.json() == {
            "error": {
                "message": response.json()["error"]["message"],
                "type": "invalid_request_error",
                "param": "Idempotency-Key",
                "code": "idempotency_key_reused",
            }
        }
    assert redis_client.zcard(keys.tenant_batches("alice")) == batches
    # And the first request, sent again, still gets its batch
    again = client.post("/v1/batches", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_a_multipart_retry_with_a_new_boundary_returns_the_same_batch(
    client: httpx.Client,
) -> None:
    def upload(boundary: str) -> httpx.Response:
        content = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="model"\r\n\r\nfake\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
            '{"prompt": "multipart", "max_tokens": 1}\r\n'
            f"--{boundary}--\r\n"
        )
        return client.post(
            "/v1/batches",
            content=content.encode(),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Idempotency-Key": "multipart-retry",
            },
        )

    # Given an upload, When a client retries it with a boundary of its own (curl -F, httpx do)
    first, again = upload("a1b2c3d4e5"), upload("f6e5d4c3b2a1")
    # Then the retry is the same request: it gets the first one's batch
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]


def test_a_failed_request_gives_its_key_back(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "first-try-was-invalid"}
    invalid = client.post(
        "/v1/batches", json={"jobs": [{"prompt": "x", "temperature": 9}]}, headers=headers
    )
    assert invalid.status_code == 400, invalid.text
    fixed = client.post(
        "/v1/batches", json={"model": "fake", "jobs": [{"prompt": "x"}]}, headers=headers
    )
    assert fixed.status_code == 202, fixed.text


def test_a_retry_while_the_first_is_creating_is_409_never_404(
    dave: httpx.Client, dave_api: str, redis_client: redis.Redis
) -> None:
    # Given a first request still creating a batch of 10,000 jobs
    key = "slow-batch"
    body = _slow_batch()
    first: list[httpx.Response | Exception] = []
    thread = _post_in_thread(dave_api, body, key, first)
    try:
        record = _wait_pending(redis_client, key, thread)
        # Then its key is pending, with a TTL of its own (it lapses if its creator dies)
        assert record["state"] == "pending"
        ttl_ms = redis_client.pttl(keys.idempotency("dave", key))
        assert 0 < ttl_ms <= IDEMPOTENCY_PENDING_TTL_S * 1000
        # When the same request is retried while it runs
        retries = []
        while thread.is_alive():
            retries.append(dave.post("/v1/batches", json=body, headers={"Idempotency-Key": key}))
            if retries[-1].status_code == 200:
                break
    finally:
        thread.join(120)
    # Then every retry before it finished was 409 with Retry-After, none a 404
    assert isinstance(first[0], httpx.Response) and first[0].status_code == 202, first
    batch_id = first[0].json()["id"]
    busy = [r for r in retries if r.status_code != 200]
    assert busy, "no retry overlapped the first request"
    for response in busy:
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "idempotency_key_in_progress"
        assert int(response.headers["Retry-After"]) >= 1
    # And once it has finished, a retry gets its batch, kept as long as results are
    again = dave.post("/v1/batches", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["id"] == batch_id
    assert _record(redis_client, "dave", key) == {
        "state": "done",
        "sha256": record["sha256"],
        "batch_id": batch_id,
    }
    assert redis_client.ttl(keys.idempotency("dave", key)) > IDEMPOTENCY_PENDING_TTL_S
    assert dave.post(f"/v1/batches/{batch_id}/cancel").status_code == 200


def test_a_pending_key_lapses_when_its_creator_dies(
    stack: Stack, dave: httpx.Client, redis_client: redis.Redis
) -> None:
    # Given an API replica killed (SIGKILL) while it creates a batch under a key
    key = "creator-dies"
    body = _slow_batch()
    victim = Stack(env=_dave_env(stack), log_dir=stack.log_dir)
    try:
        first: list[httpx.Response | Exception] = []
        thread = _post_in_thread(victim.start_api("127.0.0.1", free_port()), body, key, first)
        record = _wait_pending(redis_client, key, thread)
        victim.stop("api", sig=signal.SIGKILL)
        thread.join(60)
    finally:
        victim.stop()
    assert isinstance(first[0], httpx.TransportError), first
    assert not redis_client.exists(keys.batch(record["batch_id"]))
    # When the request is retried on another replica, as Retry-After says
    statuses = []
    deadline = time.monotonic() + IDEMPOTENCY_PENDING_TTL_S + 60
    while time.monotonic() < deadline:
        response = dave.post("/v1/batches", json=body, headers={"Idempotency-Key": key})
        statuses.append(response.status_code)
        if response.status_code != 409:
            break
        time.sleep(int(response.headers["Retry-After"]))
    # Then it is refused (409) until the dead creator's key lapses, and then it makes the batch
    assert statuses[0] == 409 and set(statuses[:-1]) == {409}, statuses
    assert statuses[-1] == 202, response.text
    assert response.json()["id"] != record["batch_id"]
    assert dave.post(f"/v1/batches/{response.json()['id']}/cancel").status_code == 200
