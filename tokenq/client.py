"""An async client for tokenq's native API on httpx: submit, wait, stream (resumable), cancel;
and the Server-Sent Events parser it reads streams with."""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
#: Reconnects in a row, with no new event in between, before a stream gives up.
MAX_RECONNECTS = 5
#: First wait before a reconnect; it doubles on each failure in a row, up to the max.
RECONNECT_DELAY_S = 0.25
RECONNECT_MAX_DELAY_S = 5.0
#: Statuses worth a reconnect: a proxy or an API process restarting.
RETRY_STATUSES = frozenset({502, 503, 504})
#: Events after which a job's or a batch's stream has nothing more to say.
FINAL_EVENTS = frozenset({"done", "error"})
JOB_FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})
BATCH_FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})


class TokenqClientError(Exception):
    """An error answered by the API (`status`, `code`, `type`, `param`, `message`), or a
    client-side one (then `status` is None)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.param = param

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code or 'error'}: {self.message}"


class JobRestartedError(TokenqClientError):
    """The job's worker was lost and a new attempt starts over: drop the text streamed so far,
    then `stream(job_id, last_event_id=exc.last_event_id)` gives the new attempt's text."""

    def __init__(self, job_id: str, attempt: int, last_event_id: int):
        super().__init__(
            f"job {job_id} restarted (attempt {attempt}); its text so far is void",
            code="job_restarted",
        )
        self.job_id = job_id
        self.attempt = attempt
        self.last_event_id = last_event_id


class StreamInterruptedError(TokenqClientError):
    """The stream kept failing to reconnect; `last_event_id` is where to resume later."""

    def __init__(self, path: str, last_event_id: int, reconnects: int, cause: str):
        super().__init__(
            f"{path}: gave up after {reconnects} reconnects ({cause})",
            code="stream_interrupted",
        )
        self.last_event_id = last_event_id


class AsyncClient:
    """tokenq's native API. `base_url` defaults to $TOKENQ_URL (else http://127.0.0.1:8000),
    `api_key` to $TOKENQ_API_KEY; `transport` is handed to httpx (proxies, tests)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_reconnects: int = MAX_RECONNECTS,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        api_key = api_key if api_key is not None else os.environ.get("TOKENQ_API_KEY")
        self._http = httpx.AsyncClient(
            base_url=base_url or os.environ.get("TOKENQ_URL") or DEFAULT_URL,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=timeout,
            transport=transport,
        )
        self.max_reconnects = max_reconnects

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- jobs ----------------------------------------------------------------------------

    async def submit(self, prompt: str | None = None, **fields: Any) -> dict[str, Any]:
        """One job (`POST /v1/jobs`): a prompt, or `messages=`, or `template=` + `inputs=`, and
        any other job field (`model`, `max_tokens`, `temperature`, ...). Returns the job."""
        body = {"prompt": prompt, **fields} if prompt is not None else fields
        return await self._request("POST", "/v1/jobs", json=body)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/jobs/{job_id}")

    async def wait(self, job_id: str) -> dict[str, Any]:
        """The job once it is final (followed over its event stream, not polled)."""
        job = await self.job(job_id)
        if job["status"] not in JOB_FINAL_STATUSES:
            async for _ in self.events(job_id):
                pass
            job = await self.job(job_id)
        return job

    async def events(self, job_id: str, last_event_id: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The job's events (`{seq, type, data}`) after `last_event_id`, each once and in order,
        until its final event; a dropped connection is resumed with Last-Event-ID. While the job
        waits, `queued` notes come between them (`data`: position, estimated_start_at,
        service_rate_per_s; `seq` is the event's before: a note is not in the log)."""
        async for event in self._follow(f"/v1/jobs/{job_id}/events", last_event_id):
            yield event

    async def stream(self, job_id: str, last_event_id: int = 0) -> AsyncIterator[str]:
        """The job's text, piece by piece, until it is final (whatever its final status: see
        wait()). Raises JobRestartedError if the job starts over after a lost worker."""
        async for event in self.events(job_id, last_event_id):
            if event["type"] == "token":
                if event["data"]["text"]:
                    yield event["data"]["text"]
            elif event["type"] == "reset":
                raise JobRestartedError(job_id, event["data"]["attempt"], event["seq"])

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: a queued one never starts, a running one stops at its next token."""
        return await self._request("POST", f"/v1/jobs/{job_id}/cancel")

    # --- batches -------------------------------------------------------------------------

    async def submit_bulk(
        self,
        jobs: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Many jobs as one batch (`POST /v1/batches`); returns the batch. With an
        `idempotency_key`, a retried call returns the batch the first one created."""
        body: dict[str, Any] = {"jobs": [dict(job) for job in jobs]}
        if model is not None:
            body["model"] = model
        if metadata is not None:
            body["metadata"] = dict(metadata)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._request("POST", "/v1/batches", json=body, headers=headers)

    async def submit_jsonl(
        self, data: bytes, *, model: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """A JSONL file (one job object a line) as one batch, sent as it is, so an error names
        the file's line (`line 2`); `model` is for the lines that name none. Returns the batch."""
        headers = {"Content-Type": "application/jsonl"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        params = {"model": model} if model else None
        return await self._request(
            "POST", "/v1/batches", content=data, headers=headers, params=params
        )

    async def batch(self, batch_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/batches/{batch_id}")

    async def wait_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch once every job in it is final (followed over its event stream)."""
        batch = await self.batch(batch_id)
        if batch["status"] not in BATCH_FINAL_STATUSES:
            async for _ in self.batch_events(batch_id):
                pass
            batch = await self.batch(batch_id)
        return batch

    async def batch_events(
        self, batch_id: str, last_event_id: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """The batch's events (`{seq, type, data}`: `status`, then a `job` event with the counts
        so far as each of its jobs ends, then `done`) after `last_event_id`, resumed as events()."""
        async for event in self._follow(f"/v1/batches/{batch_id}/events", last_event_id):
            yield event

    async def results(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's succeeded jobs so far, in input order (`{id, custom_id, status,
        response, error}` each)."""
        response = await self._http.get(f"/v1/batches/{batch_id}/results")
        if response.status_code >= 400:
            raise _api_error(response)
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/v1/batches/{batch_id}/cancel")

    # --- plumbing ------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _api_error(response)
        result: dict[str, Any] = response.json()
        return result

    async def _follow(self, path: str, last_event_id: int) -> AsyncIterator[dict[str, Any]]:
        """An SSE event log from after `last_event_id` to its final event, reconnecting with
        Last-Event-ID whenever the connection drops (tokenq replays exactly what was missed)."""
        last = last_event_id
        failures = 0
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                async with self._http.stream("GET", path, headers=headers) as response:
                    if response.status_code == 204:
                        return  # the log ended at or before `last`: nothing more to read
                    if response.status_code >= 400:
                        await response.aread()
                        if response.status_code not in RETRY_STATUSES:
                            raise _api_error(response)
                        cause = f"HTTP {response.status_code}"
                    else:
                        async for sse in aiter_sse(response.aiter_bytes()):
                            event = sse.json()
                            last = event["seq"]
                            failures = 0
                            yield event
                            if event["type"] in FINAL_EVENTS:
                                return
                        cause = "the stream ended before its final event"
            except httpx.TransportError as exc:
                cause = f"{type(exc).__name__}: {exc}"
            failures += 1
            if failures > self.max_reconnects:
                raise StreamInterruptedError(path, last, self.max_reconnects, cause)
            await asyncio.sleep(min(RECONNECT_DELAY_S * 2 ** (failures - 1), RECONNECT_MAX_DELAY_S))


def _api_error(response: httpx.Response) -> TokenqClientError:
    try:
        error = response.json()["error"]
        return TokenqClientError(
            error["message"],
            status=response.status_code,
            code=error.get("code"),
            type=error.get("type"),
            param=error.get("param"),
        )
    except (ValueError, KeyError, TypeError):
        return TokenqClientError(
            response.text or response.reason_phrase, status=response.status_code
        )


# --- Server-Sent Events ----------------------------------------------------------------------

#: An event stream's line ends: CRLF, LF or CR, and no other. (str.splitlines(), and so httpx's
#: iter_lines(), also breaks at U+2028, U+0085, form feed and more, which a data line may hold:
#: Dify's JSON and Chatchat's text are sent as they are.)
_SSE_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event of a text/event-stream."""

    event: str  #: the `event:` field; "message" when absent or empty
    data: str | None  #: `data:` lines joined with newlines; None only for a block without data
    id: str | None = None  #: the last event ID so far (an `id:` field persists to later events)
    retry: int | None = None  #: the block's `retry:` field (reconnection time, ms), if any

    def json(self) -> Any:
        """The data parsed as JSON (each event of tokenq's own streams is one JSON object)."""
        if self.data is None:
            raise ValueError(f"this {self.event!r} block came without data: no JSON to parse")
        return json.loads(self.data)


class SSEDecoder:
    """Turns a text/event-stream, fed the body's bytes (feed) or one line at a time (decode), into
    events, as the spec interprets it
    (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
    fields event, data, id and retry; comments (`: ping`) and unknown fields skipped; an event
    counts only once its blank line has arrived, so one cut off by a dropped connection is never
    half-read. A block of fields without data is no event, unless `dataless=True` (then its data
    is None: Dify's `event: ping`)."""

    def __init__(self, *, dataless: bool = False):
        self.dataless = dataless
        self.last_event_id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._retry: int | None = None
        self._fields = False  # whether the current block has any field line
        self._first = True
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # as the spec decodes
        self._partial: list[str] = []  # the line being fed, as far as it has arrived
        self._after_cr = False  # the last line fed ended in CR: an LF next completes a CRLF

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Feed a piece of the body, of any size; the events it completes, in order. Lines are
        split here, at CR, LF or CRLF only (see _SSE_LINE_END), even across pieces."""
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        events = []
        start = 0
        for end in _SSE_LINE_END.finditer(text):
            self._partial.append(text[start : end.start()])
            start = end.end()
            event = self.decode("".join(self._partial))
            self._partial.clear()
            if event is not None:
                events.append(event)
        if start < len(text):
            self._partial.append(text[start:])
        return events

    def decode(self, line: str) -> SSEEvent | None:
        """Feed one line (its CR, LF or CRLF, if any, is dropped); the event it completes, if any."""
        if line.endswith("\r\n"):
            line = line[:-2]
        elif line.endswith(("\n", "\r")):
            line = line[:-1]
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")  # the stream may start with a byte order mark
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._fields = True
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        event = None
        if self._data or (self.dataless and self._fields):
            data = "\n".join(self._data) if self._data else None
            event = SSEEvent(self._event or "message", data, self.last_event_id, self._retry)
        self._event, self._data, self._retry, self._fields = "", [], None, False
        return event


def iter_sse(chunks: Iterable[bytes], *, dataless: bool = False) -> Iterator[SSEEvent]:
    """The events of a text/event-stream's body (`httpx.Response.iter_bytes()`, not iter_lines():
    see _SSE_LINE_END); see SSEDecoder."""
    decoder = SSEDecoder(dataless=dataless)
    for chunk in chunks:
        yield from decoder.feed(chunk)


async def aiter_sse(
    chunks: AsyncIterable[bytes], *, dataless: bool = False
) -> AsyncIterator[SSEEvent]:
    """The events of a text/event-stream's body (`httpx.Response.aiter_bytes()`): see iter_sse()."""
    decoder = SSEDecoder(dataless=dataless)
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
