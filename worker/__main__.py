"""`python -m worker --model ALIAS`: a Celery worker serving one model's queue."""

from __future__ import annotations

import argparse
import logging

from jobs import keys
from jobs.registry import Registry
from jobs.settings import Settings
from worker.app import create_worker_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument(
        "--model", help="model alias from configs/models.yaml (default: its default)"
    )
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--hostname", help="Celery node name (default: ALIAS@host)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    model = Registry.load(settings.models_config).get(args.model or settings.worker_model)
    app = create_worker_app(settings, model)
    app.worker_main(
        [
            "worker",
            "--queues",
            keys.model_queue(model.alias),
            # One thread per slot, each feeding its job to the shared continuous-batching engine.
            "--pool",
            "threads",
            "--concurrency",
            str(model.slots),
            "--hostname",
            args.hostname or f"{model.alias}@%h",
            "--loglevel",
            args.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
