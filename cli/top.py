"""`tokenq top`: a live terminal view of queues, workers, slots and throughput, from /metrics.

Each refresh scrapes GET /metrics once; rates (jobs and tokens per second, the mean queue wait)
are the differences between two scrapes over the time between them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table
from rich.text import Text

#: Counters whose rate `top` shows, per model: (metric sample name, column).
RATES = {
    "tokenq_jobs_finished_total": "jobs/s",
    "tokenq_completion_tokens_total": "tokens/s",
}


@dataclass
class Scrape:
    """What one scrape of /metrics says, keyed the way `top` shows it."""

    at: float
    #: model -> lane -> jobs waiting
    queued: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    suspects: dict[str, float] = field(default_factory=dict)
    oldest_s: dict[str, float] = field(default_factory=dict)
    live: dict[str, float] = field(default_factory=dict)
    #: (model, worker) -> (busy, slots, redis errors)
    workers: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: counter sample name -> model -> total
    totals: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    #: model -> (sum, count) of the queue wait histogram
    wait: dict[str, tuple[float, float]] = field(default_factory=dict)
    streams: float = 0.0


def parse(text: str, at: float | None = None) -> Scrape:
    scrape = Scrape(at=time.time() if at is None else at)
    wait_sum: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            model = s.labels.get("model", "")
            worker = (model, s.labels.get("worker", ""))
            if s.name == "tokenq_queue_depth":
                scrape.queued[model][s.labels["lane"]] = s.value
            elif s.name == "tokenq_queue_suspects":
                scrape.suspects[model] = s.value
            elif s.name == "tokenq_queue_oldest_age_seconds":
                scrape.oldest_s[model] = s.value
            elif s.name == "tokenq_workers_live":
                scrape.live[model] = s.value
            elif s.name in ("tokenq_worker_slots_busy", "tokenq_worker_slots"):
                cells = scrape.workers.setdefault(worker, [0.0, 0.0, 0.0])
                cells[0 if s.name.endswith("busy") else 1] = s.value
            elif s.name == "tokenq_worker_redis_errors_total":
                scrape.workers.setdefault(worker, [0.0, 0.0, 0.0])[2] = s.value
            elif s.name in RATES:
                totals = scrape.totals[s.name]
                totals[model] = totals.get(model, 0.0) + s.value  # summed over lanes, statuses
            elif s.name == "tokenq_queue_wait_seconds_sum":
                wait_sum[model] = s.value
            elif s.name == "tokenq_queue_wait_seconds_count":
                scrape.wait[model] = (wait_sum.get(model, 0.0), s.value)
            elif s.name == "tokenq_stream_clients":
                scrape.streams += s.value
    return scrape


def _rate(now: Scrape, before: Scrape | None, name: str, model: str) -> str:
    if before is None or now.at <= before.at:
        return "…"
    delta = now.totals[name].get(model, 0.0) - before.totals[name].get(model, 0.0)
    return f"{max(delta, 0.0) / (now.at - before.at):.1f}"


def _mean_wait(now: Scrape, before: Scrape | None, model: str) -> str:
    if before is None:
        return "…"
    (s1, n1), (s0, n0) = now.wait.get(model, (0.0, 0.0)), before.wait.get(model, (0.0, 0.0))
    return f"{(s1 - s0) / (n1 - n0):.2f}s" if n1 > n0 else "-"


def render(now: Scrape, before: Scrape | None, url: str) -> Group:
    """Two tables: per model (line, workers, slots, throughput), per live worker."""
    models = Table(title=f"tokenq at {url} · {now.streams:.0f} stream clients", expand=True)
    for column in ("model", "workers", "busy/slots", "interactive", "batch", "suspects"):
        models.add_column(column, justify="left" if column == "model" else "right")
    for column in ("oldest wait", "mean wait", *RATES.values()):
        models.add_column(column, justify="right")
    for model in sorted(set(now.live) | set(now.queued)):
        lanes = now.queued.get(model, {})
        busy = sum(c[0] for (m, _), c in now.workers.items() if m == model)
        slots = sum(c[1] for (m, _), c in now.workers.items() if m == model)
        live = now.live.get(model, 0)
        models.add_row(
            model,
            Text(f"{live:.0f}", style="red" if not live else ""),
            f"{busy:.0f}/{slots:.0f}",
            f"{sum(n for lane, n in lanes.items() if lane.startswith('interactive')):.0f}",
            f"{sum(n for lane, n in lanes.items() if lane.startswith('batch')):.0f}",
            f"{now.suspects.get(model, 0):.0f}",
            f"{now.oldest_s.get(model, 0):.1f}s",
            _mean_wait(now, before, model),
            *(_rate(now, before, name, model) for name in RATES),
        )
    workers = Table(title="live workers", expand=True)
    for column in ("worker", "model", "busy/slots", "redis errors"):
        workers.add_column(column, justify="left" if column in ("worker", "model") else "right")
    for (model, name), (busy, slots, errors) in sorted(now.workers.items()):
        workers.add_row(name, model, f"{busy:.0f}/{slots:.0f}", f"{errors:.0f}")
    return Group(models, workers)
