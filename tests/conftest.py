"""The real stack for the tests: a private redis-server, Celery worker processes, the API.

One stack per test session (starting workers and loading models is the slow part). Models:
- smollm2, gemma3: the real GGUF models (configs/models.yaml), for every user-facing path;
- fake: the deterministic fake engine, fast, for scale and failure tests;
- slow: the fake engine at 0.1 s per token, for cancel tests (a job is reliably mid-run);
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from cli.stack import Stack, free_port
from jobs.settings import ROOT
from tokenq.client import SSEEvent, iter_sse

ALICE_KEY = "alice-secret-key"
BOB_KEY = "bob-secret-key"
#: Limits lowered so the limit tests stay small.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_BATCH_JOBS = 12_000
MAX_INFLIGHT = 11_000


def _models_config(path: Path) -> Path:
    real = yaml.safe_load((ROOT / "configs" / "models.yaml").read_text())
    models = dict(real["models"])
    models["fake"] = {"engine": "fake", "n_ctx": 4096, "slots": 8}
    models["slow"] = {"engine": "fake", "n_ctx": 4096, "fake_token_delay_s": 0.1}
    models["idle"] = {"engine": "fake", "n_ctx": 4096}  # no worker: its jobs stay queued
    path.write_text(yaml.safe_dump({"default": "smollm2", "models": models}))
    return path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    st = Stack(log_dir=tmp / "logs")
    st.env.update(
        TOKENQ_MODELS_CONFIG=str(_models_config(tmp / "models.yaml")),
        TOKENQ_DATA_DIR=str(ROOT / "var"),  # assembled models are shared with `make run`
        TOKENQ_API_KEYS=json.dumps(
            {
                "alice": hashlib.sha256(ALICE_KEY.encode()).hexdigest(),
                "bob": hashlib.sha256(BOB_KEY.encode()).hexdigest(),
            }
        ),
        TOKENQ_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        TOKENQ_MAX_BATCH_JOBS=str(MAX_BATCH_JOBS),
        TOKENQ_MAX_INFLIGHT=str(MAX_INFLIGHT),
        TOKENQ_STREAM_PING_S="1",
        PYTHONUNBUFFERED="1",
    )
    try:
        external = os.environ.get("TOKENQ_TEST_REDIS_URL")
        if external:
            st.env["TOKENQ_REDIS_URL"] = external
        else:
            st.start_redis(free_port(), tmp / "redis")
        for model in ("smollm2", "gemma3", "fake", "slow"):
            st.start_worker(model)
        st.env["TOKENQ_BASE_URL"] = st.start_api("127.0.0.1", free_port())
        for model in ("smollm2", "gemma3", "fake", "slow"):
            st.wait_worker(model, 180)  # the surfaces answer 503 for a model with no worker
        yield st
    finally:
        st.stop()
        if os.environ.get("TOKENQ_TEST_SHOW_LOGS"):
            for log in sorted((tmp / "logs").glob("*.log")):
                print(f"==== {log.name}\n{log.read_text()[-5000:]}")


@pytest.fixture(scope="session")
def base_url(stack: Stack) -> str:
    return stack.env["TOKENQ_BASE_URL"]


@pytest.fixture(scope="session")
def redis_client(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.env["TOKENQ_REDIS_URL"])


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=60
    ) as c:
        yield c


@pytest.fixture
def bob(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {BOB_KEY}"}, timeout=60
    ) as c:
        yield c


# --- helpers -------------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    """Poll until check() is truthy (returning it) or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def sse_events(
    client: httpx.Client,
    path: str,
    last_event_id: int | None = None,
    limit: int | None = None,
    timeout_s: float = 120,
    notes: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Read an SSE stream until its final event (or `limit` events); return the parsed events.
    A queued job's `queued` notes (not in the log, no SSE id) go to `notes` when given."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", path, headers=headers, timeout=timeout_s) as response:
        assert response.status_code == 200, response.read()
        for sse in iter_sse(_until(deadline, response.iter_bytes())):
            event = sse.json()
            if sse.event == "queued":
                assert sse.id == (str(event["seq"]) if event["seq"] else None), (
                    "a queued note is not in the log: it leaves the resume point where it was"
                )
                if notes is not None:
                    notes.append(event)
                continue
            assert sse.id is not None and event["seq"] == int(sse.id), (
                "SSE id must equal the event's seq"
            )
            events.append(event)
            if event["type"] in ("done", "error") or (limit and len(events) >= limit):
                break
    return events


def read_sse(response: httpx.Response, timeout_s: float = 180) -> Iterator[SSEEvent]:
    """Each event block of a response, blocks without data too (data=None), so the tests of the
    compatibility surfaces (Dify, Chatchat) can see Dify's `event: ping`."""
    deadline = time.monotonic() + timeout_s
    return iter_sse(_until(deadline, response.iter_bytes()), dataless=True)


def _until(deadline: float, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A stream's body, failing the test at the deadline (pings keep a stalled one open)."""
    for chunk in chunks:
        assert time.monotonic() < deadline, "the SSE stream did not end in time"
        yield chunk


def wait_job(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body = client.get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] not in ("queued", "running") else None

    return wait_for(finished, timeout_s, f"job {job_id} to finish")


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def create_openai_batch(
    client: httpx.Client, content: bytes, endpoint: str = "/v1/completions"
) -> httpx.Response:
    """Upload a batch input file and create an OpenAI batch from it; the create's response."""
    upload = client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    assert upload.status_code == 200, upload.text
    return client.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": endpoint,
            "completion_window": "24h",
        },
    )
