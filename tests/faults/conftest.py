"""A stack of its own for each fault test: its own redis-server (configs/redis.conf: AOF
everysec), fake-engine workers and the API, all with the settings users get by default (leases,
reconcile interval, visibility timeout). Faults are real: SIGKILL of a worker or of Redis, Redis
paused or refusing writes, the API killed mid-request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from cli.stack import Stack, free_port
from jobs import keys
from tests.conftest import wait_for

#: The fake engine at 20 ms a token, 8 slots: a 30-token job takes ~0.6 s.
MODELS = {
    "default": "f",
    "models": {
        "f": {"engine": "fake", "n_ctx": 4096, "slots": 8, "fake_token_delay_s": 0.02},
        "idle": {"engine": "fake", "n_ctx": 4096},  # no worker: its jobs wait
    },
}


@dataclass
class FaultStack:
    stack: Stack
    redis_dir: Path
    redis_port: int = field(default_factory=free_port)
    base_url: str = ""

    def start(self, workers: dict[str, str]) -> None:
        """Redis, then the named workers (name -> model), then the API; waits for all."""
        self.start_redis()
        for name, model in workers.items():
            self.start_worker(name, model)
        self.base_url = self.stack.start_api("127.0.0.1", free_port())
        for name, model in workers.items():
            self.stack.wait_worker(model, 60, name=name)

    def start_redis(self) -> None:
        self.stack.start_redis(self.redis_port, self.redis_dir)

    def kill_redis(self) -> None:
        self.stack.stop("redis", sig=signal.SIGKILL)

    def start_worker(self, name: str, model: str = "f") -> subprocess.Popen:
        return self.stack.start_worker(model, name=name)

    def worker(self, name: str) -> subprocess.Popen:
        return next(p for n, p in self.stack.procs if n == name)

    def kill(self, name: str) -> None:
        self.stack.stop(name, sig=signal.SIGKILL)

    def restart_api(self) -> None:
        self.stack.stop("api", sig=signal.SIGKILL)
        self.base_url = self.stack.start_api("127.0.0.1", free_port())

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=10)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60)


@pytest.fixture
def faults(tmp_path: Path) -> Iterator[FaultStack]:
    stack = Stack(log_dir=tmp_path / "logs")
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump(MODELS))
    for name in list(stack.env):
        if name.startswith("TOKENQ_"):
            del stack.env[name]  # the defaults, whatever the outer environment says
    stack.env.update(TOKENQ_MODELS_CONFIG=str(models), PYTHONUNBUFFERED="1")
    try:
        yield FaultStack(stack, tmp_path / "redis")
    finally:
        stack.stop()
        if os.environ.get("TOKENQ_TEST_SHOW_LOGS"):
            for log in sorted((tmp_path / "logs").glob("*.log")):
                print(f"==== {log.name}\n{log.read_text()[-5000:]}")


def worker_name(proc: subprocess.Popen, model: str = "f") -> str:
    """The name a worker process writes into the jobs it claims (worker/app.py)."""
    import socket

    return f"{model}@{socket.gethostname()}:{proc.pid}"


def log_events(r: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(fields[b"e"]) for _, fields in r.xrange(keys.job_events(job_id))]


def assert_one_final_result(r: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """The job's log has exactly one final event, last; returns the log."""
    events = log_events(r, job_id)
    finals = [e for e in events if e["type"] in ("done", "error")]
    assert len(finals) == 1, f"job {job_id}: {len(finals)} final events"
    assert events[-1] is finals[0]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), f"job {job_id}: seqs out of order {seqs}"
    return events


def text_after_last_reset(events: list[dict[str, Any]]) -> str:
    resets = [i for i, e in enumerate(events) if e["type"] == "reset"]
    start = resets[-1] if resets else 0
    return "".join(e["data"]["text"] for e in events[start:] if e["type"] == "token")


def assert_nothing_left(r: redis.Redis, models: tuple[str, ...] = ("f",)) -> None:
    """Every job ended: no lease, nothing in line, no in-flight count, every record expiring."""
    assert r.zcard(keys.leases()) == 0
    for model in models:
        assert r.zcard(keys.pending(model)) == 0
        assert r.zcard(keys.suspects(model)) == 0
    for key in r.scan_iter(match=keys.tenant_inflight("*")):
        assert int(r.get(key) or 0) == 0, key
    for key in r.scan_iter(match=keys.job("*"), count=1000):
        assert r.ttl(key) > 0, f"{key!r} has no TTL"


def wait_batch(client: httpx.Client, batch_id: str, timeout_s: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        response = client.get(f"/v1/batches/{batch_id}")
        if response.status_code != 200:
            return None
        body = response.json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(ended, timeout_s, f"batch {batch_id} to end")


def expected_text(n: int) -> str:
    return "".join(f" tok{i}" for i in range(n))


def elapsed_since(t0: float) -> float:
    return round(time.monotonic() - t0, 1)
