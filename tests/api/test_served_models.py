"""Served models: what a client is offered is what a live worker serves. A request that waits
for its answer, for a model no worker serves, is 503 model_unavailable at once; a native job is
accepted, waits durably, and says why it does not move; /readyz names what is missing."""

from __future__ import annotations

import httpx
import yaml

from cli.stack import Stack, free_port

#: The session stack configures "idle" and starts no worker for it.
UNSERVED = "idle"


def test_models_lists_the_models_a_live_worker_serves(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()["data"]
    assert {m["id"] for m in models} == {"smollm2", "gemma3", "fake", "slow"}
    assert all(m["workers"] >= 1 for m in models)
    idle = client.get(f"/v1/models/{UNSERVED}")
    assert idle.status_code == 200 and idle.json()["workers"] == 0


def test_waiting_requests_for_an_unserved_model_are_503_at_once(client: httpx.Client) -> None:
    requests = [
        (
            "/v1/chat/completions",
            {"model": UNSERVED, "messages": [{"role": "user", "content": "x"}]},
        ),
        ("/v1/completions", {"model": UNSERVED, "prompt": "x", "stream": True}),
        ("/v1/completion-messages", {"model": UNSERVED, "query": "x", "user": "u"}),
        ("/other/completion", {"model_name": UNSERVED, "query": "x"}),
    ]
    for path, body in requests:
        response = client.post(path, json=body, timeout=10)
        assert response.status_code == 503, (path, response.text)
        assert "model_unavailable" in response.text, (path, response.text)
        assert int(response.headers["Retry-After"]) > 0


def test_a_native_job_for_an_unserved_model_waits_and_says_why(client: httpx.Client) -> None:
    created = client.post("/v1/jobs", json={"model": UNSERVED, "prompt": "x", "max_tokens": 1})
    assert created.status_code == 202
    job = created.json()
    assert job["status"] == "queued" and UNSERVED in job["notice"]
    assert UNSERVED in client.get(f"/v1/jobs/{job['id']}").json()["notice"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    served = client.post("/v1/jobs", json={"model": "fake", "prompt": "x", "max_tokens": 1})
    assert served.json()["notice"] is None


def test_readyz_names_the_models_without_a_worker(stack: Stack, client: httpx.Client) -> None:
    unready = client.get("/readyz")
    assert unready.status_code == 503
    assert unready.json()["models_without_worker"] == [UNSERVED]
    assert client.get("/healthz").status_code == 200  # liveness is another matter

    # An API whose models all have a live worker is ready
    assert stack.log_dir is not None
    served = stack.log_dir / "served-models.yaml"
    served.write_text(
        yaml.safe_dump({"default": "fake", "models": {"fake": {"engine": "fake", "n_ctx": 4096}}})
    )
    other = Stack(env={**stack.env, "TOKENQ_MODELS_CONFIG": str(served)}, log_dir=stack.log_dir)
    try:
        base = other.start_api("127.0.0.1", free_port())
        ready = httpx.get(f"{base}/readyz")
    finally:
        other.stop()
    assert ready.status_code == 200, ready.text
    assert ready.json()["workers"]["fake"] >= 1
