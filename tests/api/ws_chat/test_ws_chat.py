"""WebSocket chat (/ws/chat): growing response frames, then status 200; bad history is a frame."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import ALICE_KEY, wait_job

TIMEOUT_S = 180


@contextmanager
def _chat(base_url: str, key: str | None = ALICE_KEY) -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = base_url.replace("http://", "ws://") + "/ws/chat"
    with connect(url, additional_headers=headers, open_timeout=60) as ws:
        yield ws


def _turn(ws: ClientConnection, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one message; the frames it gets, up to the final (200) or an error frame."""
    ws.send(json.dumps(message))
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=TIMEOUT_S))
        frames.append(frame)
        if frame["status"] != 202:
            return frames


def test_pairs_history_streams_growing_frames_then_200(
    client: httpx.Client, bob: httpx.Client, base_url: str
) -> None:
    # Given a conversation so far, as ChatGLM's [user, assistant] pairs
    history = [["Hi!", "Hello! How can I help you today?"]]
    query = "Name a fruit."

    # When the next query is sent to the real model
    with _chat(base_url) as ws:
        *progress, final = _turn(
            ws, {"query": query, "history": history, "max_tokens": 16, "temperature": 0}
        )

    # Then each 202 frame carries the response so far, growing, with the history including it
    assert progress and all(f["status"] == 202 for f in progress)
    responses = [f["response"] for f in progress]
    assert all(b.startswith(a) and len(b) > len(a) for a, b in pairwise(responses))
    for frame in progress:
        assert frame["history"] == [*history, [query, frame["response"]]]
    # and the 200 frame has the whole answer: the job's text
    assert final["status"] == 200
    job = wait_job(client, final["job_id"])
    assert job["status"] == "succeeded"
    assert final["response"] == responses[-1] == job["text"]
    assert final["history"] == [*history, [query, job["text"]]]
    assert final["usage"] == job["usage"] and final["finish_reason"] == job["finish_reason"]
    # The job is the caller's alone
    assert bob.get(f"/v1/jobs/{final['job_id']}").status_code == 404


def test_role_history_is_answered_in_the_same_format(base_url: str) -> None:
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    with _chat(base_url) as ws:
        final = _turn(ws, {"query": "Say yes.", "history": history, "max_tokens": 8})[-1]
    assert final["status"] == 200
    assert final["history"] == [
        *history,
        {"role": "user", "content": "Say yes."},
        {"role": "assistant", "content": final["response"]},
    ]


@pytest.mark.parametrize(
    ("message", "status", "says"),
    [
        ({"query": "q", "history": [{"role": "assistant", "content": "a"}]}, 400, "history[0]"),
        (
            {
                "query": "q",
                "history": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            },
            400,
            "alternates",
        ),
        ({"query": "q", "history": [{"role": "user", "content": "a"}]}, 400, "end with"),
        ({"query": "q", "history": [["a", "b"], {"role": "user", "content": "c"}]}, 400, "all"),
        ({"query": "q", "history": [["a", "b", "c"]]}, 400, "pair"),
        ({"query": "q", "history": [{"role": "user"}]}, 400, "content"),
        ({"query": "q", "history": "not a list"}, 400, "history"),
        ({"history": []}, 400, "query"),
        ({"query": "q", "max_tokens": 0}, 400, "max_tokens"),
        ({"query": "q", "model": "gpt-9"}, 404, "gpt-9"),
        ({"query": "hello " * 1500, "max_tokens": 1000}, 422, "context"),
        ("not json", 400, "JSON"),
        ([1, 2], 400, "object"),
    ],
)
def test_bad_messages_get_an_error_frame_and_the_socket_stays_open(
    base_url: str, message: Any, status: int, says: str
) -> None:
    with _chat(base_url) as ws:
        # When a bad message is sent
        ws.send(message if isinstance(message, str) else json.dumps(message))
        error = json.loads(ws.recv(timeout=TIMEOUT_S))

        # Then an error frame says what is wrong
        assert error["status"] == status and says in error["error"], error
        assert error["code"]
        # and the same connection still serves a good message
        final = _turn(ws, {"query": "q", "model": "fake", "max_tokens": 3})[-1]
        assert final["status"] == 200 and final["response"] == " tok0 tok1 tok2"


def test_a_failed_job_is_an_error_frame(base_url: str) -> None:
    with _chat(base_url) as ws:
        frames = _turn(ws, {"query": "x [[fail]] y", "model": "fake", "max_tokens": 8})
    assert frames[-1]["status"] == 500 and frames[-1]["code"] == "job_failed"
    assert frames[-1]["job_id"]


def test_a_missing_or_unknown_key_gets_a_401_frame_then_4401(base_url: str) -> None:
    for key in (None, "wrong-key"):
        with _chat(base_url, key) as ws:
            frame = json.loads(ws.recv(timeout=TIMEOUT_S))
            assert frame["status"] == 401 and frame["code"] == "invalid_api_key"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=TIMEOUT_S)
        assert ws.close_code == 4401, closed.value
