"""A Server-Sent Events reader over httpx for the compatibility-surface tests (Dify, Chatchat)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class SSE:
    event: str  #: the `event:` field, "message" when absent
    data: str | None  #: `data:` lines joined with newlines; None for a block without data
    id: str | None = None


def read_sse(response: httpx.Response, timeout_s: float = 180) -> Iterator[SSE]:
    """Each event block of the response, parsed as the SSE spec says
    (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
    except that blocks without data are reported too (data=None), so tests can see Dify's
    `event: ping`. Comment lines (`: ping`) are skipped."""
    deadline = time.monotonic() + timeout_s
    event: str | None = None
    data: list[str] | None = None
    sse_id: str | None = None
    for line in response.iter_lines():
        assert time.monotonic() < deadline, "the SSE stream did not end in time"
        if not line:
            if event is not None or data is not None:
                yield SSE(event or "message", "\n".join(data) if data is not None else None, sse_id)
            event, data = None, None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data = [*(data or []), value]
        elif field == "id":
            sse_id = value
