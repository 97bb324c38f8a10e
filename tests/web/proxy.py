"""A TCP proxy in front of the API whose connections a test can cut, as a dropped network would."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

#: Request lines start with one of these: what marks the start of a request on a connection.
_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ")


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    request: bytes = b""  #: the head of the latest request the client sent on this connection
    closed: bool = False


@dataclass
class CuttableProxy:
    """Listens on 127.0.0.1 (a free port) and relays each connection to `upstream_port`.
    `cut(marker)` resets the connections whose latest request's head holds `marker` (an RST to
    the browser: what it sees of a dropped network). `requests` keeps every request head seen."""

    upstream_port: int
    requests: list[bytes] = field(default_factory=list)
    _pairs: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, from_client: bool) -> None:
        source, sink = (pair.client, pair.upstream) if from_client else (pair.upstream, pair.client)
        try:
            while chunk := source.recv(65536):
                if from_client and chunk.startswith(_METHODS):
                    head = chunk.split(b"\r\n\r\n", 1)[0]
                    with self._lock:
                        pair.request = head
                        self.requests.append(head)
                sink.sendall(chunk)
        except OSError:
            pass
        self._close(pair)

    def _close(self, pair: _Pair, reset: bool = False) -> None:
        with self._lock:
            if pair.closed:
                return
            pair.closed = True
        for sock in (pair.client, pair.upstream):
            # Shutting down the reading side wakes the pump blocked in recv(); with SO_LINGER 0
            # the client's close() then sends an RST (no FIN first: nothing is shut for writing).
            with contextlib.suppress(OSError):
                if reset and sock is pair.client:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self, marker: bytes) -> int:
        """Reset every open connection whose latest request's head holds `marker`; how many."""
        with self._lock:
            hits = [p for p in self._pairs if not p.closed and marker in p.request]
        for pair in hits:
            self._close(pair, reset=True)
        return len(hits)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._close(pair)
