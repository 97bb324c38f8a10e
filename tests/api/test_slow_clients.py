"""Slow clients are cut off: a request whose headers take more than HEADER_TIMEOUT_S, or whose
body goes silent for BODY_IDLE_TIMEOUT_S, loses its connection (the defaults users get), while
a client that merely waits between requests is left to uvicorn's keep-alive timeout."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

from api.connections import BODY_IDLE_TIMEOUT_S, HEADER_TIMEOUT_S


def _open(base_url: str) -> socket.socket:
    url = urlsplit(base_url)
    return socket.create_connection((url.hostname, url.port), timeout=5)


def _closed_after(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the server closed the connection (None if it did not within limit_s)."""
    start = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - start


def test_requests_that_trickle_in_are_cut_off(base_url: str) -> None:
    closed: dict[str, float | None] = {}

    def headers_never_end() -> None:
        with _open(base_url) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
            closed["headers"] = _closed_after(sock, HEADER_TIMEOUT_S + 10)

    def body_stops() -> None:
        with _open(base_url) as sock:
            sock.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"prompt": '
            )
            closed["body"] = _closed_after(sock, BODY_IDLE_TIMEOUT_S + 10)

    def nothing_sent() -> None:
        with _open(base_url) as sock:
            closed["silent"] = _closed_after(sock, HEADER_TIMEOUT_S + 10)

    threads = [threading.Thread(target=f) for f in (headers_never_end, body_stops, nothing_sent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert closed["headers"] is not None and closed["headers"] >= HEADER_TIMEOUT_S - 1
    assert closed["silent"] is not None and closed["silent"] >= HEADER_TIMEOUT_S - 1
    assert closed["body"] is not None and closed["body"] >= BODY_IDLE_TIMEOUT_S - 1


def _response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) off the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_request_sent_whole_is_answered_and_kept_alive(base_url: str) -> None:
    with _open(base_url) as sock:
        for _ in range(2):  # two requests on one connection, a second apart
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(1)
