"""Webhook events are delivered at least once through real faults, with the default settings:
the worker delivering one is SIGKILLed mid-request (another worker sends it once its delivery
lease lapses), and Redis is killed -9 and restarted on its AOF while an event waits to be
retried (it is delivered after the restart)."""

from __future__ import annotations

import time

import yaml

from api.auth import ANONYMOUS
from tests.api.test_webhooks import SECRET, Receiver, verified
from tests.conftest import wait_for
from tests.faults.conftest import FaultStack
from worker.webhooks import DELIVERY_LEASE_S


def test_an_event_survives_its_worker_dying_mid_delivery_and_a_redis_restart(
    faults: FaultStack,
) -> None:
    receiver = Receiver()
    receiver.delay_s = 30.0  # the first delivery hangs: its worker dies holding it
    receiver.start()
    try:
        tenants = faults.redis_dir.parent / "tenants.yaml"
        webhook = {"url": receiver.url, "secret": SECRET, "events": ["batch.completed"]}
        tenants.write_text(yaml.safe_dump({"tenants": {ANONYMOUS: {"webhook": webhook}}}))
        faults.stack.env.update(
            TOKENQ_TENANTS_CONFIG=str(tenants), TOKENQ_WEBHOOK_ALLOW_PRIVATE="true"
        )
        faults.start({"w1": "f"})
        with faults.client() as client:
            first = client.post("/v1/batches", json={"jobs": [{"prompt": "a", "max_tokens": 3}]})
            wait_for(lambda: receiver.requests, 60, "the first delivery to start")

            # When its worker is killed mid-request, and another takes over
            faults.kill("w1")
            killed_at = time.monotonic()
            receiver.delay_s = 0.0
            faults.start_worker("w2")
            faults.stack.wait_worker("f", 60, name="w2")

            # Then the event is sent again, by the other worker, after the delivery lease
            wait_for(lambda: len(receiver.requests) >= 2, DELIVERY_LEASE_S + 60, "the resend")
            assert time.monotonic() - killed_at >= DELIVERY_LEASE_S - 5
            events = verified(receiver.requests)
            assert {e.id for e in events} == {f"evt_{first.json()['id']}"}

            # Given a second event that cannot be delivered yet (the receiver is down)
            receiver.stop()
            second = client.post("/v1/batches", json={"jobs": [{"prompt": "b", "max_tokens": 3}]})
            second_id = f"evt_{second.json()['id']}"

            def attempts() -> list[dict]:
                data = client.get("/v1/webhooks/deliveries").json()["data"]
                return [a for a in data if a["webhook_id"] == second_id]

            wait_for(attempts, 60, "a failed attempt")
            time.sleep(1.5)  # past AOF everysec's window
            # When Redis is killed -9 and restarted on its AOF, then the receiver comes back
            faults.kill_redis()
            time.sleep(2)
            faults.start_redis()
            receiver.start()
            # Then the event is still there, and delivered
            sent = len(receiver.requests)
            wait_for(lambda: len(receiver.requests) > sent, 120, "the delivery after the restart")
            assert [e.id for e in verified(receiver.requests[sent:])] == [second_id]
            wait_for(lambda: attempts()[0]["state"] == "delivered", 30, "the log to say so")
    finally:
        receiver.stop()
