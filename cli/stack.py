"""Start the pieces of a tokenq stack as processes: Redis, workers, the API (used by `tokenq up`,
the e2e tests and the benchmarks alike)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import redis

from jobs.settings import ROOT


class StackError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what}: process exited with {proc.returncode}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise StackError(f"{what}: not ready after {timeout_s:.0f}s")


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_durability_problems(url: str) -> list[str]:
    """What in a running Redis breaks tokenq's guarantees (AOF everysec, no eviction)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        config = {
            **client.config_get("appendonly"),
            **client.config_get("appendfsync"),
            **client.config_get("maxmemory-policy"),
        }
    except redis.RedisError:
        return [
            "could not read the Redis config (CONFIG GET refused); check AOF and eviction by hand"
        ]
    problems = []
    if config.get("appendonly") != "yes" or config.get("appendfsync") not in ("everysec", "always"):
        problems.append("this Redis does not keep an append-only file: accepted jobs die with it")
    if config.get("maxmemory-policy") != "noeviction":
        problems.append(
            f"maxmemory-policy is {config.get('maxmemory-policy')}: Redis may evict jobs"
        )
    return problems


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise StackError(
            "redis-server not found: install it (Debian: apt-get install redis-server; "
            "`make install` does this) or point TOKENQ_REDIS_URL at a running Redis"
        )
    return found


@dataclass
class Stack:
    """Processes started here, stopped in reverse order."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    log_dir: Path | None = None

    def _spawn(self, name: str, args: list[str], quiet: bool) -> subprocess.Popen:
        out = None
        if quiet and self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        elif quiet:
            out = subprocess.DEVNULL
        proc = subprocess.Popen(
            args,
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        if out not in (None, subprocess.DEVNULL):
            out.close()  # the child holds its own copy of the file descriptor
        self.procs.append((name, proc))
        return proc

    def start_redis(self, port: int, data_dir: Path, quiet: bool = True) -> str:
        data_dir.mkdir(parents=True, exist_ok=True)
        proc = self._spawn(
            "redis",
            [
                redis_server_binary(),
                str(ROOT / "configs" / "redis.conf"),
                "--port",
                str(port),
                "--dir",
                str(data_dir),
                "--daemonize",
                "no",
            ],
            quiet,
        )
        url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: redis_reachable(url), 20, "redis-server", proc)
        self.env["TOKENQ_REDIS_URL"] = url
        return url

    def start_worker(
        self, model: str, quiet: bool = True, name: str | None = None
    ) -> subprocess.Popen:
        return self._spawn(
            name or f"worker-{model}",
            [sys.executable, "-m", "worker", "--model", model, "--hostname", f"{name or model}@%h"],
            quiet,
        )

    def start_api(self, host: str, port: int, quiet: bool = True) -> str:
        proc = self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app",
                "--host",
                host,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            quiet,
        )
        base = f"http://{host}:{port}"
        wait_until(
            lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, 60, "api", proc
        )
        return base

    def stop(
        self, name: str | None = None, sig: int = signal.SIGTERM, timeout_s: float = 15
    ) -> None:
        """Stop one named process (or all, newest first) and its children."""
        for proc_name, proc in reversed(list(self.procs)):
            if name is not None and proc_name != name:
                continue
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.procs.remove((proc_name, proc))


def redis_port(url: str) -> int:
    return urlparse(url).port or 6379
