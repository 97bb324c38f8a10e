"""Chatchat-compatible completion: text pieces over SSE, one answer otherwise, prompt_name, echo."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import read_sse, wait_job
from tokenq import SSEEvent

PATH = "/other/completion"


def _complete(client: httpx.Client, **body: Any) -> tuple[list[SSEEvent], dict[str, Any]]:
    """The response's SSE events and the job behind it (named by X-Tokenq-Job-Id)."""
    with client.stream("POST", PATH, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_sse(response))
        job_id = response.headers["x-tokenq-job-id"]
    return events, wait_job(client, job_id)


def test_streaming_sends_the_text_pieces(client: httpx.Client) -> None:
    # When a streaming completion runs on the real default model
    events, job = _complete(
        client, query="The three primary colors are", stream=True, max_tokens=16, temperature=0
    )

    # Then each data event is a piece of text, and together they are the job's text
    assert job["status"] == "succeeded" and job["model"] == "smollm2"
    assert all(e.event == "message" and e.data for e in events)
    assert len(events) > 1
    assert "".join(e.data or "" for e in events) == job["text"]


def test_non_streaming_sends_one_answer_with_the_template_and_echo(client: httpx.Client) -> None:
    # When a non-streaming completion uses a named template and echo
    text = "Redis keeps its data in memory and can persist it to disk."
    events, job = _complete(
        client, query=text, prompt_name="summarize", echo=True, max_tokens=12, temperature=0
    )

    # Then one data event carries the whole answer: the rendered prompt, then the generated text
    assert [e.event for e in events] == ["message"]
    assert events[0].data == job["text"]
    prompt = f"Summarize the following text in one or two sentences.\n\n{text}\n\nSummary:"
    assert job["text"].startswith(prompt) and len(job["text"]) > len(prompt)


@pytest.mark.parametrize("max_tokens", [0, -1, None])
def test_max_tokens_up_to_the_context_when_not_positive(
    client: httpx.Client, max_tokens: int | None
) -> None:
    # The fake model's context is 4096 tokens and it generates until max_tokens
    events, job = _complete(client, query="go on", model_name="fake", max_tokens=max_tokens)
    usage = job["usage"]
    assert job["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 4096
    assert events[0].data == job["text"]


def test_a_failed_generation_ends_the_stream_with_an_error_event(client: httpx.Client) -> None:
    for stream in (True, False):
        events, job = _complete(
            client, query="x [[fail]] y", model_name="fake", max_tokens=8, stream=stream
        )
        assert job["status"] == "failed"
        assert events[-1].event == "error"
        assert json.loads(events[-1].data or "{}")["error"]["code"] == "job_failed"


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "validation_error"),
        ({"query": "hi", "temperature": 1.5}, 422, "validation_error"),
        ({"query": "hi", "max_tokens": "many"}, 422, "validation_error"),
        ({"query": "hi", "stream": "perhaps"}, 422, "validation_error"),
        ({"query": ""}, 400, "empty_prompt"),
        ({"query": "hi", "prompt_name": "nope"}, 404, "template_not_found"),
        ({"query": "hi", "prompt_name": "translate"}, 400, "missing_inputs"),
        ({"query": "hi", "model_name": "gpt-9"}, 404, "model_not_found"),
        ({"query": "hello " * 1500}, 422, "context_length_exceeded"),  # + default 1024
        ({"query": "hello " * 2100, "max_tokens": 0}, 422, "context_length_exceeded"),
    ],
)
def test_bad_input_is_a_structured_4xx(
    client: httpx.Client, body: dict[str, Any], status: int, code: str
) -> None:
    assert _error(client.post(PATH, json=body), status)["code"] == code


def test_malformed_json_and_missing_key(client: httpx.Client, base_url: str) -> None:
    bad = client.post(PATH, content=b"{oops", headers={"Content-Type": "application/json"})
    assert _error(bad, 422)["code"] == "validation_error"
    with httpx.Client(base_url=base_url) as anonymous:
        assert _error(anonymous.post(PATH, json={"query": "hi"}), 401)["code"] == "invalid_api_key"
