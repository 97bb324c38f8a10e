"""OpenAI's Files and Batch API with the official `openai` client, on tokenq's one batch resource."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from tests.conftest import ALICE_KEY, BOB_KEY, sse_events, wait_for

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@pytest.fixture
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=ALICE_KEY, max_retries=0, timeout=120
    ) as c:
        yield c


@pytest.fixture
def bob_oai(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=BOB_KEY, max_retries=0, timeout=60) as c:
        yield c


def chat_line(custom_id: str, content: str, **body: Any) -> str:
    body = {"model": "fake", "messages": [{"role": "user", "content": content}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body})


def upload(oai: openai.OpenAI, lines: list[str]) -> str:
    uploaded = oai.files.create(file=("requests.jsonl", "\n".join(lines).encode()), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.object == "file"
    return uploaded.id


def run_batch(oai: openai.OpenAI, file_id: str, endpoint: str = CHAT, **extra: Any) -> Batch:
    batch = oai.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        **extra,
    )
    return wait_for(
        lambda: (
            (b := oai.batches.retrieve(batch.id)).status in ("completed", "failed", "cancelled")
            and b
        ),
        120,
        f"batch {batch.id} to end",
    )


def jsonl(oai: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in oai.files.content(file_id).text.splitlines()]


def test_batch_round_trip_with_the_official_client(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    # Given a file of three good requests and three bad lines between them
    lines = [
        chat_line("good-1", "first", max_tokens=3),
        "{this is not json",
        chat_line("good-2", "second", max_tokens=4),
        json.dumps({"custom_id": "wrong-url", "method": "POST", "url": COMPLETIONS, "body": {}}),
        chat_line("good-3", "third", max_tokens=5),
        chat_line("too-hot", "x", temperature=5),
    ]
    file_id = upload(oai, lines)
    assert oai.files.retrieve(file_id).bytes == len("\n".join(lines).encode())
    assert oai.files.content(file_id).text == "\n".join(lines)

    # When a batch runs it
    created = oai.batches.create(
        input_file_id=file_id,
        endpoint=CHAT,
        completion_window="24h",
        metadata={"project": "demo"},
    )
    assert created.status == "in_progress" and created.input_file_id == file_id
    assert created.metadata == {"project": "demo"}
    assert created.request_counts is not None and created.request_counts.total == 6
    done = wait_for(
        lambda: (b := oai.batches.retrieve(created.id)).status == "completed" and b,
        120,
        "the batch to complete",
    )

    # Then the counts say three completed and three failed
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 3)
    assert done.completed_at and done.output_file_id and done.error_file_id

    # And the output file has the good requests in input order, as chat.completion objects
    output = jsonl(oai, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["good-1", "good-2", "good-3"]
    for line, tokens in zip(output, (3, 4, 5), strict=True):
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200
        body = response["body"]
        assert body["object"] == "chat.completion" and body["model"] == "fake"
        assert body["choices"][0]["message"]["content"] == "".join(
            f" tok{i}" for i in range(tokens)
        )
        assert body["usage"]["completion_tokens"] == tokens
        # the request id is the job, readable natively
        job = client.get(f"/v1/jobs/{response['request_id']}").json()
        assert job["custom_id"] == line["custom_id"] and job["batch_id"] == done.id
    assert len({line["id"] for line in output}) == 3

    # And the error file has each bad line, in input order, with why
    errors = jsonl(oai, done.error_file_id)
    assert [e["custom_id"] for e in errors] == [None, "wrong-url", "too-hot"]
    assert [e["error"]["code"] for e in errors] == [
        "invalid_json",
        "invalid_url",
        "invalid_request",
    ]
    assert all(e["response"] is None for e in errors)
    assert "line 2" in errors[0]["error"]["message"]
    assert "temperature" in errors[2]["error"]["message"]

    # And the output files are files too
    output_file = oai.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"
    assert output_file.bytes == len(oai.files.content(done.output_file_id).content)


def test_completions_batch_puts_failed_generations_in_the_error_file(oai: openai.OpenAI) -> None:
    def line(custom_id: str, prompt: Any, **body: Any) -> str:
        body = {"model": "fake", "prompt": prompt, "max_tokens": 4, **body}
        return json.dumps(
            {"custom_id": custom_id, "method": "POST", "url": COMPLETIONS, "body": body}
        )

    file_id = upload(
        oai,
        [
            line("ok", "hello"),
            line("boom", "[[fail]] here"),  # the fake engine fails on purpose
            line("two", ["a", "b"]),  # several choices are not a batch request
            line("dup", "x"),
            line("dup", "y"),
            line("nomodel", "z", model="gpt-9"),
        ],
    )
    done = run_batch(oai, file_id, COMPLETIONS)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 4)
    [ok, dup] = jsonl(oai, done.output_file_id or "")
    assert (ok["custom_id"], dup["custom_id"]) == ("ok", "dup")
    assert ok["response"]["body"]["object"] == "text_completion"
    assert ok["response"]["body"]["choices"][0]["text"] == " tok0 tok1 tok2 tok3"
    errors = {e["custom_id"]: e["error"]["code"] for e in jsonl(oai, done.error_file_id or "")}
    assert errors == {
        "boom": "generation_failed",
        "two": "unsupported_value",
        "dup": "duplicate_custom_id",
        "nomodel": "model_not_found",
    }


def test_a_file_with_no_valid_line_fails_the_batch(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    file_id = upload(oai, ["nope", json.dumps({"custom_id": "a"})])
    batch = oai.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data
    assert [e.line for e in batch.errors.data] == [1, 2]
    assert batch.errors.data[0].code == "invalid_json"
    assert oai.batches.retrieve(batch.id).status == "failed"
    assert batch.output_file_id is None and batch.error_file_id is None
    # Its event log ends too (a watcher is not left waiting for jobs that do not exist)
    events = sse_events(client, f"/v1/batches/{batch.id}/events", timeout_s=30)
    assert events[-1]["type"] == "done" and events[-1]["data"]["status"] == "failed"

    empty = oai.batches.create(
        input_file_id=upload(oai, ["", "  "]), endpoint=CHAT, completion_window="24h"
    )
    assert empty.status == "failed" and empty.errors is not None
    assert [e.code for e in empty.errors.data] == ["empty_batch"]


def test_list_batches_newest_first_with_after_and_limit(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    # Given three new batches (one of them native)
    file_id = upload(oai, [chat_line("only", "x", max_tokens=1)])
    first = oai.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    second = oai.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    native = client.post("/v1/batches", json={"model": "fake", "jobs": [{"prompt": "p"}]}).json()
    newest = [native["id"], second.id, first.id]

    # When they are listed two at a time
    page = oai.batches.list(limit=2)
    assert [b.id for b in page.data] == newest[:2]
    assert page.has_more
    following = oai.batches.list(limit=2, after=page.data[-1].id)
    assert following.data[0].id == first.id

    # Then the client's paging walks them all, each once
    seen = [b.id for b in oai.batches.list(limit=2)]
    assert seen[:3] == newest and len(seen) == len(set(seen))
    raw = client.get("/v1/batches", params={"limit": 1}).json()
    assert raw["object"] == "list" and raw["first_id"] == raw["last_id"] == native["id"]


def test_cancel_a_running_batch(oai: openai.OpenAI) -> None:
    # Given a batch of slow jobs (0.1 s per token), running
    lines = [chat_line(f"slow-{i}", "go", model="slow", max_tokens=300) for i in range(3)]
    file_id = upload(oai, lines)
    batch = oai.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")

    # When it is cancelled
    cancelling = oai.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")

    # Then it ends cancelled, every request in the error file
    done = wait_for(
        lambda: (b := oai.batches.retrieve(batch.id)).status == "cancelled" and b,
        60,
        "the batch to be cancelled",
    )
    assert done.cancelled_at and done.request_counts is not None
    assert done.request_counts.completed == 0
    errors = jsonl(oai, done.error_file_id or "")
    assert [e["custom_id"] for e in errors] == ["slow-0", "slow-1", "slow-2"]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(batch.id)


def test_another_tenant_sees_none_of_it(oai: openai.OpenAI, bob_oai: openai.OpenAI) -> None:
    file_id = upload(oai, [chat_line("mine", "x", max_tokens=1)])
    done = run_batch(oai, file_id)
    for call in (
        lambda: bob_oai.files.retrieve(file_id),
        lambda: bob_oai.files.content(file_id),
        lambda: bob_oai.batches.retrieve(done.id),
        lambda: bob_oai.batches.cancel(done.id),
        lambda: bob_oai.files.retrieve(done.output_file_id or ""),
        lambda: bob_oai.files.content(done.output_file_id or ""),
        lambda: bob_oai.batches.create(
            input_file_id=file_id, endpoint=CHAT, completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert done.id not in [b.id for b in bob_oai.batches.list(limit=100)]


def test_bad_batch_and_file_requests_are_4xx(oai: openai.OpenAI, client: httpx.Client) -> None:
    with pytest.raises(openai.BadRequestError) as purpose:
        oai.files.create(file=("x.jsonl", b"{}"), purpose="assistants")
    assert purpose.value.body["param"] == "purpose"  # type: ignore[index]
    file_id = upload(oai, [chat_line("a", "x")])
    with pytest.raises(openai.BadRequestError) as endpoint:
        oai.batches.create(
            input_file_id=file_id,
            endpoint="/v1/embeddings",
            completion_window="24h",
        )
    assert endpoint.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        oai.files.content("file-nope")
    for bad in (
        {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "48h"},
        {"input_file_id": file_id, "endpoint": CHAT},
        {"input_file_id": 7, "endpoint": CHAT, "completion_window": "24h"},
    ):
        response = client.post("/v1/batches", json=bad)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    no_file = client.post("/v1/files", data={"purpose": "batch"})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    assert client.get("/v1/batches", params={"limit": 0}).status_code == 422  # native route
