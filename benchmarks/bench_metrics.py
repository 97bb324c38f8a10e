"""What seeing inside costs: bulk throughput with and without a Prometheus scrape every second,
and the time to answer GET /metrics with 10,000 jobs waiting.

One private stack (redis-server, a worker of the default model, the API, no keys):

* bulk throughput: a batch of BULK_JOBS distinct prompts x MAX_TOKENS tokens (temperature 0)
  through POST /v1/batches, from the submit to the batch's `completed`, counting the completion
  tokens produced. Rounds alternate "scraped" (a thread GETs /metrics every second, as
  Prometheus would, for the whole round) and "quiet" (no scraper), ROUNDS of each, the order
  swapped every pair. Reported: the median of the per-pair ratios scraped/quiet and their
  spread. Target: within 1% (ratio >= 0.99).
* scrape time: 10,000 jobs queued for a model no worker serves (one batch), then GET /metrics
  and its peer GET /healthz (one Redis PING) alternately, SCRAPES times each. Reported: the
  median of each and of /metrics minus /healthz. Target: /metrics < 50 ms.
* scrape CPU: the CPU time (user + system, from /proc) the API and redis-server processes spend
  on SCRAPES scrapes of /metrics, against the same number of /healthz (peer), with 10,000 jobs
  queued. At one scrape a second, (metrics - healthz) per scrape over 1 s is the share of one
  core that scraping takes from generation: the figure the throughput rounds above are too
  noisy to resolve (their per-round spread on a shared 2-core machine is +-20%).

Prints a table and writes var/bench/metrics.json; exits 0 even when a target is missed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.bench_core import workload
from cli.stack import Stack, free_port
from jobs.settings import ROOT

ROUNDS = 5
BULK_JOBS, MAX_TOKENS = 48, 48
QUEUED_JOBS = 10_000
SCRAPES = 30
CPU_SCRAPES = 200
SCRAPE_EVERY_S = 1.0
THROUGHPUT_TARGET = 0.99
SCRAPE_TARGET_MS = 50.0
OUT_PATH = ROOT / "var" / "bench" / "metrics.json"


def bulk_round(http: httpx.Client, model: str, scraped: bool) -> dict[str, float]:
    """One batch to its end; with a scraper hitting /metrics every second meanwhile."""
    stop = threading.Event()
    scrapes: list[float] = []

    def scraper() -> None:
        with httpx.Client(base_url=str(http.base_url), timeout=30) as own:
            while not stop.wait(SCRAPE_EVERY_S):
                t0 = time.perf_counter()
                own.get("/metrics").raise_for_status()
                scrapes.append(time.perf_counter() - t0)

    thread = threading.Thread(target=scraper, daemon=True)
    jobs = [{"prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0} for p in workload()]
    body = {"model": model, "jobs": jobs[:BULK_JOBS]}
    if scraped:
        thread.start()
    start = time.perf_counter()
    batch = http.post("/v1/batches", json=body)
    batch.raise_for_status()
    batch_id = batch.json()["id"]
    while http.get(f"/v1/batches/{batch_id}").json()["status"] not in ("completed", "failed"):
        time.sleep(0.2)
    wall = time.perf_counter() - start
    stop.set()
    if scraped:
        thread.join()
    tokens = 0
    with http.stream("GET", f"/v1/batches/{batch_id}/results") as results:
        for line in results.iter_lines():
            if line:
                tokens += json.loads(line)["response"]["usage"]["completion_tokens"]
    return {"tokens_per_s": tokens / wall, "wall_s": wall, "scrapes": len(scrapes)}


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def scrape_cpu(http: httpx.Client, pids: list[int]) -> dict[str, float]:
    """CPU ms of the API and Redis per GET /metrics and per GET /healthz."""
    per: dict[str, float] = {}
    for path in ("/healthz", "/metrics", "/healthz", "/metrics"):
        before = cpu_s(pids)
        for _ in range(CPU_SCRAPES):
            http.get(path).raise_for_status()
        spent = (cpu_s(pids) - before) * 1000 / CPU_SCRAPES
        per[path] = min(per.get(path, spent), spent)  # the quieter of two passes
    return {"metrics_cpu_ms": per["/metrics"], "healthz_cpu_ms": per["/healthz"]}


def scrape_times(http: httpx.Client) -> dict[str, float]:
    """GET /metrics and GET /healthz, alternately, with QUEUED_JOBS jobs waiting."""
    queued = {"model": "idle", "jobs": [{"prompt": "wait", "max_tokens": 1}] * QUEUED_JOBS}
    http.post("/v1/batches", json=queued, timeout=300).raise_for_status()
    times: dict[str, list[float]] = {"/metrics": [], "/healthz": []}
    for i in range(SCRAPES):
        for path in ("/metrics", "/healthz") if i % 2 == 0 else ("/healthz", "/metrics"):
            t0 = time.perf_counter()
            response = http.get(path)
            times[path].append(time.perf_counter() - t0)
            response.raise_for_status()
    depth = [
        line
        for line in http.get("/metrics").text.splitlines()
        if line.startswith('tokenq_queue_depth{lane="batch:normal",model="idle"}')
    ]
    return {
        "queued": float(depth[0].split()[-1]) if depth else 0.0,
        "metrics_ms": statistics.median(times["/metrics"]) * 1000,
        "healthz_ms": statistics.median(times["/healthz"]) * 1000,
        "metrics_max_ms": max(times["/metrics"]) * 1000,
    }


def main() -> int:
    real = yaml.safe_load((ROOT / "configs" / "models.yaml").read_text())
    model = real["default"]
    with tempfile.TemporaryDirectory(prefix="tokenq-bench-metrics-") as tmp_dir:
        tmp = Path(tmp_dir)
        models = tmp / "models.yaml"
        idle = {"engine": "fake", "n_ctx": 4096}
        models.write_text(
            yaml.safe_dump({"default": model, "models": {**real["models"], "idle": idle}})
        )
        stack = Stack(log_dir=tmp / "logs")
        stack.env.update(TOKENQ_MODELS_CONFIG=str(models), TOKENQ_DATA_DIR=str(ROOT / "var"))
        rounds: dict[str, list[dict[str, float]]] = {"quiet": [], "scraped": []}
        try:
            stack.start_redis(free_port(), tmp / "redis")
            stack.start_worker(model)
            base = stack.start_api("127.0.0.1", free_port())
            stack.wait_worker(model, 300)
            with httpx.Client(base_url=base, timeout=120) as http:
                bulk_round(http, model, scraped=False)  # warm-up: page the model in
                for i in range(ROUNDS):
                    for mode in ("quiet", "scraped") if i % 2 == 0 else ("scraped", "quiet"):
                        row = bulk_round(http, model, scraped=mode == "scraped")
                        rounds[mode].append(row)
                        print(f"round {i + 1} {mode}: {row['tokens_per_s']:.1f} tokens/s "
                              f"({row['scrapes']} scrapes)", flush=True)  # fmt: skip
                scrape = scrape_times(http)
                pids = [p.pid for name, p in stack.procs if name in ("api", "redis")]
                scrape.update(scrape_cpu(http, pids))
        finally:
            stack.stop()
    ratios = [
        s["tokens_per_s"] / q["tokens_per_s"]
        for s, q in zip(rounds["scraped"], rounds["quiet"], strict=True)
    ]
    summary: dict[str, Any] = {
        "rounds": rounds,
        "throughput_ratio_scraped_over_quiet": ratios,
        "scrape": scrape,
    }
    ratio = statistics.median(ratios)
    print()
    print("| | scraped every 1 s | quiet (peer) | ratio (median, spread) | target |")
    print("|---|---|---|---|---|")
    print(
        f"| bulk tokens/s (median of {ROUNDS}) "
        f"| {statistics.median(r['tokens_per_s'] for r in rounds['scraped']):.1f} "
        f"| {statistics.median(r['tokens_per_s'] for r in rounds['quiet']):.1f} "
        f"| {ratio:.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | >= {THROUGHPUT_TARGET} |"
    )
    print()
    print(f"| {scrape['queued']:.0f} jobs queued | GET /metrics | GET /healthz (peer) | difference | target |")  # fmt: skip
    print("|---|---|---|---|---|")
    print(
        f"| median of {SCRAPES} | {scrape['metrics_ms']:.1f} ms (max {scrape['metrics_max_ms']:.1f}) "
        f"| {scrape['healthz_ms']:.1f} ms | {scrape['metrics_ms'] - scrape['healthz_ms']:.1f} ms "
        f"| /metrics < {SCRAPE_TARGET_MS:.0f} ms |"
    )
    extra = scrape["metrics_cpu_ms"] - scrape["healthz_cpu_ms"]
    print()
    print("| CPU of API + Redis | per GET /metrics | per GET /healthz (peer) | scraping at 1 Hz |")
    print("|---|---|---|---|")
    print(
        f"| min of 2 passes x {CPU_SCRAPES} | {scrape['metrics_cpu_ms']:.2f} ms "
        f"| {scrape['healthz_cpu_ms']:.2f} ms | {extra / 10:.2f}% of one core beyond /healthz |"
    )
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
