"""tokenq.client.AsyncClient against the live stack: submit, stream (resuming), wait, bulk, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import ALICE_KEY, BOB_KEY
from tokenq import AsyncClient, JobRestartedError, StreamInterruptedError, TokenqClientError

T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=240))


class _CutStream(httpx.AsyncByteStream):
    """A response body that breaks off after `limit` bytes, as a dropped connection does."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int):
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self._inner:
            if sent + len(chunk) >= self._limit:
                yield chunk[: self._limit - sent]
                raise httpx.ReadError("connection dropped (test)")
            sent += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class DroppingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, except that the first `drops` event streams are cut off mid-way."""

    def __init__(self, drops: int, after_bytes: int):
        self._inner = httpx.AsyncHTTPTransport()
        self.drops = drops
        self._after_bytes = after_bytes
        self.resumed_from: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.resumed_from.append(request.headers.get("last-event-id"))
        if self.drops == 0:
            return response
        self.drops -= 1
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutStream(response.stream, self._after_bytes),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_submit_stream_and_wait_on_the_real_model(base_url: str) -> None:
    async def scenario() -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        async with AsyncClient(base_url, ALICE_KEY) as tq:
            job = await tq.submit("The sky is", max_tokens=16, temperature=0)
            tokens = [token async for token in tq.stream(job["id"])]
            return job, tokens, await tq.wait(job["id"])

    job, tokens, final = _run(scenario())
    assert job["status"] == "queued" and job["model"] == "smollm2"
    assert final["status"] == "succeeded"
    assert len(tokens) > 1 and "".join(tokens) == final["text"]
    assert final["usage"]["completion_tokens"] >= len(tokens)


def test_stream_resumes_after_dropped_connections_without_gap_or_duplicate(
    base_url: str,
) -> None:
    # Given a client whose first two event streams break off mid-way (mid-event, too)
    transport = DroppingTransport(drops=2, after_bytes=500)

    async def scenario() -> tuple[list[str], list[int], dict[str, Any]]:
        async with AsyncClient(base_url, ALICE_KEY, transport=transport) as tq:
            job = await tq.submit("resume me", model="slow", max_tokens=30)
            # When its tokens are streamed (and, separately, its events)
            tokens = [token async for token in tq.stream(job["id"])]
            transport.drops = 1
            seqs = [event["seq"] async for event in tq.events(job["id"])]
            return tokens, seqs, await tq.wait(job["id"])

    tokens, seqs, final = _run(scenario())

    # Then the stream reconnected with Last-Event-ID, and every token came exactly once, in order
    assert transport.resumed_from[0] is None
    assert transport.resumed_from[1] is not None and transport.resumed_from[2] is not None
    assert int(transport.resumed_from[1]) < int(transport.resumed_from[2])
    assert tokens == [f" tok{i}" for i in range(30)]
    assert "".join(tokens) == final["text"]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 30


def test_bulk_submit_wait_results_and_idempotency(base_url: str) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        async with AsyncClient(base_url, ALICE_KEY) as tq:
            jobs = [{"custom_id": f"c{i}", "prompt": f"p{i}", "max_tokens": 2} for i in range(5)]
            batch = await tq.submit_bulk(jobs, model="fake", idempotency_key="client-test-1")
            again = await tq.submit_bulk(jobs, model="fake", idempotency_key="client-test-1")
            assert again["id"] == batch["id"]
            done = await tq.wait_batch(batch["id"])
            return batch, done, await tq.results(batch["id"])

    batch, done, results = _run(scenario())
    assert batch["request_counts"]["total"] == 5
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 5
    assert [r["custom_id"] for r in results] == [f"c{i}" for i in range(5)]
    assert all(r["response"]["text"] == " tok0 tok1" for r in results)


def test_resuming_at_the_final_event_ends_at_once(base_url: str) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with AsyncClient(base_url, ALICE_KEY) as tq:
            job = await tq.submit("p", model="fake", max_tokens=2)
            events = [event async for event in tq.events(job["id"])]
            # the server answers 204 past the end: the client stops, it does not reconnect
            resumed = [event async for event in tq.events(job["id"], events[-1]["seq"])]
            return events, resumed

    events, resumed = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert events[-1]["type"] == "done" and resumed == []


def test_cancel_stops_a_running_job(base_url: str) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncClient(base_url, ALICE_KEY) as tq:
            job = await tq.submit("long", model="slow", max_tokens=500)
            async for _ in tq.stream(job["id"]):
                break  # it is running: it has produced a token
            await tq.cancel(job["id"])
            return await tq.wait(job["id"])

    final = _run(scenario())
    assert final["status"] == "cancelled" and final["finish_reason"] == "cancelled"
    assert 0 < final["usage"]["completion_tokens"] < 500


def test_errors_carry_status_and_code(base_url: str) -> None:
    async def scenario() -> list[TokenqClientError]:
        errors = []
        async with AsyncClient(base_url, ALICE_KEY) as alice, AsyncClient(base_url, BOB_KEY) as bob:
            job = await alice.submit("mine", model="fake", max_tokens=2)
            for call in (
                bob.job(job["id"]),
                bob.cancel(job["id"]),
                alice.submit("x", max_tokens=0),
                alice.submit("x", model="gpt-9"),
                alice.wait("job_nope"),
                _drain(bob.stream(job["id"])),
            ):
                with pytest.raises(TokenqClientError) as caught:
                    await call
                errors.append(caught.value)
        return errors

    errors = _run(scenario())
    assert [(e.status, e.code) for e in errors] == [
        (404, "not_found"),
        (404, "not_found"),
        (422, "validation_error"),
        (404, "model_not_found"),
        (404, "not_found"),
        (404, "not_found"),
    ]
    assert all(e.message for e in errors)


async def _drain(tokens: AsyncIterator[str]) -> None:
    async for _ in tokens:
        pass


# --- client behaviour the live stack cannot show on demand (a canned event stream) ----------


def _canned_events(body: str) -> httpx.MockTransport:
    """Serves `body` to a stream read from the start, and nothing more to a resumed one."""

    def handler(request: httpx.Request) -> httpx.Response:
        text = "" if "last-event-id" in request.headers else body
        return httpx.Response(200, text=text, headers={"Content-Type": "text/event-stream"})

    return httpx.MockTransport(handler)


def test_a_reset_event_raises_job_restarted_with_where_to_resume() -> None:
    body = (
        'id: 1\nevent: status\ndata: {"seq":1,"type":"status","data":{"status":"running"}}\n\n'
        ": ping\n\n"
        'id: 2\nevent: token\ndata: {"seq":2,"type":"token","data":{"text":" a","n":1}}\n\n'
        'id: 3\nevent: reset\ndata: {"seq":3,"type":"reset","data":{"attempt":2}}\n\n'
    )

    async def scenario() -> tuple[list[str], JobRestartedError]:
        tokens: list[str] = []
        async with AsyncClient("http://tokenq.test", transport=_canned_events(body)) as tq:
            with pytest.raises(JobRestartedError) as caught:
                async for token in tq.stream("job_x"):
                    tokens.append(token)
        return tokens, caught.value

    tokens, restarted = _run(scenario())
    assert tokens == [" a"]
    assert restarted.attempt == 2 and restarted.last_event_id == 3


def test_a_stream_that_never_reaches_its_end_gives_up_after_the_reconnects() -> None:
    body = 'id: 1\nevent: status\ndata: {"seq":1,"type":"status","data":{}}\n\n'

    async def scenario() -> StreamInterruptedError:
        async with AsyncClient(
            "http://tokenq.test", transport=_canned_events(body), max_reconnects=2
        ) as tq:
            with pytest.raises(StreamInterruptedError) as caught:
                await _drain(tq.stream("job_x"))
        return caught.value

    assert _run(scenario()).last_event_id == 1
