"""Whether a TCP port is free, and who holds it when it is not (an earlier tokenq stack, where
that is detectable), for `tokenq up`'s checks before it starts anything."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import httpx

from cli.stack import API_FACTORY


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not bind host:port now (as uvicorn and redis-server bind it, with
    SO_REUSEADDR: a port left in TIME_WAIT is free)."""
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
                raise
    return False


def port_holder(host: str, port: int) -> str:
    """Who holds a port, as `by ...`: an earlier tokenq stack (and how to stop it) where /proc or
    the port itself says so."""
    pid = _listening_pid(port)
    if pid is None:
        if _answers_as_tokenq(host, port):
            return "by an earlier tokenq stack (its API answers there)"
        return "by another program"
    command = _cmdline(pid)
    parent = _ppid(pid)
    up = parent if parent and _is_tokenq_up(_cmdline(parent)) else None
    if API_FACTORY in command or "redis-server" in command:
        what = "API" if API_FACTORY in command else "Redis"
        if up is not None:
            return (
                f"by an earlier tokenq stack (its {what} is pid {pid}; its `tokenq up` is pid "
                f"{up}: Ctrl-C it or kill {up})"
            )
        if what == "API":
            return (
                f"by an earlier tokenq stack left running without its `tokenq up` "
                f"(its API is pid {pid}: kill {pid})"
            )
    return f"by pid {pid} ({command[:120] or 'command unknown'})"


def _is_tokenq_up(command: str) -> bool:
    words = command.split()
    return "up" in words and any(Path(w).name == "tokenq" or w == "cli.main" for w in words)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command in (...) may hold spaces


def _listening_pid(port: int) -> int | None:
    """The process listening on a TCP port, from /proc (Linux; only processes we may inspect)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = fields[3] == "0A"  # TCP_LISTEN
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    if not sockets:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def _answers_as_tokenq(host: str, port: int) -> bool:
    try:
        body = httpx.get(f"http://{host}:{port}/healthz", timeout=1).json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok" and "models" in body
