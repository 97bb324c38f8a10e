"""How fast is hostile input refused? Each request of a hostile corpus, timed to its 4xx,
beside a plain GET /healthz timed in the same round (the peer: what the API costs anyway).

A private stack (Redis and the API; no worker: nothing hostile is ever queued). ROUNDS rounds;
in each, every case once, each followed by a /healthz. The oversize body's time is mostly the
client writing its 64 MiB (httpx sends a body whole before it reads the 413). Reports per case the median time to its
answer, its status, and its ratio to the median /healthz; and whether the API is still up after
all of them. Targets: < 100 ms for size and format checks, < 1 s for grammar checks. Writes
var/bench/hostile.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from cli.stack import Stack, free_port
from jobs.settings import ROOT

ROUNDS = 5
OUT_PATH = ROOT / "var" / "bench" / "hostile.json"
JSON = {"Content-Type": "application/json"}


def _deep(n: int) -> bytes:
    return b'{"jobs": ' + b"[" * n + b"]" * n + b"}"


def corpus(job_id: str) -> dict[str, dict[str, Any]]:
    """name -> httpx request arguments (each one refused with a 4xx); job_id names a real job."""
    nested = "root ::= " + "(" * 1001 + '"a"' + ")" * 1001
    return {
        "deep JSON body (100,000 levels)": dict(method="POST", url="/v1/batches", content=_deep(100_000), headers=JSON),
        "invalid UTF-8 body": dict(method="POST", url="/v1/batches", content=b'{"jobs": ["\xff\xfe"]}', headers=JSON),
        "body over the size limit (Content-Length)": dict(
            method="POST", url="/v1/jobs", content=b"x" * (64 * 1024 * 1024 + 1), headers=JSON
        ),
        "text/plain batch (cross-site form)": dict(
            method="POST", url="/v1/batches", content=b'[{"prompt": "x"}]', headers={"Content-Type": "text/plain"}
        ),
        "made-up id addressing another key": dict(method="GET", url="/v1/jobs/job_x:events"),
        "Last-Event-ID of 5,000 digits": dict(
            method="GET", url=f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "1" * 5000}
        ),
        "schema: maxLength 30,000": dict(
            method="POST", url="/v1/jobs", json={"prompt": "x", "json_schema": {"type": "string", "maxLength": 30000}}
        ),
        "schema: enum of 100,000 strings": dict(
            method="POST", url="/v1/jobs", json={"prompt": "x", "json_schema": {"enum": [f"v{i}" for i in range(100_000)]}}
        ),
        "grammar nested 1,001 deep": dict(method="POST", url="/v1/jobs", json={"prompt": "x", "grammar": nested}),
        "grammar that does not parse": dict(method="POST", url="/v1/jobs", json={"prompt": "x", "grammar": "root ::= ("}),
        "template inputs of 10 MB": dict(
            method="POST", url="/v1/jobs", json={"template": "summarize", "inputs": {"input": "w " * 5_000_000}}
        ),
    }  # fmt: skip


def main() -> int:
    timings: dict[str, list[float]] = {}
    statuses: dict[str, set[int]] = {}
    healthz: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tokenq-bench-hostile-") as tmp:
        stack = Stack(log_dir=Path(tmp) / "logs")
        stack.env["TOKENQ_API_KEYS"] = "{}"
        try:
            stack.start_redis(free_port(), Path(tmp) / "redis")
            base = stack.start_api("127.0.0.1", free_port())
            with httpx.Client(base_url=base, timeout=120) as client:
                # A real job (it waits: no worker), and the grammar sandbox started once
                job = client.post("/v1/jobs", json={"prompt": "x", "grammar": 'root ::= "a"'})
                cases = corpus(job.json()["id"])
                for _ in range(ROUNDS):
                    for name, request in cases.items():
                        start = time.perf_counter()
                        response = client.request(**request)
                        timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)
                        statuses.setdefault(name, set()).add(response.status_code)
                        start = time.perf_counter()
                        client.get("/healthz").raise_for_status()
                        healthz.append((time.perf_counter() - start) * 1000)
                alive = client.get("/healthz").status_code == 200
        finally:
            stack.stop()
    peer = statistics.median(healthz)
    rows = {
        name: {
            "median_ms": statistics.median(times),
            "max_ms": max(times),
            "statuses": sorted(statuses[name]),
            "ratio_to_healthz": statistics.median(times) / peer,
        }
        for name, times in timings.items()
    }
    print(f"GET /healthz (peer): median {peer:.1f} ms over {len(healthz)}")
    for name, row in rows.items():
        print(
            f"{name:45s} {row['statuses']} median {row['median_ms']:7.1f} ms "
            f"(max {row['max_ms']:7.1f}; {row['ratio_to_healthz']:.1f}x /healthz)"
        )
    print(f"API alive after the corpus: {alive}")
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(
        json.dumps({"healthz_median_ms": peer, "cases": rows, "alive": alive}, indent=2)
    )
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
