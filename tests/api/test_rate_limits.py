"""Per-tenant rate limits (requests and tokens per minute, OpenAI's x-ratelimit-* headers, 429 with
Retry-After; reserved tokens given back when a job ends) and back-pressure on a model's queue
depth (503 overloaded for interactive work, batches still accepted). A second API process with
its own tenants and limits, on the session's Redis and workers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from cli.stack import Stack, free_port

#: erin's limits; frank has none, for the queue-depth test.
RPM, TPM, DEPTH = 4, 250, 3
KEYS = {"erin": "erin-secret-key", "frank": "frank-secret-key"}


@pytest.fixture(scope="module")
def limited_api(stack: Stack) -> Iterator[str]:
    env = dict(
        stack.env,
        TOKENQ_API_KEYS=json.dumps(
            {t: hashlib.sha256(k.encode()).hexdigest() for t, k in KEYS.items()}
        ),
        TOKENQ_TENANT_LIMITS=json.dumps({"erin": {"rpm": RPM, "tpm": TPM}}),
        TOKENQ_MAX_QUEUE_DEPTH=str(DEPTH),
    )
    api = Stack(env=env, log_dir=stack.log_dir)
    try:
        yield api.start_api("127.0.0.1", free_port())
    finally:
        api.stop()


def _client(base: str, tenant: str) -> httpx.Client:
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=60
    )


def test_tokens_reserved_are_given_back_when_a_job_ends(limited_api: str) -> None:
    with _client(limited_api, "erin") as erin:
        # A job that waits (no worker serves "idle") holds its prompt + max_tokens
        first = erin.post("/v1/jobs", json={"model": "idle", "prompt": "x", "max_tokens": 200})
        assert first.status_code == 202, first.text
        assert first.headers["x-ratelimit-limit-tokens"] == str(TPM)
        assert int(first.headers["x-ratelimit-remaining-tokens"]) < TPM - 200
        # so a second one does not fit in the minute,
        refused = erin.post("/v1/jobs", json={"model": "idle", "prompt": "x", "max_tokens": 200})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "x-ratelimit-reset-tokens" in refused.headers
        # until the first ends without generating: its unused tokens come back
        assert erin.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
        again = erin.post("/v1/jobs", json={"model": "idle", "prompt": "x", "max_tokens": 200})
        assert again.status_code == 202, again.text
        assert erin.post(f"/v1/jobs/{again.json()['id']}/cancel").status_code == 200
        # and a request larger than the whole minute's tokens says so
        huge = erin.post("/v1/jobs", json={"model": "idle", "prompt": "x", "max_tokens": TPM + 1})
        assert huge.status_code == 429 and "lower max_tokens" in huge.json()["error"]["message"]


def test_requests_per_minute_are_counted_on_every_surface(limited_api: str) -> None:
    with _client(limited_api, "erin") as erin:
        statuses, remaining = [], []
        for _ in range(RPM + 1):
            response = erin.post(
                "/v1/completions", json={"model": "fake", "prompt": "hi", "max_tokens": 1}
            )
            statuses.append(response.status_code)
            remaining.append(response.headers.get("x-ratelimit-remaining-requests"))
        # some of the minute went in the other test; the count goes down to a 429, never past it
        assert 429 in statuses and statuses.index(429) <= RPM
        assert all(s == 200 for s in statuses[: statuses.index(429)])
        limited = erin.post(
            "/v1/completions", json={"model": "fake", "prompt": "hi", "max_tokens": 1}
        )
        assert limited.status_code == 429
        assert limited.json()["error"]["type"] == "rate_limit_error"  # OpenAI's error shape
        assert limited.headers["x-ratelimit-limit-requests"] == str(RPM)
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_deep_queue_refuses_interactive_work_and_takes_batches(limited_api: str) -> None:
    with _client(limited_api, "frank") as frank:
        created, refused = [], None
        for _ in range(DEPTH + 1):  # "idle" has no worker: its line only grows
            response = frank.post(
                "/v1/jobs", json={"model": "idle", "prompt": "x", "max_tokens": 1}
            )
            if response.status_code == 503:
                refused = response
                break
            assert response.status_code == 202, response.text
            created.append(response.json()["id"])
        assert refused is not None, "the queue depth limit never refused"
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["Retry-After"]) > 0
        batch = frank.post(
            "/v1/batches", json={"model": "idle", "jobs": [{"prompt": "x", "max_tokens": 1}]}
        )
        assert batch.status_code == 202, batch.text
        assert frank.post(f"/v1/batches/{batch.json()['id']}/cancel").status_code == 200
        for job_id in created:
            assert frank.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        assert "x-ratelimit-limit-requests" not in refused.headers  # frank has no limits
