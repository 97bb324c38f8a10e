"""Bad input gets a clear, structured 4xx, never a 500, and never a half-created batch."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from tests.conftest import MAX_BATCH_JOBS, MAX_BODY_BYTES


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 100_000}, "max_tokens"),
        ({"prompt": "x", "temperature": 2.5}, "temperature"),
        ({"prompt": "x", "top_p": -0.1}, "top_p"),
        ({"prompt": "x", "stop": ["a"] * 9}, "stop"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, None),
        ({"max_tokens": 3}, None),
        ({"prompt": "x", "unknown_field": 1}, "unknown_field"),
        ({"messages": [{"role": "wizard", "content": "y"}]}, "messages.0.role"),
    ],
)
def test_out_of_bounds_fields_are_422(client: httpx.Client, body: dict, param: str | None) -> None:
    error = _error(client.post("/v1/jobs", json=body), 422)
    assert error["code"] == "validation_error"
    if param:
        assert error["param"] == param


def test_unknown_model_is_404_with_the_known_models(client: httpx.Client) -> None:
    error = _error(client.post("/v1/jobs", json={"model": "gpt-9", "prompt": "x"}), 404)
    assert error["code"] == "model_not_found"
    assert "smollm2" in error["message"] and "gemma3" in error["message"]


def test_prompt_beyond_the_context_is_422_with_both_counts(client: httpx.Client) -> None:
    # SmolLM2's context here is 2048 tokens; "hello " is one token each.
    response = client.post("/v1/jobs", json={"prompt": "hello " * 1500, "max_tokens": 1000})
    error = _error(response, 422)
    assert error["code"] == "context_length_exceeded"
    assert "max_tokens is 1000" in error["message"] and "2048" in error["message"]
    assert "the prompt is 15" in error["message"]  # ~1500 prompt tokens, counted by the model


def test_unknown_template_is_404_and_missing_inputs_400(client: httpx.Client) -> None:
    assert (
        _error(client.post("/v1/jobs", json={"template": "nope", "inputs": {}}), 404)["code"]
        == "template_not_found"
    )
    error = _error(
        client.post("/v1/jobs", json={"template": "translate", "inputs": {"input": "hi"}}), 400
    )
    assert "language" in error["message"]


def test_malformed_jsonl_line_is_400_naming_the_line(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    before = len(redis_client.keys("tokenq:batch:*"))
    body = b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": oops}\n'
    error = _error(
        client.post("/v1/batches", content=body, headers={"Content-Type": "application/jsonl"}), 400
    )
    assert error["message"].startswith("line 3:")
    # A valid line with a bad field rejects the whole batch too, naming its line
    body = b'{"prompt": "a"}\n{"prompt": "b", "temperature": 9}\n'
    error = _error(
        client.post("/v1/batches", content=body, headers={"Content-Type": "application/jsonl"}), 400
    )
    assert error["message"].startswith("line 2:") and "temperature" in error["message"]
    # An unknown model on one line of a JSON batch
    error = _error(
        client.post("/v1/batches", json=[{"prompt": "a"}, {"prompt": "b", "model": "nope"}]), 404
    )
    assert error["message"].startswith("jobs[1]:")
    assert len(redis_client.keys("tokenq:batch:*")) == before  # nothing half-created


def test_body_and_batch_size_limits_are_413(client: httpx.Client) -> None:
    big = {"prompt": "x" * (MAX_BODY_BYTES + 10)}
    assert _error(client.post("/v1/jobs", json=big), 413)["code"] == "payload_too_large"
    too_many = [{"prompt": "a", "max_tokens": 1}] * (MAX_BATCH_JOBS + 1)
    error = _error(client.post("/v1/batches", json={"model": "fake", "jobs": too_many}), 413)
    assert str(MAX_BATCH_JOBS) in error["message"]


def test_invalid_json_and_unknown_ids(client: httpx.Client) -> None:
    _error(
        client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}),
        422,
    )
    _error(
        client.post(
            "/v1/batches", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        400,
    )
    _error(client.post("/v1/batches", json=[]), 400)
    assert _error(client.get("/v1/jobs/job_doesnotexist"), 404)["code"] == "not_found"
    _error(client.get("/v1/jobs/job_doesnotexist/events"), 404)
    _error(client.post("/v1/jobs/job_doesnotexist/cancel"), 404)
    _error(client.get("/v1/batches/batch_nope"), 404)
    _error(client.get("/v1/nothing-here"), 404)


def test_never_a_500_on_odd_input(client: httpx.Client) -> None:
    odd = [
        b"[]",
        b"null",
        b"1",
        b'"s"',
        b'{"prompt": null}',
        b'{"prompt": 5}',
        b'{"stop": 3, "prompt": "x"}',
        json.dumps({"prompt": "\udcff"}, ensure_ascii=True).encode(),
        b'{"seed": -1, "prompt": "x"}',
    ]
    for body in odd:
        for path in ("/v1/jobs", "/v1/batches"):
            response = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert 400 <= response.status_code < 500, (path, body, response.text)
