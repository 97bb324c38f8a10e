"""The last gaps to OpenAI's chat and completions, with the official client and the real model:
logit_bias (ban a token, force a token, OpenAI's bounds) and usage's cached prompt tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache

import httpx
import llama_cpp
import openai
import pytest

from jobs.registry import Registry
from jobs.settings import ROOT, Settings
from tests.conftest import ALICE_KEY, wait_for

PROMPT = "The capital of France is"


@pytest.fixture
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=ALICE_KEY, max_retries=0, timeout=180
    ) as c:
        yield c


@cache
def vocab() -> llama_cpp.Llama:
    """smollm2's vocabulary (no weights), to name tokens by id as OpenAI's clients do."""
    model = Registry.load(ROOT / "configs" / "models.yaml").get("smollm2")
    assert model.gguf is not None
    gguf = model.gguf.resolve(Settings(data_dir=ROOT / "var").data_dir)
    return llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)


def token_id(text: str) -> int:
    [token] = vocab().tokenize(text.encode(), add_bos=False, special=False)
    return token


def first_token(oai: openai.OpenAI, **extra: object) -> str:
    completion = oai.completions.create(
        model="smollm2", prompt=PROMPT, max_tokens=1, temperature=0, **extra
    )
    return completion.choices[0].text


def test_logit_bias_bans_and_forces_tokens(oai: openai.OpenAI) -> None:
    # Given what the model says first without a bias
    plain = first_token(oai)
    assert plain.strip()
    # When that token is banned, it says something else
    banned = first_token(oai, logit_bias={str(token_id(plain)): -100})
    assert banned != plain
    # When another token is forced, it says that one
    forced = first_token(oai, logit_bias={str(token_id(" London")): 100})
    assert forced == " London"
    # and chat takes it too
    chat = oai.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Name a city."}],
        max_tokens=1,
        temperature=0,
        logit_bias={str(token_id(" London")): 100, str(token_id("London")): 100},
    )
    assert "London" in (chat.choices[0].message.content or "")


@pytest.mark.parametrize(
    "bias, why",
    [
        ({str(i): 1 for i in range(301)}, "more than 300 entries"),
        ({"42": 101}, "a bias above 100"),
        ({"42": -100.5}, "a bias below -100"),
        ({"-1": 5}, "a negative token id"),
        ({"not-a-token": 5}, "a key that is no token id"),
        ({"10000000": 5}, "a token beyond the vocabulary"),
    ],
)
def test_logit_bias_out_of_bounds_is_a_400_naming_it(
    oai: openai.OpenAI, bias: dict[str, float], why: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        first_token(oai, logit_bias=bias)
    error = caught.value.body
    assert isinstance(error, dict) and "logit_bias" in (error.get("param") or ""), (why, error)


def test_usage_says_how_many_prompt_tokens_came_from_the_cache(
    client: httpx.Client, oai: openai.OpenAI
) -> None:
    # Given four jobs of one batch sharing a long prefix (the engine copies a live donor's KV)
    prefix = "You are a careful assistant who answers in one short sentence. " * 12
    jobs = [
        {"prompt": f"{prefix}\nQuestion {i}: name a colour.\nAnswer:", "max_tokens": 12}
        for i in range(4)
    ]
    batch = client.post("/v1/batches", json={"model": "smollm2", "jobs": jobs})
    assert batch.status_code == 202, batch.text
    batch_id = batch.json()["id"]
    wait_for(
        lambda: client.get(f"/v1/batches/{batch_id}").json()["status"] == "completed",
        180,
        "the batch",
    )
    results = client.get(f"/v1/batches/{batch_id}/results").text.splitlines()
    usages = [json.loads(line)["response"]["usage"] for line in results if line]
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usages]
    # Then the jobs that reused the prefix say so, never more than their prompt
    assert sum(cached) > 0, usages
    assert all(0 <= c < u["prompt_tokens"] for c, u in zip(cached, usages, strict=True))

    # and OpenAI's usage carries the field (0 for a prompt with nothing to reuse)
    chat = oai.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == 0
