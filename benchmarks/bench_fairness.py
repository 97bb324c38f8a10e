"""Fair share against FIFO: interactive jobs behind a big batch, and a second tenant's batch.

A private stack per run (redis-server, one fake-engine worker with 8 slots at 20 ms a token, the
API with three tenants' keys), the worker's TOKENQ_SCHEDULING set to "fair" (lanes, tenants by
weight) or "fifo" (each model's jobs in arrival order: the peer). Each run:

1. tenant a submits one batch of BULK_JOBS jobs (16 tokens each);
2. two seconds later tenant b submits INTERACTIVE single jobs (POST /v1/jobs) and tenant c a
   batch of SECOND_JOBS jobs;
3. until every job has ended.

Reported per run: the interactive jobs' queue wait (started_at - created_at) p50 and p95; c's
share of all completions in the 30 s after its submission (equal weights: fair is 50% while a
still has work); and the throughput of the whole run (completion tokens / wall time), whose
fair/fifo ratio is the scheduler's cost. Runs alternate fifo and fair, ROUNDS of each (order
swapped every round). Targets: fair interactive p95 <= 2 s; c's share >= 40%; throughput
ratio >= 0.98. Writes var/bench/fairness.json.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from cli.stack import Stack, free_port
from jobs import keys
from jobs.settings import ROOT

ROUNDS = 3
BULK_JOBS, SECOND_JOBS, INTERACTIVE, MAX_TOKENS = 800, 400, 20, 16
SHARE_WINDOW_S = 30.0
TENANTS = ("a", "b", "c")
OUT_PATH = ROOT / "var" / "bench" / "fairness.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def one_run(scheduling: str, tmp: Path) -> dict[str, float]:
    models = tmp / "models.yaml"
    fake = {"engine": "fake", "n_ctx": 4096, "slots": 8, "fake_token_delay_s": 0.02}
    models.write_text(yaml.safe_dump({"default": "f", "models": {"f": fake}}))
    stack = Stack(log_dir=tmp / "logs")
    stack.env.update(
        TOKENQ_MODELS_CONFIG=str(models),
        TOKENQ_SCHEDULING=scheduling,
        TOKENQ_API_KEYS=json.dumps({t: hashlib.sha256(t.encode()).hexdigest() for t in TENANTS}),
    )
    try:
        port = free_port()
        stack.start_redis(port, tmp / f"redis-{port}")
        stack.start_worker("f", name="f")
        base = stack.start_api("127.0.0.1", free_port())
        stack.wait_worker("f", 60, name="f")
        clients = {
            t: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=120)
            for t in TENANTS
        }
        r = redis.Redis(port=port)
        job = {"prompt": "tell me something", "max_tokens": MAX_TOKENS}
        start = time.time()
        bulk = clients["a"].post("/v1/batches", json={"jobs": [job] * BULK_JOBS}).json()
        time.sleep(2)
        second = clients["c"].post("/v1/batches", json={"jobs": [job] * SECOND_JOBS}).json()
        interactive = [
            clients["b"].post("/v1/jobs", json=job).json()["id"] for _ in range(INTERACTIVE)
        ]
        batches = {"a": bulk["id"], "c": second["id"]}
        while any(
            clients[t].get(f"/v1/batches/{b}").json()["status"] != "completed"
            for t, b in batches.items()
        ):
            time.sleep(0.5)
        while any(
            clients["b"].get(f"/v1/jobs/{j}").json()["status"] != "succeeded" for j in interactive
        ):
            time.sleep(0.2)
        elapsed = time.time() - start
        waits = []
        for job_id in interactive:
            record = clients["b"].get(f"/v1/jobs/{job_id}").json()
            waits.append(record["started_at"] - record["created_at"])
        window_end = second["created_at"] + SHARE_WINDOW_S
        finished = {}
        for tenant, batch_id in batches.items():
            ids = [i.decode() for i in r.lrange(keys.batch_jobs(batch_id), 0, -1)]
            pipe = r.pipeline()
            for job_id in ids:
                pipe.hget(keys.job(job_id), "finished_at")
            finished[tenant] = sum(
                second["created_at"] <= float(t) <= window_end for t in pipe.execute() if t
            )
        tokens = (BULK_JOBS + SECOND_JOBS + INTERACTIVE) * MAX_TOKENS
        for client in clients.values():
            client.close()
        return {
            "interactive_wait_p50_s": statistics.median(waits),
            "interactive_wait_p95_s": percentile(waits, 0.95),
            "second_tenant_share": finished["c"] / max(1, finished["a"] + finished["c"]),
            "tokens_per_s": tokens / elapsed,
        }
    finally:
        stack.stop()


def main() -> int:
    runs: dict[str, list[dict[str, float]]] = {"fifo": [], "fair": []}
    with tempfile.TemporaryDirectory(prefix="tokenq-bench-fairness-") as tmp:
        for i in range(ROUNDS):
            order = ["fifo", "fair"] if i % 2 == 0 else ["fair", "fifo"]
            for scheduling in order:
                run_dir = Path(tmp) / f"{scheduling}-{i}"
                run_dir.mkdir()
                row = one_run(scheduling, run_dir)
                runs[scheduling].append(row)
                print(
                    f"round {i + 1} {scheduling}: interactive wait p50 "
                    f"{row['interactive_wait_p50_s']:.2f}s p95 {row['interactive_wait_p95_s']:.2f}s; "
                    f"second tenant's share {row['second_tenant_share']:.0%}; "
                    f"{row['tokens_per_s']:.0f} tokens/s",
                    flush=True,
                )
    ratios = [
        fair["tokens_per_s"] / fifo["tokens_per_s"]
        for fair, fifo in zip(runs["fair"], runs["fifo"], strict=True)
    ]
    summary: dict[str, Any] = {"runs": runs, "throughput_ratio_fair_over_fifo": ratios}
    for scheduling, rows in runs.items():
        for metric in rows[0]:
            summary[f"{scheduling}_{metric}_median"] = statistics.median(r[metric] for r in rows)
    print(
        f"median interactive p95: fair {summary['fair_interactive_wait_p95_s_median']:.2f}s, "
        f"fifo {summary['fifo_interactive_wait_p95_s_median']:.2f}s; second tenant's share: "
        f"fair {summary['fair_second_tenant_share_median']:.0%}, "
        f"fifo {summary['fifo_second_tenant_share_median']:.0%}; throughput fair/fifo median "
        f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
    )
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
