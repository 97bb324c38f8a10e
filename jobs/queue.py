"""The Celery app factory, task names, routing, and bulk enqueueing (shared by API and worker)."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Queue

from jobs import keys
from jobs.settings import Settings

#: The one task: a ticket to run the next job of a model's line (keys.pending). Its only argument
#: is the model alias. Which job a ticket runs is decided when a worker claims it (claim_next.lua),
#: so a lost or duplicated message never loses or doubles a job: the reconciler tops tickets up,
#: and a spare ticket finds nothing to run.
RUN_NEXT_TASK = "tokenq.run_next"

#: Messages per pipelined publish (one Redis round trip each) when enqueueing a batch.
ENQUEUE_CHUNK = 1000


def make_celery(settings: Settings, models: Sequence[str] = ()) -> Celery:
    """A Celery app on tokenq's Redis; `models` are the queues this process declares."""
    app = Celery("tokenq", broker=settings.redis_url, backend=None)
    transport = {
        # An unacked job becomes visible again after this long; it must outlast the longest job,
        # or a job still running would be handed to a second worker.
        "visibility_timeout": settings.visibility_timeout_s,
        # Sweep for redeliverable messages every 5 s (not every 5 s x 10 calls).
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the job record, never in Celery's backend
        task_acks_late=True,  # ack after the job ran: a lost worker's job is redelivered
        task_reject_on_worker_lost=True,  # ...including when the process is killed mid-job
        worker_prefetch_multiplier=1,  # one message per free slot, none held back
        task_time_limit=settings.job_time_limit_s,
        # The soft limit raises inside the job (it ends `failed`) a little before the hard kill.
        task_soft_time_limit=settings.job_time_limit_s
        - max(1, min(5, settings.job_time_limit_s // 10)),
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # Leases, not the broker connection, decide whether a running job is still ours: a job
        # thread goes on through a broker outage (and a thread pool cannot cancel one anyway).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
        task_default_queue=keys.model_queue("default"),
        task_queues=[
            Queue(keys.model_queue(alias), routing_key=keys.model_queue(alias)) for alias in models
        ],
        worker_hijack_root_logger=False,
    )
    return app


def enqueue(app: Celery, model: str, count: int) -> None:
    """Send `count` tickets for the model's line, ENQUEUE_CHUNK messages per Redis round trip.

    kombu's Producer.batch buffers the LPUSHes of each chunk in one pipeline. Messages go to the
    model's queue through the default exchange (routing key = queue name), so routing needs no
    Redis lookups per message.
    """
    queue = keys.model_queue(model)
    with app.producer_or_acquire() as producer, producer.batch(max_size=ENQUEUE_CHUNK):
        for _ in range(count):
            app.send_task(
                RUN_NEXT_TASK,
                args=[model],
                queue=queue,  # a direct queue and no exchange: Celery publishes it anonymously
                producer=producer,
            )
