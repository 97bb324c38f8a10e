"""The OpenAI-compatible API driven by the official `openai` client against the live stack."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import ALICE_KEY, BOB_KEY, wait_job


def fake_text(tokens: int) -> str:
    """What the fake engine generates for max_tokens=tokens."""
    return "".join(f" tok{i}" for i in range(tokens))


@pytest.fixture
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    # No retries: a retried request would be a second set of jobs, and hide the first answer.
    with openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=ALICE_KEY, max_retries=0, timeout=180
    ) as c:
        yield c


def test_models_lists_the_configured_aliases(oai: openai.OpenAI) -> None:
    models = {m.id: m for m in oai.models.list()}
    assert {"smollm2", "gemma3", "fake", "slow"} <= set(models)
    assert models["smollm2"].object == "model" and models["smollm2"].owned_by == "tokenq"
    assert models["smollm2"].created > 0
    assert oai.models.retrieve("gemma3").id == "gemma3"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


def test_chat_completion_with_the_real_model_is_the_job_it_names(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    # Given a chat request for the real model, greedy
    raw = oai.chat.completions.with_raw_response.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_completion_tokens=24,
        user="someone",
        extra_body={"not_an_openai_field": True},  # unknown fields are ignored
    )
    completion = raw.parse()

    # Then it is OpenAI's chat.completion object, built from the job its header names
    job_id = raw.headers["x-tokenq-job-id"]
    assert raw.headers["x-tokenq-job-ids"] == job_id
    assert completion.object == "chat.completion" and completion.model == "smollm2"
    assert completion.id == f"chatcmpl-{job_id}"
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    assert "paris" in choice.message.content.lower()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["text"] == choice.message.content
    assert completion.usage is not None
    assert completion.usage.completion_tokens == job["usage"]["completion_tokens"] <= 24
    assert completion.usage.prompt_tokens == job["usage"]["prompt_tokens"] > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_completion_of_a_string_prompt_with_the_real_model(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    raw = oai.completions.with_raw_response.create(
        model="smollm2", prompt="The three primary colors are", max_tokens=16, temperature=0
    )
    completion = raw.parse()
    assert completion.object == "text_completion"
    [choice] = completion.choices
    assert choice.text.strip() and choice.finish_reason in ("stop", "length")
    job = wait_job(client, raw.headers["x-tokenq-job-id"])
    assert job["text"] == choice.text and job["model"] == "smollm2"


def test_prompt_array_and_n_give_one_job_per_choice(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    # Given two prompts and n=2: four choices, prompt-major
    raw = oai.completions.with_raw_response.create(
        model="fake", prompt=["first prompt", "second prompt"], n=2, max_tokens=3, seed=7
    )
    completion = raw.parse()
    job_ids = raw.headers["x-tokenq-job-ids"].split(",")

    # Then each choice is a job of its own, in order
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert [c.text for c in completion.choices] == [fake_text(3)] * 4
    assert [c.finish_reason for c in completion.choices] == ["length"] * 4
    assert len(set(job_ids)) == 4 and raw.headers["x-tokenq-job-id"] == job_ids[0]
    jobs = [client.get(f"/v1/jobs/{i}").json() for i in job_ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 4
    # And usage counts each prompt once and every choice's tokens
    assert completion.usage is not None and completion.usage.completion_tokens == 12
    assert completion.usage.prompt_tokens == sum(j["usage"]["prompt_tokens"] for j in jobs[::2])


def test_echo_returns_the_prompt_before_the_text(oai: openai.OpenAI) -> None:
    completion = oai.completions.create(model="fake", prompt="Say:", echo=True, max_tokens=2)
    assert completion.choices[0].text == "Say: tok0 tok1"


def test_max_tokens_defaults_to_256_within_the_context(oai: openai.OpenAI) -> None:
    short = oai.completions.create(model="fake", prompt="short")
    assert short.usage is not None and short.usage.completion_tokens == 256
    # The fake model's context is 4096 tokens, and it counts a word (+1) as a token.
    long = oai.completions.create(model="fake", prompt="word " * 4000)
    assert long.usage is not None and long.usage.prompt_tokens == 4001
    assert long.usage.completion_tokens == 4096 - 4001
    assert long.choices[0].finish_reason == "length"


def test_chat_stream_frames_role_one_id_finish_reason_usage_and_done(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    # Given a streamed chat request for the real model that asks for usage
    raw = oai.chat.completions.with_raw_response.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Name three fruits."}],
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    job_id = raw.headers["x-tokenq-job-id"]
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())

    # Then the first delta carries the role, every chunk the same id
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {f"chatcmpl-{job_id}"}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    # And the last choice chunk has the finish_reason, then one usage chunk with no choices
    *choice_chunks, usage_chunk = chunks
    assert [c.choices[0].finish_reason for c in choice_chunks][-1] in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in choice_chunks[:-1])
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in choice_chunks)
    job = wait_job(client, job_id)
    assert text == job["text"] and text.strip()
    assert usage_chunk.usage.completion_tokens == job["usage"]["completion_tokens"]


def test_stream_wire_format_ends_with_done(client: httpx.Client) -> None:
    body = {"model": "fake", "prompt": "x", "max_tokens": 3, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == fake_text(3)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[-1] or chunks[-1]["usage"] is None


def test_completion_stream_of_several_choices(oai: openai.OpenAI) -> None:
    stream = oai.completions.create(
        model="fake",
        prompt=["a", "b"],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    finish = {}
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert texts == {0: fake_text(4), 1: fake_text(4)}
    assert finish == {0: "length", 1: "length"}
    assert usage is not None and usage.completion_tokens == 8


def test_response_format_json_object_gives_parseable_json(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="smollm2",
        messages=[
            {
                "role": "user",
                "content": 'Give the color of the sky as a JSON object with the key "color".',
            }
        ],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=60,
    )
    # The grammar holds the model to JSON, and the object closes before max_tokens.
    choice = completion.choices[0]
    assert choice.message.content is not None and choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content), dict), choice.message.content


def test_response_format_json_schema_follows_the_schema(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "boolean"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    completion = oai.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "yes_no", "schema": schema},
        },
        temperature=0,
        max_tokens=20,
    )
    content = completion.choices[0].message.content
    assert content is not None
    parsed = json.loads(content)
    assert set(parsed) == {"answer"} and isinstance(parsed["answer"], bool)


def test_logprobs_of_chat_and_completions(oai: openai.OpenAI) -> None:
    chat = oai.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        temperature=0,
        max_tokens=6,
        logprobs=True,
        top_logprobs=2,
    )
    choice = chat.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert chat.usage is not None and len(choice.logprobs.content) == chat.usage.completion_tokens
    for token in choice.logprobs.content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2
        assert token.bytes == list(token.token.encode())
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content

    legacy = oai.completions.create(
        model="smollm2", prompt="One, two,", temperature=0, max_tokens=5, logprobs=3
    )
    logprobs = legacy.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert "".join(logprobs.tokens) == legacy.choices[0].text
    assert logprobs.text_offset == [
        sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))
    ]
    assert logprobs.top_logprobs and all(len(t) == 3 for t in logprobs.top_logprobs)


def test_disconnecting_from_a_stream_cancels_its_job(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    # Given a long streamed job on the slow model (0.1 s per token)
    raw = oai.chat.completions.with_raw_response.create(
        model="slow",
        messages=[{"role": "user", "content": "go on"}],
        max_tokens=400,
        stream=True,
    )
    job_id = raw.headers["x-tokenq-job-id"]
    stream = raw.parse()
    # When the client reads a few chunks and goes away
    received = [next(stream) for _ in range(4)]
    assert received[-1].choices[0].delta.content
    stream.close()
    # Then the job is cancelled well before its end
    job = wait_job(client, job_id, timeout_s=60)
    assert job["status"] == "cancelled"
    assert job["progress"]["completion_tokens"] < 400


def test_a_stream_that_asked_to_be_kept_runs_to_its_end(
    oai: openai.OpenAI, client: httpx.Client
) -> None:
    raw = oai.completions.with_raw_response.create(
        model="slow",
        prompt="go on",
        max_tokens=25,
        stream=True,
        extra_body={"keep_on_disconnect": True},
    )
    job_id = raw.headers["x-tokenq-job-id"]
    stream = raw.parse()
    next(stream)
    stream.close()
    job = wait_job(client, job_id, timeout_s=60)
    assert job["status"] == "succeeded" and job["usage"]["completion_tokens"] == 25


def test_a_failed_generation_is_a_502_or_an_in_band_stream_error(oai: openai.OpenAI) -> None:
    # The fake engine fails on purpose on this marker, after two tokens.
    with pytest.raises(openai.APIStatusError) as failed:
        oai.completions.create(model="fake", prompt="[[fail]] now", max_tokens=8)
    assert failed.value.status_code == 502
    assert failed.value.body["code"] == "generation_failed"  # type: ignore[index]
    assert failed.value.body["type"] == "server_error"  # type: ignore[index]

    stream = oai.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "[[fail]]"}], max_tokens=8, stream=True
    )
    with pytest.raises(openai.APIError) as in_band:
        for _ in stream:
            pass
    assert in_band.value.body["code"] == "generation_failed"  # type: ignore[index]


def test_errors_have_openais_shape_and_status(oai: openai.OpenAI, client: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert unknown.value.body["param"] == "model"  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as hot:
        oai.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], temperature=3
        )
    assert hot.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert hot.value.body["param"] == "temperature"  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as too_long:
        oai.completions.create(model="fake", prompt="word " * 5000, max_tokens=10)
    assert too_long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]

    missing = client.post("/v1/chat/completions", json={"model": "fake"})
    assert missing.status_code == 400
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert missing.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, None),
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            None,
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
            None,
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 9},
            "stop",
        ),
        ("/v1/completions", {"prompt": [1, 2, 3]}, "prompt"),
        ("/v1/completions", {"prompt": "x", "logprobs": 6}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "suffix": "y"}, None),
        ("/v1/completions", {"prompt": ["x", "y"], "n": 100, "stream": True}, "n"),
        ("/v1/completions", {"prompt": ["x"] * 200}, None),
        ("/v1/completions", {}, "prompt"),
    ],
)
def test_invalid_requests_are_400_never_500(
    client: httpx.Client, path: str, body: dict, param: str | None
) -> None:
    response = client.post(path, json={"model": "fake", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param


def test_malformed_bodies_and_missing_keys(client: httpx.Client, base_url: str) -> None:
    for content in (b"{not json", b"[]", b"null", "\u00ff".encode("latin-1")):
        response = client.post(
            "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (content, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"
    anonymous = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_another_tenant_cannot_see_the_job_behind_a_response(
    oai: openai.OpenAI, base_url: str
) -> None:
    raw = oai.completions.with_raw_response.create(model="fake", prompt="mine", max_tokens=1)
    job_id = raw.headers["x-tokenq-job-id"]
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {BOB_KEY}"}) as bob:
        assert bob.get(f"/v1/jobs/{job_id}").status_code == 404
        assert bob.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
