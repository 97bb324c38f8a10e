"""Start the pieces of a tokenq stack as processes: Redis, workers, the API (used by `tokenq up`,
the e2e tests and the benchmarks alike)."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import httpx
import redis

from jobs.settings import ROOT

#: prctl(2) option: the signal a process gets when the thread that started it ends.
PR_SET_PDEATHSIG = 1
#: How much of a child's log is searched for the line that says why it exited.
LOG_TAIL_BYTES = 64 * 1024
#: A log line that states a failure (the last one names the cause when a child exits early).
_FAILURE_LINE = re.compile(
    r"error|exception|fatal|can't|cannot|could not|failed|denied|refused|in use|not found|"
    r"no such|not a directory|not writable|read-only",
    re.IGNORECASE,
)
#: The last line of a Python traceback: the exception that ended the process.
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit)\b.*: ")
#: redis-server's line prefix: `pid:role date time level `.
_REDIS_LOG_PREFIX = re.compile(r"^\d+:[XCSM] \d+ \w+ \d+ [\d:.]+ [.\-*#] ")
#: How long `tokenq up` waits for a worker to load its model (assembling a split GGUF the first
#: time, or offloading a large one to a GPU, takes minutes).
MODEL_LOAD_TIMEOUT_S = 600
#: The command line of tokenq's API process (as Stack.start_api runs it).
API_FACTORY = "api.app:create_app"
#: uvicorn's HTTP protocol with header and body read timeouts (slow clients are cut off).
API_HTTP_PROTOCOL = "api.connections:GuardedHttpToolsProtocol"


class StackError(Exception):
    """A stack that cannot start or keep running; the message names the cause."""


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
        # A read timeout too: a program on the port that is not Redis may accept and never answer.
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
        return bool(client.ping())
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


def redis_port(url: str) -> int:
    return urlparse(url).port or 6379


# --- dying with the parent ----------------------------------------------------------------------


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get `sig` when the thread that started it ends, however
    it ends (kill -9 included); None where prctl(2) does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()

    def arm() -> None:
        if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm


# --- one `tokenq up` per data dir ---------------------------------------------------------------


class StackLock:
    """An flock on `<data dir>/tokenq-up.lock`, held while one `tokenq up` runs on that data dir;
    the kernel drops it when the process ends, kill -9 included. The file says who holds it."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / "tokenq-up.lock"
        self._fd: int | None = None
        self._info: dict[str, object] = {}

    def acquire(self, **info: object) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StackError(
                f"cannot use the data dir {self.path.parent}: {exc.strerror} "
                "(make it writable or set TOKENQ_DATA_DIR)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise StackError(self._already_running(holder)) from None
        self._fd = fd
        self.update(pid=os.getpid(), **info)

    def update(self, **info: object) -> None:
        """Add to what the file says about this `tokenq up` (its pid, API, Redis)."""
        if self._fd is None:
            return
        self._info.update(info)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(self._info).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (a stale one is harmless)
            self._fd = None

    @staticmethod
    def _read(fd: int) -> dict[str, object]:
        # The holder writes right after it locks: give it a moment before reading an empty file.
        deadline = time.monotonic() + 1
        while True:
            raw = os.pread(fd, 4096, 0)
            try:
                value = json.loads(raw)
                return value if isinstance(value, dict) else {}
            except ValueError:
                if time.monotonic() > deadline:
                    return {}
                time.sleep(0.05)

    def _already_running(self, holder: dict[str, object]) -> str:
        where = ", ".join(
            f"{label} {holder[key]}"
            for key, label in (("api", "API"), ("redis", "Redis"))
            if key in holder
        )
        return (
            f"tokenq up is already running on the data dir {self.path.parent} "
            f"(pid {holder.get('pid', '?')}{'; ' + where if where else ''}): "
            "use that stack, stop it first, or set TOKENQ_DATA_DIR and TOKENQ_PORT for a second one"
        )


# --- the processes ------------------------------------------------------------------------------


@dataclass
class _Log:
    label: str  # the process in messages
    path: Path | None
    offset: int  # where this process's lines begin (the file is appended to across runs)
    pump: threading.Thread | None = None


def _pump(source: IO[bytes], log_path: Path | None) -> None:
    """Copy a child's output to our stderr and to its log file, line by line."""
    echo = getattr(sys.stderr, "buffer", None)
    log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - closed below
    try:
        for line in iter(source.readline, b""):
            for out in (echo, log):
                if out is not None:
                    try:
                        out.write(line)
                        out.flush()
                    except (OSError, ValueError):
                        pass
    finally:
        source.close()
        if log is not None:
            log.close()


def failure_line(text: str) -> str | None:
    """The line of a log that says why its process failed: the last exception of a traceback
    (uvicorn's "Application startup failed" follows it), else the last line that states a
    failure, else the last line."""
    lines = [_REDIS_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    for pattern in (_EXCEPTION_LINE, _FAILURE_LINE):
        for line in reversed(lines):
            if pattern.search(line):
                return " ".join(line.split())
    return " ".join(lines[-1].split()) if lines else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class Stack:
    """Processes started here, stopped in reverse order.

    Each child dies with the thread that started it, however that ends (kill -9 included): start
    them from the thread that lives as long as the stack.
    """

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    log_dir: Path | None = None
    _logs: dict[int, _Log] = field(default_factory=dict)

    def _log_path(self, name: str) -> Path | None:
        if self.log_dir is None:
            return None
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return self.log_dir / f"{name}.log"

    def _spawn(
        self,
        name: str,
        args: list[str],
        quiet: bool,
        death_signal: int = signal.SIGKILL,
        label: str | None = None,
    ) -> subprocess.Popen:
        """Start a child; quiet: its output goes to its log only, else to our stderr as well."""
        path = self._log_path(name)
        offset = path.stat().st_size if path is not None and path.exists() else 0
        stdout: int | IO[bytes] | None = None
        if quiet and path is not None:
            stdout = open(path, "ab")  # noqa: SIM115 - the child holds its own copy
        elif quiet:
            stdout = subprocess.DEVNULL
        elif path is not None:
            stdout = subprocess.PIPE
        proc = subprocess.Popen(
            args,
            env=self.env,
            cwd=ROOT,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent(death_signal),
        )
        log = _Log(label or name, path, offset)
        if not isinstance(stdout, int) and stdout is not None:
            stdout.close()  # the child holds its own copy of the file descriptor
        elif proc.stdout is not None:
            log.pump = threading.Thread(
                target=_pump, args=(proc.stdout, path), name=f"log-{name}", daemon=True
            )
            log.pump.start()
        self._logs[proc.pid] = log
        self.procs.append((name, proc))
        return proc

    def last_error(self, proc: subprocess.Popen) -> str | None:
        """The line of a child's log (this run's part) that says why it failed, if it has one."""
        log = self._logs.get(proc.pid)
        if log is None or log.path is None:
            return None
        if log.pump is not None:
            log.pump.join(2)  # the child is gone: its last lines are on their way to the file
        try:
            with log.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(log.offset, size - LOG_TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        return failure_line(text)

    def exited(self, before_ready: bool = False) -> str | None:
        """Why the stack is broken, in one line: its first child that exited, with its log's
        failure line; None while all run."""
        for _, proc in self.procs:
            if proc.poll() is None:
                continue
            code = proc.returncode
            how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
            when = " before it was ready" if before_ready else ""
            why = self.last_error(proc) if code > 0 else None  # a signal says why itself
            log = self._logs[proc.pid]
            return (
                f"{log.label} {how}{when}"
                + (f": {why}" if why else "")
                + (f" (log: {log.path})" if log.path is not None else "")
            )
        return None

    def _wait_ready(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait for check() while every child runs: a child that exits fails the start-up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            broken = self.exited(before_ready=True)
            if broken is not None:
                raise StackError(broken)
            try:
                if check():
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise StackError(f"{what}: not ready after {timeout_s:.0f}s")

    def start_redis(self, port: int, data_dir: Path, quiet: bool = True) -> str:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StackError(f"cannot create Redis's data dir {data_dir}: {exc.strerror}") from exc
        self._spawn(
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
            # SIGTERM, not SIGKILL: Redis syncs its append-only file before it exits.
            death_signal=signal.SIGTERM,
            label=f"redis-server (data dir {data_dir})",
        )
        url = f"redis://127.0.0.1:{port}/0"
        self._wait_ready(lambda: redis_reachable(url), 20, "redis-server")
        self.env["TOKENQ_REDIS_URL"] = url
        return url

    def start_worker(
        self, model: str, quiet: bool = True, name: str | None = None
    ) -> subprocess.Popen:
        return self._spawn(
            name or f"worker-{model}",
            [
                sys.executable,
                "-m",
                "worker",
                "--model",
                model,
                "--hostname",
                self.node(model, name),
            ],
            quiet,
            label=f"the worker for model {model!r}",
        )

    @staticmethod
    def node(model: str, name: str | None = None) -> str:
        """The Celery node name of the worker start_worker(model, name=name) starts."""
        return f"{name or model}@{socket.gethostname()}"

    def wait_worker(self, model: str, timeout_s: float, name: str | None = None) -> None:
        """Wait until a worker has loaded its model and consumes (it answers a Celery ping)."""
        from celery import Celery

        app = Celery("tokenq", broker=self.env["TOKENQ_REDIS_URL"])
        node = self.node(model, name)
        try:
            self._wait_ready(
                lambda: bool(app.control.ping(destination=[node], timeout=0.5, limit=1)),
                timeout_s,
                f"worker {node} (loading model {model!r})",
            )
        finally:
            app.close()

    def start_api(self, host: str, port: int, quiet: bool = True) -> str:
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                API_FACTORY,
                "--http",
                API_HTTP_PROTOCOL,
                "--host",
                host,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            quiet,
            label="the API",
        )
        base = f"http://{host}:{port}"
        self._wait_ready(
            lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, 60, "api"
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
            log = self._logs.pop(proc.pid, None)
            if log is not None and log.pump is not None:
                log.pump.join(2)  # its last lines reach the terminal before ours
            self.procs.remove((proc_name, proc))
