"""Tenancy: one key never sees, streams, or cancels another key's jobs (404, as if missing)."""

from __future__ import annotations

import httpx

from tests.conftest import submit


def test_another_tenant_gets_404_everywhere(client: httpx.Client, bob: httpx.Client) -> None:
    job = submit(client, model="fake", prompt="alice's", max_tokens=3)
    batch = client.post("/v1/batches", json={"model": "fake", "jobs": [{"prompt": "a"}]}).json()
    for path in (
        f"/v1/jobs/{job['id']}",
        f"/v1/jobs/{job['id']}/events",
        f"/v1/batches/{batch['id']}",
        f"/v1/batches/{batch['id']}/results",
        f"/v1/batches/{batch['id']}/events",
    ):
        response = bob.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
    assert bob.post(f"/v1/batches/{batch['id']}/cancel").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_missing_or_unknown_key_is_401(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as anonymous:
        response = anonymous.post("/v1/jobs", json={"prompt": "x"})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        response = anonymous.get("/v1/jobs/job_x", headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401
