"""Per-tenant storage quotas on uploaded files: counted and checked in one Redis step, given back
when a file is deleted or expires."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from cli.stack import Stack, free_port
from jobs import keys
from tests.conftest import wait_for

MAX_BYTES = 1000
MAX_FILES = 3
#: Files of the quota API expire after this (the least TOKENQ_RESULT_TTL_S allows).
FILE_TTL_S = 60
TENANTS = ("erin", "frank", "grace", "heidi", "ivan")

Clients = Callable[[str], httpx.Client]


def _key(tenant: str) -> str:
    return f"{tenant}-secret-key"


@pytest.fixture(scope="module")
def quota_api(stack: Stack) -> Iterator[str]:
    """A second API process on the same Redis with small storage quotas, short-lived files and
    tenants of its own (one per test, so no test's files count against another's)."""
    env = dict(
        stack.env,
        TOKENQ_MAX_TENANT_FILE_BYTES=str(MAX_BYTES),
        TOKENQ_MAX_TENANT_FILES=str(MAX_FILES),
        TOKENQ_RESULT_TTL_S=str(FILE_TTL_S),
        TOKENQ_API_KEYS=json.dumps(
            {t: hashlib.sha256(_key(t).encode()).hexdigest() for t in TENANTS}
        ),
    )
    api = Stack(env=env, log_dir=stack.log_dir)
    try:
        yield api.start_api("127.0.0.1", free_port())
    finally:
        api.stop()


@pytest.fixture
def tenant(quota_api: str) -> Iterator[Clients]:
    opened: list[httpx.Client] = []

    def open_client(name: str) -> httpx.Client:
        client = httpx.Client(
            base_url=quota_api, headers={"Authorization": f"Bearer {_key(name)}"}, timeout=60
        )
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def _upload(client: httpx.Client, size: int) -> httpx.Response:
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}\n'
    content = (line * (size // len(line) + 1))[:size]
    return client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )


def _stored(redis_client: redis.Redis, tenant: str) -> tuple[int, int]:
    """(files, bytes) the tenant's quota counts."""
    return (
        redis_client.zcard(keys.tenant_files(tenant)),
        int(redis_client.get(keys.tenant_file_bytes(tenant)) or 0),
    )


def test_a_file_larger_than_the_quota_is_413(tenant: Clients, redis_client: redis.Redis) -> None:
    response = _upload(tenant("erin"), MAX_BYTES + 1)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "file_too_large" and error["type"] == "invalid_request_error"
    assert str(MAX_BYTES) in error["message"]
    assert _stored(redis_client, "erin") == (0, 0)


def test_past_the_file_count_429_until_one_is_deleted(
    tenant: Clients, redis_client: redis.Redis
) -> None:
    frank, grace = tenant("frank"), tenant("grace")
    # Given a tenant with as many files as its quota allows
    ids = []
    for _ in range(MAX_FILES):
        upload = _upload(frank, 10)
        assert upload.status_code == 200, upload.text
        ids.append(upload.json()["id"])
    assert _stored(redis_client, "frank") == (MAX_FILES, 10 * MAX_FILES)
    # When it uploads one more
    refused = _upload(frank, 10)
    # Then it is 429 with a message that says why and a Retry-After until the first expires
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "storage_quota_exceeded" and error["type"] == "rate_limit_error"
    assert f"{MAX_FILES} files" in error["message"] and "DELETE /v1/files" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= FILE_TTL_S
    # And another tenant's quota is its own
    assert _upload(grace, 10).status_code == 200
    # When another tenant tries to delete one of its files, nothing is deleted
    assert grace.delete(f"/v1/files/{ids[0]}").status_code == 404
    # When it deletes one itself, the file is gone and its room given back
    deleted = frank.delete(f"/v1/files/{ids[0]}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": ids[0], "object": "file", "deleted": True}
    assert frank.get(f"/v1/files/{ids[0]}").status_code == 404
    assert frank.delete(f"/v1/files/{ids[0]}").status_code == 404
    assert _stored(redis_client, "frank") == (MAX_FILES - 1, 10 * (MAX_FILES - 1))
    assert _upload(frank, 10).status_code == 200


def test_concurrent_uploads_never_pass_the_byte_quota(
    quota_api: str, redis_client: redis.Redis
) -> None:
    # Given 10 uploads of 300 bytes at once against a quota of 1000 bytes
    async def upload_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=quota_api,
            headers={"Authorization": f"Bearer {_key('heidi')}"},
            timeout=60,
        ) as client:
            content = b"x" * 300
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/files",
                        files={"file": ("in.jsonl", content)},
                        data={"purpose": "batch"},
                    )
                    for _ in range(10)
                )
            )

    responses = asyncio.run(upload_all())
    # Then exactly 3 are stored and the others refused with 429
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [429] * 7, statuses
    assert _stored(redis_client, "heidi") == (3, 900)
    # And the quota's keys expire with the files they count
    assert 0 < redis_client.ttl(keys.tenant_files("heidi")) <= FILE_TTL_S + 2


def test_an_expired_file_gives_its_room_back(tenant: Clients, redis_client: redis.Redis) -> None:
    ivan = tenant("ivan")
    # Given a tenant whose stored bytes fill its quota
    first = _upload(ivan, MAX_BYTES)
    assert first.status_code == 200, first.text
    refused = _upload(ivan, 1)
    assert refused.status_code == 429, refused.text
    # When its file expires (TOKENQ_RESULT_TTL_S), as Retry-After said
    deadline = time.monotonic() + FILE_TTL_S + 30
    while time.monotonic() < deadline and refused.status_code == 429:
        time.sleep(int(refused.headers["Retry-After"]))
        refused = _upload(ivan, 1)
    # Then the next upload is stored, and only it is counted
    assert refused.status_code == 200, refused.text

    def gone() -> bool:
        return ivan.get(f"/v1/files/{first.json()['id']}").status_code == 404

    wait_for(gone, 10, "the expired file's keys to lapse")
    assert _stored(redis_client, "ivan") == (1, 1)
