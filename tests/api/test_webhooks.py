"""Signed webhooks on a stack of their own (redis-server, a fake-engine worker, the API) whose
tenant `hook` has a webhook to a receiver in this test: every delivery is verified with the
official `openai` client's Standard Webhooks verifier, and a delivery that first fails (the
receiver answers 500, then is down, then is up) arrives, with the default retry schedule."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from cli.stack import Stack, free_port
from jobs import keys
from jobs.store import WebhookEvent, WorkerStore
from jobs.webhooks import WebhookConfig, address_problem
from tests.conftest import wait_for
from worker.webhooks import WebhookSender

KEY = "hook-secret-key"
SECRET = "whsec_" + base64.b64encode(b"tokenq-webhook-test-secret-32-bytes!").decode()


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records each request and answers `status` after
    `delay_s`; stop() and start() take it down and bring it back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay_s)
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def hook_stack(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("webhooks")
    models = tmp / "models.yaml"
    fake = {"engine": "fake", "n_ctx": 4096, "slots": 4}
    models.write_text(yaml.safe_dump({"default": "fake", "models": {"fake": fake}}))
    tenants = tmp / "tenants.yaml"
    webhook = {"url": receiver.url, "secret": SECRET, "events": ["batch.completed", "batch.failed"]}
    key_hash = hashlib.sha256(KEY.encode()).hexdigest()
    tenants.write_text(
        yaml.safe_dump({"tenants": {"hook": {"key_sha256": key_hash, "webhook": webhook}}})
    )
    stack = Stack(log_dir=tmp / "logs")
    stack.env.update(
        TOKENQ_MODELS_CONFIG=str(models),
        TOKENQ_TENANTS_CONFIG=str(tenants),
        TOKENQ_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver is on loopback
    )
    try:
        stack.start_redis(free_port(), tmp / "redis")
        stack.start_worker("fake")
        base = stack.start_api("127.0.0.1", free_port())
        stack.wait_worker("fake", 60)
        yield base
    finally:
        stack.stop()


def verified(requests: list[tuple[dict[str, str], bytes]]) -> list[Any]:
    """Every request's event, each signature checked by openai's Standard Webhooks verifier."""
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    return [
        client.webhooks.unwrap(body.decode(), headers, secret=SECRET) for headers, body in requests
    ]


def test_a_finished_batch_is_announced_once_signed_even_through_a_failing_receiver(
    hook_stack: str, receiver: Receiver
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=hook_stack, headers=headers, timeout=60) as http:
        assert http.get("/v1/webhooks").json() == {
            "object": "webhook", "configured": True, "url": receiver.url,
            "events": ["batch.completed", "batch.failed"],
        }  # fmt: skip
        # Given a receiver that first answers 500
        receiver.status = 500
        batch = http.post(
            "/v1/batches", json={"jobs": [{"prompt": "p", "max_tokens": 2}] * 3}
        ).json()
        wait_for(lambda: len(receiver.requests) >= 1, 60, "the first delivery")
        # then is down when the next attempt comes (5 s later)
        receiver.stop()

        def log() -> list[dict[str, Any]]:
            return http.get("/v1/webhooks/deliveries").json()["data"]

        wait_for(lambda: len(log()) >= 2, 60, "the second attempt")
        # then is up again, answering 200: the third attempt (10 s later) is delivered
        receiver.status = 200
        receiver.start()
        wait_for(lambda: log()[0]["state"] == "delivered", 60, "the delivery")

        attempts = log()[::-1]
        assert [a["state"] for a in attempts] == ["retrying", "retrying", "delivered"]
        assert attempts[0]["status_code"] == 500 and attempts[1]["status_code"] is None
        assert "Connect" in attempts[1]["error"]
        assert [a["attempt"] for a in attempts] == [1, 2, 3]

        # Every request is signed; one event, one webhook-id, once after de-duplication
        events = verified(receiver.requests)
        assert len(events) == 2  # the 500'd one and the delivered one (down: never arrived)
        assert {r[0]["webhook-id"] for r in receiver.requests} == {f"evt_{batch['id']}"}
        [event] = {e.id: e for e in events}.values()
        assert event.type == "batch.completed" and event.data.id == batch["id"]

        # Redelivery sends the same event again, with the same webhook-id
        sent = len(receiver.requests)
        assert http.post(f"/v1/webhooks/events/{event.id}/redeliver").status_code == 202
        wait_for(lambda: len(receiver.requests) > sent, 60, "the redelivery")
        assert verified(receiver.requests[sent:])[0].id == event.id
        assert (
            http.post("/v1/webhooks/events/evt_batch_" + "0" * 24 + "/redeliver").status_code == 404
        )

        # A batch that fails before any job runs (OpenAI's file batch, every line bad) is
        # announced as batch.failed
        line = {"custom_id": "x", "method": "POST", "url": "/v1/completions",
                "body": {"model": "fake", "prompt": "p", "max_tokens": 0}}  # fmt: skip
        upload = http.post(
            "/v1/files",
            files={"file": ("in.jsonl", json.dumps(line).encode())},
            data={"purpose": "batch"},
        ).json()
        failed = http.post(
            "/v1/batches",
            json={"input_file_id": upload["id"], "endpoint": "/v1/completions",
                  "completion_window": "24h"},
        ).json()  # fmt: skip
        assert failed["status"] == "failed", failed
        sent = len(receiver.requests)
        wait_for(lambda: len(receiver.requests) > sent, 60, "the batch.failed event")
        [announced] = verified(receiver.requests[sent:])
        assert announced.type == "batch.failed" and announced.data.id == failed["id"]


def test_private_addresses_are_refused_unless_allowed() -> None:
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "http://localhost/hook",
    ):
        assert address_problem(url, allow_private=False), url
        assert address_problem(url, allow_private=True) is None, url
    assert address_problem("https://93.184.216.34/hook", allow_private=False) is None


def test_the_sender_never_posts_to_a_refused_address(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A real sender (worker/webhooks.py) on the test stack's Redis, not allowed private
    addresses, with a tenant whose webhook is on loopback: nothing is sent, the attempt is
    logged with why, and the event is due again later."""
    target = Receiver()
    target.start()
    try:
        store = WorkerStore(redis_client, 60, 3, "webhook-test@local")
        tenant = "ssrf-test"
        sender = WebhookSender(
            store, {tenant: WebhookConfig(url=target.url, secret=SECRET)}, False, 3600
        )
        event_id = "evt_batch_" + "a" * 24
        redis_client.hset(
            keys.webhook_event(event_id),
            mapping={"tenant": tenant, "type": "batch.completed", "body": "{}",
                     "created_at": 0, "attempt": 0, "state": "pending"},
        )  # fmt: skip
        event = WebhookEvent(event_id, tenant, "batch.completed", "{}", time.time(), 1)
        sender.deliver(event)
        [entry] = [
            json.loads(e) for e in redis_client.lrange(keys.tenant_webhook_log(tenant), 0, -1)
        ]
        assert entry["state"] == "retrying" and "private" in entry["error"]
        assert redis_client.zscore(keys.webhooks_due(), event_id) is not None
        assert target.requests == []
    finally:
        target.stop()
        redis_client.delete(keys.webhook_event(event_id), keys.tenant_webhook_log(tenant))
        redis_client.zrem(keys.webhooks_due(), event_id)
