"""Dify-compatible completion messages: blocking, streaming (Dify's events), stop, Dify's errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import read_sse, submit, wait_job
from tokenq import SSEEvent

PATH = "/v1/completion-messages"


def _dify_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "status"}, body
    assert body["status"] == status and body["code"] == code and body["message"], body
    return body


def _messages(events: list[SSEEvent]) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in events if e.data is not None]


def test_blocking_returns_the_answer_with_usage(client: httpx.Client) -> None:
    # Given a Dify completion request for the real default model
    body = {
        "inputs": {},
        "query": "The capital of France is",
        "response_mode": "blocking",
        "user": "user-1",
        "max_tokens": 16,
        "temperature": 0,
    }

    # When it is sent in blocking mode
    response = client.post(PATH, json=body)

    # Then the answer comes back in Dify's shape, and it is the job's own result
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["event"] == "message" and answer["mode"] == "completion"
    assert answer["task_id"] == answer["id"] == answer["message_id"]
    assert answer["answer"].strip()
    assert isinstance(answer["created_at"], int)
    job = client.get(f"/v1/jobs/{answer['task_id']}").json()
    assert job["status"] == "succeeded" and job["model"] == "smollm2"
    assert job["text"] == answer["answer"]
    assert job["custom_id"] == "user-1"
    usage = answer["metadata"]["usage"]
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert {k: usage[k] for k in counts} == {k: job["usage"][k] for k in counts}
    assert usage["currency"] == "USD" and usage["latency"] >= 0


def test_inputs_fill_the_named_template(client: httpx.Client) -> None:
    # Given the same translation asked natively with a template, and through Dify's inputs
    native = wait_job(
        client,
        submit(
            client,
            template="translate",
            inputs={"language": "French", "input": "Good morning"},
            max_tokens=4,
            temperature=0,
        )["id"],
    )
    by_query = client.post(
        PATH,
        json={
            "inputs": {"language": "French"},
            "query": "Good morning",
            "user": "u",
            "prompt_name": "translate",
            "max_tokens": 4,
            "temperature": 0,
        },
    )
    by_inputs_query = client.post(
        PATH,
        json={
            "inputs": {"language": "French", "query": "Good morning"},
            "user": "u",
            "prompt_name": "translate",
            "max_tokens": 4,
            "temperature": 0,
        },
    )

    # Then both render the same prompt as the native job (same prompt tokens)
    for response in (by_query, by_inputs_query):
        assert response.status_code == 200, response.text
        usage = response.json()["metadata"]["usage"]
        assert usage["prompt_tokens"] == native["usage"]["prompt_tokens"]
    # and the default template is the bare query, a much shorter prompt
    bare = client.post(PATH, json={"query": "Good morning", "user": "u", "max_tokens": 2})
    assert bare.json()["metadata"]["usage"]["prompt_tokens"] < native["usage"]["prompt_tokens"]


def test_streaming_sends_dify_events_that_make_up_the_answer(client: httpx.Client) -> None:
    # Given a streaming request for the real model
    body = {
        "inputs": {},
        "query": "List three colours:",
        "response_mode": "streaming",
        "user": "user-1",
        "max_tokens": 24,
        "temperature": 0,
    }

    # When its stream is read to the end
    with client.stream("POST", PATH, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _messages(list(read_sse(response)))

    # Then message chunks come first and message_end last, all naming the same task
    *chunks, end = events
    assert chunks and all(c["event"] == "message" for c in chunks)
    assert end["event"] == "message_end"
    task_id = end["task_id"]
    for event in events:
        assert event["task_id"] == event["message_id"] == event["id"] == task_id
    assert all(isinstance(c["created_at"], int) and c["answer"] for c in chunks)
    # and the chunks make up exactly the job's text, with its usage
    job = client.get(f"/v1/jobs/{task_id}").json()
    assert "".join(c["answer"] for c in chunks) == job["text"]
    usage = end["metadata"]["usage"]
    assert usage["completion_tokens"] == job["usage"]["completion_tokens"]
    assert usage["total_tokens"] == job["usage"]["total_tokens"]


def test_stop_is_checked_against_tenant_and_user_and_ends_the_stream(
    client: httpx.Client, bob: httpx.Client
) -> None:
    # Given a long streaming task of user "u1" on the slow fake model
    body = {
        "query": "a long answer",
        "response_mode": "streaming",
        "user": "u1",
        "model": "slow",
        "max_tokens": 300,
    }
    with client.stream("POST", PATH, json=body) as response:
        assert response.status_code == 200, response.read()
        events = read_sse(response)
        seen: list[SSEEvent] = []
        # When it has sent some chunks and a ping
        for event in events:
            seen.append(event)
            if any(e.event == "ping" for e in seen) and len(_messages(seen)) >= 3:
                break
        task_id = _messages(seen)[0]["task_id"]

        # Then another tenant, and another user of the same tenant, cannot stop it
        _dify_error(bob.post(f"{PATH}/{task_id}/stop", json={"user": "u1"}), 404, "not_found")
        _dify_error(client.post(f"{PATH}/{task_id}/stop", json={"user": "u2"}), 404, "not_found")
        # but its own user can
        stopped = client.post(f"{PATH}/{task_id}/stop", json={"user": "u1"})
        assert stopped.status_code == 200 and stopped.json() == {"result": "success"}
        rest = list(events)

    # And the stream ends with message_end, the answer being the text generated until then
    messages = _messages(seen + rest)
    assert messages[-1]["event"] == "message_end"
    assert all(m["event"] == "message" for m in messages[:-1])
    job = wait_job(client, task_id)
    assert job["status"] == "cancelled"
    assert "".join(m["answer"] for m in messages[:-1]) == job["text"]
    assert messages[-1]["metadata"]["usage"]["completion_tokens"] < 300
    # Dify's ping is an `event: ping` block without data
    assert all(e.data is None for e in seen if e.event == "ping")
    # and stopping a finished task changes nothing and still succeeds
    assert client.post(f"{PATH}/{task_id}/stop", json={"user": "u1"}).json() == {
        "result": "success"
    }


def test_a_failed_generation_is_an_error_event_or_a_400(client: httpx.Client) -> None:
    body = {"query": "break [[fail]] here", "user": "u", "model": "fake", "max_tokens": 8}
    with client.stream("POST", PATH, json={**body, "response_mode": "streaming"}) as response:
        assert response.status_code == 200
        events = _messages(list(read_sse(response)))
    error = events[-1]
    assert error["event"] == "error" and error["status"] == 400
    assert error["code"] == "completion_request_error" and error["message"]
    assert error["task_id"] == error["message_id"]
    _dify_error(client.post(PATH, json=body), 400, "completion_request_error")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": "hi"}, 400, "invalid_param"),  # no user
        ({"query": "hi", "user": ""}, 400, "invalid_param"),
        ({"query": "hi", "user": "u", "response_mode": "sse"}, 400, "invalid_param"),
        ({"query": "hi", "user": "u", "inputs": {"a": {"nested": 1}}}, 400, "invalid_param"),
        ({"query": "hi", "user": "u", "inputs": "text"}, 400, "invalid_param"),
        ({"query": "hi", "user": "u", "files": [{"type": "image"}]}, 400, "invalid_param"),
        ({"query": "hi", "user": "u", "max_tokens": 0}, 400, "invalid_param"),
        ({"user": "u"}, 400, "invalid_param"),  # the default template needs {input}
        ({"query": "hi", "user": "u", "prompt_name": "translate"}, 400, "invalid_param"),
        ({"query": "hi", "user": "u", "prompt_name": "nope"}, 400, "app_unavailable"),
        ({"query": "hi", "user": "u", "model": "gpt-9"}, 400, "model_currently_not_support"),
        (
            {"query": "hello " * 1500, "user": "u", "max_tokens": 1000},
            400,
            "completion_request_error",
        ),
    ],
)
def test_bad_input_gets_difys_error_shape(
    client: httpx.Client, body: dict[str, Any], status: int, code: str
) -> None:
    for mode in ("blocking", "streaming"):
        request = {"response_mode": mode, **body}
        _dify_error(client.post(PATH, json=request), status, code)


def test_malformed_json_missing_key_and_unknown_task(client: httpx.Client, base_url: str) -> None:
    bad_json = client.post(PATH, content=b"{oops", headers={"Content-Type": "application/json"})
    _dify_error(bad_json, 400, "invalid_param")
    with httpx.Client(base_url=base_url) as anonymous:
        _dify_error(anonymous.post(PATH, json={"query": "hi", "user": "u"}), 401, "unauthorized")
    _dify_error(client.post(f"{PATH}/job_nope/stop", json={"user": "u"}), 404, "not_found")
    _dify_error(client.post(f"{PATH}/job_nope/stop", json={}), 400, "invalid_param")
