"""Hostile or broken input that used to answer 500: now a 4xx in the surface's error shape, the
API still up, and nothing half-made in Redis. (A first part of the hostile-input issue.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import MAX_BODY_BYTES, create_openai_batch, submit, wait_job
from tokenq.client import iter_sse

JSONL = {"Content-Type": "application/jsonl"}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.fixture
def batch_keys(redis_client: redis.Redis) -> Iterator[None]:
    """Asserts that the test left no batch behind (none of its bodies may half-create one)."""
    before = set(redis_client.scan_iter("tokenq:batch:*"))
    yield
    assert set(redis_client.scan_iter("tokenq:batch:*")) == before


@pytest.fixture(scope="module")
def finished_job(base_url: str) -> dict:
    from tests.conftest import ALICE_KEY

    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ALICE_KEY}"}) as c:
        job = submit(c, model="fake", prompt="one two", max_tokens=2)
        return wait_job(c, job["id"])


def test_ids_that_address_other_keys_are_404(client: httpx.Client, finished_job: dict) -> None:
    # `<id>:events` names the job's event stream in Redis: it must not be read as a job.
    job_id = finished_job["id"]
    for path in (
        f"/v1/jobs/{job_id}:events",
        f"/v1/jobs/{job_id}:events/events",
        f"/v1/jobs/{job_id}:events/cancel",
    ):
        method = client.post if path.endswith("cancel") else client.get
        assert _error(method(path), 404)["code"] == "not_found"
    batch = client.post("/v1/batches", json={"model": "fake", "jobs": [{"prompt": "a"}]}).json()
    assert _error(client.get(f"/v1/batches/{batch['id']}:jobs"), 404)["code"] == "not_found"
    assert _error(client.get(f"/v1/files/{batch['id']}:jobs-output"), 404)
    upload = client.post(
        "/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"}
    ).json()
    assert _error(client.get(f"/v1/files/{upload['id']}:content"), 404)
    assert client.get(f"/v1/files/{upload['id']}/content").status_code == 200


@pytest.mark.parametrize("value", ["²", "1" * 5000, "-1", "1e3", "12 3"])
def test_last_event_id_takes_decimal_digits_only(
    client: httpx.Client, finished_job: dict, value: str
) -> None:
    path = f"/v1/jobs/{finished_job['id']}/events"
    error = _error(client.get(path, headers={"Last-Event-ID": value.encode()}), 400)
    assert error["code"] == "invalid_last_event_id"
    assert _error(client.get(path, params={"last_event_id": value}), 400)


def test_a_valid_last_event_id_still_resumes(client: httpx.Client, finished_job: dict) -> None:
    path = f"/v1/jobs/{finished_job['id']}/events"
    with client.stream("GET", path, headers={"Last-Event-ID": "2"}) as response:
        assert response.status_code == 200
        ids = [event.id for event in iter_sse(response.iter_bytes())]
    assert ids and ids[0] == "3"


@pytest.mark.usefixtures("batch_keys")
@pytest.mark.parametrize(
    ("content", "headers", "code"),
    [
        (b'[{"prompt": "\xff\xfe"}]', {"Content-Type": "application/json"}, "invalid_json"),
        (b"[" * 100_000, {"Content-Type": "application/json"}, "invalid_json"),
        (
            b'{"jobs": [{"prompt": "\\ud800"}]}',
            {"Content-Type": "application/json"},
            "invalid_json",
        ),
        (b'{"prompt": "a"}\n{"prompt": "\xff"}\n', JSONL, "invalid_encoding"),
        (b'{"prompt": "a"}\n' + b"[" * 100_000 + b"\n", JSONL, "invalid_jsonl"),
        (b'{"prompt": "a", "custom_id": "\\udc00"}\n', JSONL, "invalid_jsonl"),
    ],
)
def test_undecodable_batch_bodies_are_400(
    client: httpx.Client, content: bytes, headers: dict[str, str], code: str
) -> None:
    error = _error(client.post("/v1/batches?model=fake", content=content, headers=headers), 400)
    assert error["code"] == code


@pytest.mark.usefixtures("batch_keys")
@pytest.mark.parametrize(
    "metadata", ["not json", "[1, 2]", '{"a": 1}', json.dumps({str(i): "v" for i in range(17)})]
)
def test_multipart_metadata_must_be_an_object_of_strings(
    client: httpx.Client, metadata: str
) -> None:
    response = client.post(
        "/v1/batches",
        files={"file": ("jobs.jsonl", b'{"prompt": "a"}\n')},
        data={"model": "fake", "metadata": metadata},
    )
    assert _error(response, 400)["param"].startswith("metadata")


def test_openai_input_file_lines_that_cannot_be_stored_fail_alone(client: httpx.Client) -> None:
    good = {"custom_id": "ok", "method": "POST", "url": "/v1/completions"}
    good["body"] = {"model": "fake", "prompt": "a", "max_tokens": 1}  # type: ignore[assignment]
    lines = [
        json.dumps(good).encode(),
        b'{"custom_id": "\\ud800", "method": "POST", "url": "/v1/completions", "body": {}}',
        b"[" * 100_000,
    ]
    batch = create_openai_batch(client, b"\n".join(lines))
    assert batch.status_code == 200, batch.text
    counts = batch.json()["request_counts"]
    assert (counts["total"], counts["failed"]) == (3, 2), counts


@pytest.mark.usefixtures("batch_keys")
def test_an_input_file_that_is_not_utf8_is_400(client: httpx.Client) -> None:
    response = create_openai_batch(client, b'{"a": "\xff"}\n')
    assert _error(response, 400)["code"] == "invalid_encoding"


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    yield b'{"prompt": "'
    while sent < total:
        yield b"x" * 65536
        sent += 65536
    yield b'"}'


def test_a_chunked_body_over_the_limit_is_413_on_every_surface(client: httpx.Client) -> None:
    for path in ("/v1/jobs", "/v1/batches", "/v1/chat/completions"):
        response = client.post(
            path, content=_chunks(MAX_BODY_BYTES + 1), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers  # it really was chunked
        assert _error(response, 413)["code"] == "payload_too_large"
    dify = client.post(
        "/v1/completion-messages",
        content=_chunks(MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
    )
    assert dify.status_code == 413 and dify.json()["code"] == "payload_too_large", dify.text
    # Under the limit, a chunked body is read as usual.
    small = client.post(
        "/v1/jobs",
        content=iter([b'{"model": "fake", ', b'"prompt": "a", "max_tokens": 1}']),
        headers={"Content-Type": "application/json"},
    )
    assert small.status_code == 202, small.text


@pytest.mark.parametrize(
    "content", [b'{"query": "\xff", "user": "u"}', b"[" * 100_000, b'{"query": "hi", "user": 5']
)
def test_malformed_dify_bodies_are_400_in_difys_shape(client: httpx.Client, content: bytes) -> None:
    response = client.post(
        "/v1/completion-messages", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"code", "message", "status"}
    assert response.json()["code"] == "invalid_param"


@pytest.mark.usefixtures("batch_keys")
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_batches_are_json_jsonl_or_multipart_only(client: httpx.Client, content_type: str) -> None:
    # What a cross-site form can send without a preflight must not create a batch.
    body = json.dumps({"model": "fake", "jobs": [{"prompt": "a"}]})
    response = client.post("/v1/batches", content=body, headers={"Content-Type": content_type})
    assert _error(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"json_schema": {"type": "string", "maxLength": 30000}}, "schema_too_complex"),
        (
            {"json_schema": {"type": "array", "items": {"type": "integer"}, "maxItems": 10**9}},
            "schema_too_complex",
        ),
        ({"json_schema": {"enum": [f"v{i}" for i in range(100_000)]}}, "schema_too_complex"),
        ({"grammar": "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000}, "grammar_too_complex"),
    ],
)
def test_grammars_that_would_crash_llama_cpp_are_refused(
    client: httpx.Client, body: dict, code: str
) -> None:
    # Each of these killed the API process (SIGSEGV in llama.cpp's grammar parser), or grew it
    # past memory, or stalled it for seconds; now they are refused before llama.cpp sees them.
    error = _error(client.post("/v1/jobs", json={"model": "smollm2", "prompt": "a", **body}), 400)
    assert error["code"] == code
    assert client.get("/healthz").status_code == 200


def test_an_openai_response_format_schema_is_bounded_too(client: httpx.Client) -> None:
    schema = {"type": "string", "maxLength": 30000}
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2",
            "messages": [{"role": "user", "content": "a"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        },
    )
    assert _error(response, 400)["code"] == "schema_too_complex"


def test_prompt_text_is_bounded_in_total(client: httpx.Client) -> None:
    # 10 MB of template inputs stalled every client for seconds while it was rendered; the
    # total is bounded now (and rendering runs off the event loop).
    inputs = {f"v{i}": "x" * 400_000 for i in range(3)}  # 1.2 M characters, under the body limit
    response = client.post("/v1/jobs", json={"template": "default", "inputs": inputs})
    assert "limit is 1000000" in _error(response, 422)["message"]
    dify = client.post("/v1/completion-messages", json={"query": "x" * 1_000_001, "user": "u"})
    assert dify.status_code == 400 and dify.json()["code"] == "invalid_param", dify.text


def test_the_openapi_schema_shows_the_error_shape_each_surface_answers(
    client: httpx.Client,
) -> None:
    # It showed FastAPI's 422 `{"detail": [...]}` on every route, a body no route answers (and a
    # status the OpenAI and Dify routes never answer): a client generated from it was wrong.
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]

    def error_schema(method: str, path: str) -> dict:
        responses = schema["paths"][path][method]["responses"]
        assert "422" not in responses and "5XX" in responses
        ref = responses["4XX"]["content"]["application/json"]["schema"]["$ref"]
        return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    native = client.post("/v1/jobs", json={"model": "fake"})
    assert native.status_code == 422
    for method, path in (("post", "/v1/jobs"), ("post", "/v1/chat/completions")):
        documented = error_schema(method, path)
        assert set(documented["required"]) == set(native.json()) == {"error"}
    dify = client.post("/v1/completion-messages", json={"query": "a"})
    assert dify.status_code == 400
    documented = error_schema("post", "/v1/completion-messages")
    assert set(documented["required"]) == set(dify.json()) == {"code", "message", "status"}


def test_the_api_is_still_up(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
