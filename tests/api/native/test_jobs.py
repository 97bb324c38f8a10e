"""One job through the real stack and the real model: submit, stream, poll, resume."""

from __future__ import annotations

import json

import httpx
from websockets.sync.client import connect

from tests.conftest import ALICE_KEY, sse_events, submit, wait_job


def _text_of(events: list[dict]) -> str:
    return "".join(e["data"]["text"] for e in events if e["type"] == "token")


def test_single_job_streams_every_token_and_polls_the_same_result(client: httpx.Client) -> None:
    # Given a job for the real default model
    job = submit(client, prompt="The three primary colors are", max_tokens=24, temperature=0)
    assert job["status"] == "queued" and job["model"] == "smollm2"

    # When we stream it from the start
    events = sse_events(client, job["urls"]["events"])

    # Then the stream is gap-free, walks the states in order, and its tokens make the final text
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    done = events[-1]
    assert done["type"] == "done"
    polled = client.get(f"/v1/jobs/{job['id']}").json()
    assert polled["status"] == "succeeded"
    assert polled["text"] == _text_of(events) == done["data"]["result"]["text"]
    assert polled["text"].strip()
    assert polled["usage"]["completion_tokens"] == polled["progress"]["completion_tokens"] > 0
    assert polled["usage"]["prompt_tokens"] > 0
    assert polled["finish_reason"] in ("stop", "length")
    timings = polled["timings"]
    assert timings["queue_wait_ms"] >= 0 and timings["generation_ms"] > 0
    assert (
        polled["started_at"] >= polled["created_at"]
        and polled["finished_at"] >= polled["started_at"]
    )
    assert polled["worker"].startswith("smollm2@")


def test_late_join_and_last_event_id_resume_get_every_event_once(client: httpx.Client) -> None:
    job = submit(client, prompt="List five fruits:", max_tokens=32, temperature=0)
    # A client that reads a few events and drops...
    first = sse_events(client, job["urls"]["events"], limit=5)
    assert [e["seq"] for e in first] == [1, 2, 3, 4, 5]
    # ...then reconnects with Last-Event-ID gets exactly the rest.
    rest = sse_events(client, job["urls"]["events"], last_event_id=first[-1]["seq"])
    together = first + rest
    assert [e["seq"] for e in together] == list(range(1, len(together) + 1))
    # A client joining after the end gets the same log from the start.
    late = sse_events(client, job["urls"]["events"])
    assert late == together
    assert _text_of(late) == wait_job(client, job["id"])["text"]
    # And resuming from the middle of a finished log gives its tail.
    assert sse_events(client, job["urls"]["events"], last_event_id=10) == together[10:]


def test_websocket_streams_the_same_events(client: httpx.Client, base_url: str) -> None:
    job = submit(client, prompt="Water boils at", max_tokens=12, temperature=0)
    url = base_url.replace("http://", "ws://") + job["urls"]["websocket"]
    with connect(url, additional_headers={"Authorization": f"Bearer {ALICE_KEY}"}) as ws:
        events = [json.loads(message) for message in ws]
    assert events[-1]["type"] == "done"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert _text_of(events) == wait_job(client, job["id"])["text"]


def test_chat_messages_are_rendered_with_the_models_template(client: httpx.Client) -> None:
    from llama_cpp import Llama

    from jobs.registry import Registry
    from jobs.settings import ROOT, Settings

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    job = wait_job(client, submit(client, messages=messages, max_tokens=16, temperature=0)["id"])
    assert job["status"] == "succeeded"

    # Greedy output equals llama-cpp-python's own chat completion for the same model.
    settings = Settings(models_config=ROOT / "configs" / "models.yaml")
    model = Registry.load(settings.models_config).get("smollm2")
    llm = Llama(
        str(model.gguf.resolve(settings.data_dir)),
        n_ctx=model.n_ctx,
        n_threads=2,
        flash_attn=model.flash_attn,  # the same attention kernel, the same rounding
        verbose=False,
    )
    expected = llm.create_chat_completion(messages, max_tokens=16, temperature=0)
    assert job["text"] == expected["choices"][0]["message"]["content"]
    assert job["usage"]["prompt_tokens"] == expected["usage"]["prompt_tokens"]


def test_named_template_with_inputs_and_echo(client: httpx.Client) -> None:
    job = wait_job(
        client,
        submit(
            client,
            template="translate",
            inputs={"language": "French", "input": "Good morning"},
            max_tokens=8,
            temperature=0,
            echo=True,
        )["id"],
    )
    assert job["status"] == "succeeded"
    assert job["text"].startswith(
        "Translate the following text into French.\n\nGood morning\n\nTranslation:"
    )


def test_stop_sequence_ends_generation_before_it(client: httpx.Client) -> None:
    job = wait_job(
        client,
        submit(client, prompt="1, 2, 3, 4,", max_tokens=40, temperature=0, stop=[" 7"])["id"],
    )
    assert job["finish_reason"] == "stop"
    assert " 7" not in job["text"]
    assert "6" in job["text"]


def test_two_models_are_routed_to_their_own_workers(client: httpx.Client) -> None:
    small = submit(client, model="smollm2", prompt="Hello", max_tokens=4, temperature=0)
    gemma = submit(client, model="gemma3", prompt="Hello", max_tokens=4, temperature=0)
    small, gemma = wait_job(client, small["id"]), wait_job(client, gemma["id"])
    assert small["status"] == gemma["status"] == "succeeded"
    assert small["worker"].startswith("smollm2@")
    assert gemma["worker"].startswith("gemma3@")
    assert gemma["model"] == "gemma3"


def test_websocket_of_another_tenant_closes_with_4404(client: httpx.Client, base_url: str) -> None:
    from websockets.exceptions import ConnectionClosed

    from tests.conftest import BOB_KEY

    job = submit(client, model="fake", prompt="mine", max_tokens=2)
    url = base_url.replace("http://", "ws://") + job["urls"]["websocket"]
    with connect(url, additional_headers={"Authorization": f"Bearer {BOB_KEY}"}) as ws:
        try:
            ws.recv(timeout=10)
            raise AssertionError("expected the socket to close")
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4404


def test_one_worker_generates_for_many_jobs_at_once(client: httpx.Client) -> None:
    # Given 12 jobs for the one smollm2 worker (16 slots)
    jobs = [
        submit(
            client,
            prompt=f"Write about the number {i}.\n\nOnce upon a time,",
            max_tokens=24,
            temperature=0,
        )
        for i in range(12)
    ]
    done = [wait_job(client, job["id"]) for job in jobs]
    # Then all ran on the same worker process, at the same time, each to its own length
    assert len({job["worker"] for job in done}) == 1
    first_finish = min(job["finished_at"] for job in done)
    assert all(job["started_at"] < first_finish for job in done)
    assert all(job["usage"]["completion_tokens"] == 24 for job in done)
