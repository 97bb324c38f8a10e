"""Redis killed under the API: its routes answer 503 with Retry-After (not 500), and serve again
once Redis is back on its AOF. A stack of its own (Redis and the API, default settings), since
the session's Redis must stay up for the other tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack, free_port
from tests.conftest import wait_for

#: One route per kind: a read, a write, an OpenAI surface, Dify's error shape.
REQUESTS = [
    ("GET", "/v1/jobs/job_0123456789abcdef01234567", None),
    ("POST", "/v1/jobs", {"model": "fake", "prompt": "a", "max_tokens": 1}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "fake", "messages": [{"role": "user", "content": "a"}]},
    ),
    ("GET", "/v1/batches", None),
]


@pytest.fixture
def own_stack(stack: Stack, tmp_path: Path) -> Iterator[tuple[Stack, int, str]]:
    env = {k: v for k, v in stack.env.items() if k != "TOKENQ_API_KEYS"}  # keyless, loopback
    own = Stack(env=env, log_dir=tmp_path / "logs")
    port = free_port()
    try:
        own.start_redis(port, tmp_path / "redis")
        yield own, port, own.start_api("127.0.0.1", free_port())
    finally:
        own.stop()


def test_redis_down_is_503_with_retry_after_and_back_when_it_returns(
    own_stack: tuple[Stack, int, str], tmp_path: Path
) -> None:
    own, port, base = own_stack
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/v1/batches").status_code == 200
        own.stop("redis", sig=signal.SIGKILL)
        for method, path, body in REQUESTS:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"]["code"] == "unavailable"
            assert int(response.headers["Retry-After"]) > 0
        dify = client.post("/v1/completion-messages", json={"query": "a", "user": "u"})
        assert dify.status_code == 503 and dify.json()["code"] == "unavailable", dify.text
        assert client.get("/healthz").status_code == 503

        own.start_redis(port, tmp_path / "redis")  # the same port and data dir: its AOF
        wait_for(lambda: client.get("/v1/batches").status_code == 200, 30, "the API to serve")
        assert client.get("/healthz").status_code == 200
