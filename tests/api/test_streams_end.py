"""Every stream ends, and leaves nothing behind: readers at or past the final event, a lost
final PUBLISH, a hub that reconnects, 500 streams, readers that leave during subscribe, and a
reader that never reads its socket.

These run against a second API process with the default stream ping (TOKENQ_STREAM_PING_S
unset: 15 s), since the re-read timer runs at that interval; the session API pings every second.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from api.native.sse import SEND_TIMEOUT_S
from cli.stack import Stack, free_port
from jobs import keys
from jobs.events import Event
from jobs.settings import Settings
from tests.conftest import sse_events, submit, wait_for
from tokenq.client import aiter_sse, iter_sse

DAVE_KEY = "dave-secret-key"
#: The stream ping (and so the follower's re-read interval) a user gets by default.
PING_S = Settings.model_fields["stream_ping_s"].default
#: Slack on top of one ping interval for a follower to notice what pub/sub never told it.
SLACK_S = 5.0


@dataclass(frozen=True)
class API:
    url: str
    pid: int

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def default_api(stack: Stack) -> Iterator[API]:
    """A second API process on the same Redis and workers, with the default stream ping and a
    tenant of its own."""
    env = dict(
        stack.env,
        TOKENQ_API_KEYS=json.dumps({"dave": hashlib.sha256(DAVE_KEY.encode()).hexdigest()}),
    )
    env.pop("TOKENQ_STREAM_PING_S", None)
    api = Stack(env=env, log_dir=stack.log_dir)
    try:
        url = api.start_api("127.0.0.1", free_port())
        yield API(url, api.procs[-1][1].pid)
    finally:
        api.stop()


@pytest.fixture
def dave(default_api: API) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=default_api.url, headers={"Authorization": f"Bearer {DAVE_KEY}"}, timeout=60
    ) as client:
        yield client


# --- helpers -------------------------------------------------------------------------------


def _subscribers(redis_client: redis.Redis, channel: str) -> int:
    return int(redis_client.pubsub_numsub(channel)[0][1])


def _job_channels(redis_client: redis.Redis) -> list[bytes]:
    """Job channels that have a subscriber (only the APIs' hubs subscribe to any)."""
    return list(redis_client.pubsub_channels(keys.job_channel("*")))


def _idle_job(client: httpx.Client) -> dict[str, Any]:
    """A job of model `idle` (no worker serves it): it stays queued, its log open."""
    return submit(client, model="idle", prompt="wait", max_tokens=1)


def _cancel(client: httpx.Client, job_id: str) -> None:
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


def _append(redis_client: redis.Redis, job_id: str, etype: str, data: dict[str, Any]) -> None:
    """Append an event to a job's log and publish it, as the worker's emit script does."""
    seq = redis_client.hincrby(keys.job(job_id), "seq", 1)
    payload = Event.encode(seq, etype, data)
    redis_client.xadd(keys.job_events(job_id), {"e": payload}, id=f"{seq}-0")
    redis_client.publish(keys.job_channel(job_id), payload)


def _ended_job_with_open_log(
    client: httpx.Client, redis_client: redis.Redis
) -> tuple[str, Callable[[], None]]:
    """A job that ended for real (cancelled while queued), whose log is cut back to its first
    event; and the function that puts its final events back in the log with no PUBLISH, as
    when the hub's pub/sub connection lost them."""
    job = _idle_job(client)
    _cancel(client, job["id"])
    stream = keys.job_events(job["id"])
    entries = redis_client.xrange(stream)
    assert json.loads(entries[-1][1][b"e"])["type"] == "done"
    ttl_ms = redis_client.pttl(stream)
    redis_client.delete(stream)
    redis_client.xadd(stream, entries[0][1], id=entries[0][0])

    def lose_the_final_publish() -> None:
        for entry_id, fields in entries[1:]:
            redis_client.xadd(stream, fields, id=entry_id)
        if ttl_ms > 0:
            redis_client.pexpire(stream, ttl_ms)

    return job["id"], lose_the_final_publish


def _read_sse(
    url: str, path: str, headers: dict[str, str] | None = None, timeout_s: float = 60
) -> list[dict]:
    """Every event of an SSE stream until the server ends it; fails past timeout_s (checked
    as data or pings arrive, so a hung stream fails within one ping interval more)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {DAVE_KEY}", **(headers or {})},
        timeout=httpx.Timeout(10, read=None),
    ) as client:
        with client.stream("GET", path) as response:
            assert response.status_code == 200, response.read()
            return [sse.json() for sse in iter_sse(_until(deadline, response.iter_bytes()))]


def _until(deadline: float, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        assert time.monotonic() < deadline, "the stream did not end in time"
        yield chunk


def _read_ws(url: str, path: str, timeout_s: float = 60) -> list[dict]:
    """Every frame of a job's WebSocket until the server closes it normally."""
    deadline = time.monotonic() + timeout_s
    ws_url = url.replace("http://", "ws://") + path
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {DAVE_KEY}"}) as ws:
        events = []
        try:
            while True:
                events.append(json.loads(ws.recv(timeout=deadline - time.monotonic())))
        except ConnectionClosedOK:
            return events


def _api_redis_ports(pid: int) -> set[int]:
    """Local ports of a process's TCP sockets (from /proc: its fds' inodes in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# --- readers at or past the end ------------------------------------------------------------


def test_a_reader_at_or_past_the_final_event_is_answered_204_at_once(dave: httpx.Client) -> None:
    # Given a finished job and a finished batch, read whole
    job = submit(dave, model="fake", prompt="one two", max_tokens=4)
    events = sse_events(dave, f"/v1/jobs/{job['id']}/events")
    final = events[-1]["seq"]
    batch = dave.post(
        "/v1/batches", json={"model": "fake", "jobs": [{"prompt": "a", "max_tokens": 2}] * 3}
    ).json()
    batch_events = sse_events(dave, f"/v1/batches/{batch['id']}/events")
    assert batch_events[-1]["type"] == "done"
    # When a reader reconnects with the final event's id (what EventSource does after every
    # end) or past it, it gets 204 No Content at once (the 10 s timeout would fail a hang)
    for path, last in (
        (f"/v1/jobs/{job['id']}/events", final),
        (f"/v1/jobs/{job['id']}/events", final + 1),
        (f"/v1/jobs/{job['id']}/events", 10**17),
        (f"/v1/batches/{batch['id']}/events", batch_events[-1]["seq"]),
    ):
        response = dave.get(path, headers={"Last-Event-ID": str(last)}, timeout=10)
        assert response.status_code == 204, (path, last, response.text)
        assert response.content == b""
    # And one event before the end still gets the final event, then the end
    assert sse_events(dave, f"/v1/jobs/{job['id']}/events", last_event_id=final - 1) == [events[-1]]


def test_a_websocket_reader_past_the_final_event_is_closed_at_once(
    dave: httpx.Client, default_api: API
) -> None:
    job = submit(dave, model="fake", prompt="one two", max_tokens=4)
    final = sse_events(dave, f"/v1/jobs/{job['id']}/events")[-1]["seq"]
    for last in (final, final + 5):
        url = default_api.url.replace("http://", "ws://")
        with connect(
            f"{url}/v1/jobs/{job['id']}/ws?last_event_id={last}",
            additional_headers={"Authorization": f"Bearer {DAVE_KEY}"},
        ) as ws:
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=10)
            assert ws.close_code == 1000


def test_a_reader_past_the_end_of_a_live_log_ends_with_it(
    dave: httpx.Client, default_api: API, redis_client: redis.Redis
) -> None:
    # Given a queued job whose log is at seq 1, and a reader that claims to be at seq 50
    job = _idle_job(dave)
    with ThreadPoolExecutor(1) as pool:
        reader = pool.submit(
            _read_sse, default_api.url, f"/v1/jobs/{job['id']}/events", {"Last-Event-ID": "50"}
        )
        wait_for(lambda: _subscribers(redis_client, keys.job_channel(job["id"])) == 1, 10)
        # When the job ends (its final event is seq 3, before the reader's 50)
        _cancel(dave, job["id"])
        # Then the reader's stream ends too, with nothing sent
        assert reader.result(timeout=10) == []
    wait_for(lambda: _subscribers(redis_client, keys.job_channel(job["id"])) == 0, 10)


# --- lost publishes ------------------------------------------------------------------------


def test_a_lost_final_publish_costs_at_most_one_ping_interval(
    dave: httpx.Client, default_api: API, redis_client: redis.Redis
) -> None:
    # Given an SSE and a WebSocket follower of a job's open log, both live (subscribed)
    job_id, lose_the_final_publish = _ended_job_with_open_log(dave, redis_client)
    channel = keys.job_channel(job_id)
    with ThreadPoolExecutor(2) as pool:
        sse: Future[list[dict]] = pool.submit(
            _read_sse, default_api.url, f"/v1/jobs/{job_id}/events"
        )
        ws: Future[list[dict]] = pool.submit(_read_ws, default_api.url, f"/v1/jobs/{job_id}/ws")
        wait_for(lambda: _subscribers(redis_client, channel) == 1, 10)
        time.sleep(1)  # both have replayed the log and wait live
        # When the final events reach the log but their PUBLISH never reaches the API
        lose_the_final_publish()
        lost_at = time.monotonic()
        # Then both streams still end, with every event, within one ping interval
        expected = [json.loads(f[b"e"]) for _, f in redis_client.xrange(keys.job_events(job_id))]
        assert sse.result(timeout=PING_S + SLACK_S) == expected
        assert ws.result(timeout=PING_S + SLACK_S) == expected
        assert time.monotonic() - lost_at < PING_S + SLACK_S
    # And nothing stays subscribed
    wait_for(lambda: _subscribers(redis_client, channel) == 0, 10)


def test_a_hub_that_reconnects_refills_every_follower(
    dave: httpx.Client, default_api: API, redis_client: redis.Redis
) -> None:
    # Given an SSE follower of a job's open log, live
    job_id, lose_the_final_publish = _ended_job_with_open_log(dave, redis_client)
    channel = keys.job_channel(job_id)
    with ThreadPoolExecutor(1) as pool:
        sse = pool.submit(_read_sse, default_api.url, f"/v1/jobs/{job_id}/events")
        wait_for(lambda: _subscribers(redis_client, channel) == 1, 10)
        time.sleep(1)
        # When the final events are appended unpublished and the API's pub/sub connection is
        # cut (as Redis does past a subscriber's output buffer limit)
        lose_the_final_publish()
        ports = _api_redis_ports(default_api.pid)
        hub = [
            c
            for c in redis_client.client_list(_type="pubsub")
            if int(c["addr"].split(":")[-1]) in ports
        ]
        assert len(hub) == 1, hub
        redis_client.client_kill_filter(_id=hub[0]["id"])
        # Then the hub reconnects and its followers re-read their logs: this one ends well
        # before its re-read timer (one ping interval) would have fired
        events = sse.result(timeout=PING_S / 2)
        assert events[-1]["type"] == "done"
    wait_for(lambda: _subscribers(redis_client, channel) == 0, 10)


# --- nothing leaks -------------------------------------------------------------------------


def test_500_streams_leave_no_job_channel_subscribed(
    default_api: API, redis_client: redis.Redis
) -> None:
    # Given 500 short jobs, each followed over SSE from its submission to its end
    async def submit_and_follow(client: httpx.AsyncClient, i: int) -> list[dict]:
        body = {"model": "fake", "prompt": f"p{i}", "max_tokens": 1 + i % 8}
        response = await client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        async with client.stream("GET", response.json()["urls"]["events"]) as stream:
            assert stream.status_code == 200
            return [sse.json() async for sse in aiter_sse(stream.aiter_bytes())]

    async def run_all() -> list[list[dict]]:
        async with httpx.AsyncClient(
            base_url=default_api.url,
            headers={"Authorization": f"Bearer {DAVE_KEY}"},
            timeout=120,
            # A connection each: one kept alive may meet uvicorn's keep-alive timeout (5 s)
            # closing it just as it is reused, on a machine this loaded.
            limits=httpx.Limits(max_connections=500, max_keepalive_connections=0),
        ) as client:
            return await asyncio.gather(*(submit_and_follow(client, i) for i in range(500)))

    streams = asyncio.run(run_all())
    # Then every stream got its whole log and ended after its final event
    for events in streams:
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "done"
    # And once the API has done its bookkeeping, no job channel is subscribed
    wait_for(lambda: _job_channels(redis_client) == [], 10, "no job channel subscribed")


def test_readers_that_leave_during_subscribe_leave_no_subscription(
    dave: httpx.Client, default_api: API, redis_client: redis.Redis
) -> None:
    # Given four queued jobs (their logs stay open: only leaving ends their streams)
    jobs = [_idle_job(dave)["id"] for _ in range(4)]

    async def leave_early(job_id: str, start_s: float, stay_s: float, reset: bool) -> None:
        await asyncio.sleep(start_s)
        _, writer = await asyncio.open_connection("127.0.0.1", default_api.port)
        writer.write(
            f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {DAVE_KEY}\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(stay_s)
        if reset:
            writer.transport.abort()  # RST, as a killed client
        else:
            writer.close()
        await asyncio.sleep(0)

    async def storm() -> None:
        # Arrivals spread over half a second, each leaving within 20 ms: many channels are
        # subscribed and released again while their readers are still starting.
        rng = random.Random(8)
        await asyncio.gather(
            *(
                leave_early(jobs[i % 4], rng.uniform(0, 0.5), rng.uniform(0, 0.02), i % 2 == 0)
                for i in range(400)
            )
        )

    # When 400 readers arrive within half a second and each leaves within 20 ms
    asyncio.run(storm())
    # Then none of the four channels stays subscribed
    channels = [keys.job_channel(j) for j in jobs]
    wait_for(lambda: all(_subscribers(redis_client, c) == 0 for c in channels), 10)
    # And a reader that stays is subscribed, and released when it leaves
    with httpx.Client(
        base_url=default_api.url, headers={"Authorization": f"Bearer {DAVE_KEY}"}, timeout=10
    ) as client:
        with client.stream("GET", f"/v1/jobs/{jobs[0]}/events") as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()  # kept: a dropped iterator closes the response
            next(chunks)
            wait_for(lambda: _subscribers(redis_client, channels[0]) == 1, 10)
    wait_for(lambda: _subscribers(redis_client, channels[0]) == 0, 10)
    for job_id in jobs:
        _cancel(dave, job_id)


def test_a_reader_that_never_reads_is_cut_off_and_unsubscribed(
    dave: httpx.Client, default_api: API, redis_client: redis.Redis
) -> None:
    # Given a reader of a queued job's events whose socket is never read (a small receive
    # buffer), live
    job = _idle_job(dave)
    channel = keys.job_channel(job["id"])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", default_api.port))
    try:
        sock.sendall(
            f"GET /v1/jobs/{job['id']}/events HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {DAVE_KEY}\r\n\r\n".encode()
        )
        wait_for(lambda: _subscribers(redis_client, channel) == 1, 10)
        # When the job's log grows by 8 MB (more than every buffer on the way holds)
        flooded_at = time.monotonic()
        for n in range(1, 129):
            _append(redis_client, job["id"], "token", {"text": "x" * 65536, "n": n})
        # Then the server cuts the reader off within its send bound and lets go of the
        # subscription, while the job is still queued (its stream had not ended)
        wait_for(
            lambda: _subscribers(redis_client, channel) == 0,
            SEND_TIMEOUT_S + 15,
            "the stalled reader's subscription to be released",
        )
        assert time.monotonic() - flooded_at >= SEND_TIMEOUT_S  # cut off by the bound
        assert dave.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
        # And a reader that reads at last finds the stream closed unfinished (no last chunk)
        sock.settimeout(20)
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        assert not received.endswith(b"0\r\n\r\n")
    finally:
        sock.close()
        _cancel(dave, job["id"])
