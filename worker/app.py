"""The worker's Celery app: the run_next task, and per worker process the model (loaded once),
the lease keeper and the reconciler."""

from __future__ import annotations

import logging
import os
import socket

import redis
from celery import Celery
from celery.signals import worker_init, worker_shutdown

from jobs.queue import RUN_NEXT_TASK, enqueue, make_celery
from jobs.registry import ModelConfig, Registry
from jobs.settings import Settings
from jobs.store import WorkerStore
from worker.engine import Engine
from worker.leases import LeaseKeeper
from worker.publisher import Publisher
from worker.reconciler import Reconciler
from worker.runner import Runner
from worker.webhooks import WebhookSender

logger = logging.getLogger(__name__)


def load_engine(model: ModelConfig, settings: Settings) -> Engine:
    if model.engine == "fake":
        from worker.fake_engine import FakeEngine

        return FakeEngine(model)
    from worker.batch_engine import BatchEngine

    return BatchEngine(model, settings.data_dir)


def create_worker_app(settings: Settings, model: ModelConfig) -> Celery:
    """A Celery app consuming `model`'s queue with one thread per engine slot.

    The model is loaded once, in the worker process, before it consumes; every task thread hands
    its job to the same engine, which decodes all of them together.
    """
    app = make_celery(settings, [model.alias])
    state: dict[str, Runner] = {}
    background: list[LeaseKeeper | Reconciler | WebhookSender] = []

    @worker_init.connect(weak=False)
    def _load_model(**_: object) -> None:
        # A timeout, so that a Redis host that vanished (no RST) is an error to retry, not a
        # hang: the worker's calls are all short (none blocks server-side).
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=30, socket_connect_timeout=5, socket_keepalive=True
        )
        name = f"{model.alias}@{socket.gethostname()}:{os.getpid()}"
        store = WorkerStore(client, settings.result_ttl_s, settings.max_attempts, name)
        try:
            engine = load_engine(model, settings)
        except Exception as exc:
            # Celery logs and swallows an Exception from a signal handler and would then consume
            # jobs with no model; SystemExit ends the worker instead (`tokenq up` reports it).
            logger.exception("model %s did not load", model.alias)
            raise SystemExit(1) from exc
        leases = LeaseKeeper(store, model.alias, model.slots, settings.lease_s)
        leases.start()
        reconciler = Reconciler(
            store,
            Registry.load(settings.models_config).models,
            lambda alias, n: enqueue(app, alias, n),
            settings.reconcile_interval_s,
            settings.lease_s,
            settings.tenant_weights,
        )
        reconciler.start()
        background.extend([reconciler, leases])
        if settings.tenant_webhooks:
            sender = WebhookSender(
                store,
                settings.tenant_webhooks,
                settings.webhook_allow_private,
                settings.webhook_retry_window_s,
            )
            sender.start()
            background.append(sender)
        state["runner"] = Runner(
            store,
            engine,
            Publisher(store),
            leases,
            settings.job_time_limit_s,
            scheduling=settings.scheduling,
        )
        logger.info("model %s loaded (engine %s)", model.alias, model.engine)

    @worker_shutdown.connect(weak=False)
    def _close(**_: object) -> None:
        for part in background:
            part.close()
        runner = state.pop("runner", None)
        if runner is not None:
            runner.publisher.close()
            logger.info(
                "shutting down: publisher %s, engine %s",
                runner.publisher.stats,
                getattr(runner.engine, "stats", {}),
            )
            runner.engine.close()

    @app.task(name=RUN_NEXT_TASK, acks_late=True, reject_on_worker_lost=True)
    def run_next(alias: str) -> str | None:
        status = state["runner"].run_next()
        return status.value if status else None

    return app
