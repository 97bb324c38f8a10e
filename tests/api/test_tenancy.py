"""Tenancy: one key never sees, streams, or cancels another key's jobs (404, as if missing)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cli.stack import Stack, free_port
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


@pytest.fixture(scope="module")
def keyless_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API process with no API keys (as `make run` starts it), on the session's Redis."""
    api = Stack(env={**stack.env, "TOKENQ_API_KEYS": "{}"}, log_dir=tmp_path_factory.mktemp("k"))
    try:
        yield api.start_api("127.0.0.1", free_port())
    finally:
        api.stop()


def test_keyless_mode_refuses_foreign_hosts_and_web_origins(keyless_api: str) -> None:
    with httpx.Client(base_url=keyless_api) as local:
        assert local.get("/v1/models").status_code == 200
        rebound = local.get("/v1/models", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 403 and rebound.json()["error"]["param"] == "Host"
        for origin in ("http://evil.example", "null"):
            response = local.post(
                "/v1/jobs",
                json={"model": "fake", "prompt": "a", "max_tokens": 1},
                headers={"Origin": origin},
            )
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "forbidden"
        page = local.get("/v1/models", headers={"Origin": keyless_api})  # a local page: fine
        assert page.status_code == 200


def test_keyless_mode_refuses_a_cross_site_websocket(keyless_api: str) -> None:
    url = keyless_api.replace("http://", "ws://") + "/ws/chat"
    with connect(url, additional_headers={"Origin": "http://evil.example"}) as ws:
        frame = json.loads(ws.recv())
        assert frame["status"] == 403 and frame["code"] == "forbidden"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    with connect(url) as ws:  # the same socket from a local client works
        ws.send(json.dumps({"query": "hi", "model": "fake", "max_tokens": 1}))
        while (frame := json.loads(ws.recv()))["status"] == 202:
            pass
        assert frame["status"] == 200, frame
