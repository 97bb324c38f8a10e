"""Does validating heavy requests stall the API? /healthz latency under load against idle.

A private stack (Redis and the API; no worker is needed). Rounds alternate: idle (only the
/healthz probe) and loaded (4 clients each sending 3 jobs of a 900,000-character prompt, which
the API renders and tokenizes, then refuses as too long for the model's context: all the work
of validation, nothing queued). The probe asks /healthz every 20 ms in both. Reports each
round's median and p99, and the median over rounds of loaded p99 / idle p99. Target: loaded p99
< 50 ms. Writes var/bench/stall.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cli.stack import Stack, StackError, free_port
from jobs.settings import ROOT

ROUNDS = 3
HEAVY_CLIENTS = 4
HEAVY_REQUESTS = 3
IDLE_PROBE_S = 3.0
OUT_PATH = ROOT / "var" / "bench" / "stall.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def probe_while(client: httpx.AsyncClient, work: asyncio.Future[object]) -> list[float]:
    latencies = []
    while not work.done():
        start = time.perf_counter()
        response = await client.get("/healthz")
        latencies.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
        await asyncio.sleep(0.02)
    await work
    return latencies


async def measure(base: str, loaded: bool) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        body = {"model": "smollm2", "prompt": "word " * 180_000, "max_tokens": 1}

        async def heavy() -> None:
            for _ in range(HEAVY_REQUESTS):
                response = await client.post("/v1/jobs", json=body)
                if response.status_code != 422:
                    raise RuntimeError(f"expected a context overflow: {response.text[:200]}")

        if loaded:
            work = asyncio.ensure_future(asyncio.gather(*(heavy() for _ in range(HEAVY_CLIENTS))))
        else:
            work = asyncio.ensure_future(asyncio.sleep(IDLE_PROBE_S))
        return await probe_while(client, work)


def main() -> int:
    rounds = []
    with tempfile.TemporaryDirectory(prefix="tokenq-bench-") as tmp:
        stack = Stack(log_dir=Path(tmp) / "logs")
        stack.env["TOKENQ_API_KEYS"] = "{}"
        try:
            stack.start_redis(free_port(), Path(tmp) / "redis")
            base = stack.start_api("127.0.0.1", free_port())
            for i in range(ROUNDS):
                idle = asyncio.run(measure(base, loaded=False))
                loaded = asyncio.run(measure(base, loaded=True))
                row = {
                    "idle_median_ms": statistics.median(idle),
                    "idle_p99_ms": percentile(idle, 0.99),
                    "loaded_median_ms": statistics.median(loaded),
                    "loaded_p99_ms": percentile(loaded, 0.99),
                }
                rounds.append(row)
                print(
                    f"round {i + 1}: /healthz idle median {row['idle_median_ms']:.1f} ms, p99 "
                    f"{row['idle_p99_ms']:.1f}; loaded median {row['loaded_median_ms']:.1f} ms, "
                    f"p99 {row['loaded_p99_ms']:.1f}"
                )
        except (StackError, RuntimeError, httpx.HTTPError) as exc:
            print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            stack.stop()
    ratios = [r["loaded_p99_ms"] / r["idle_p99_ms"] for r in rounds]
    worst = max(r["loaded_p99_ms"] for r in rounds)
    print(
        f"loaded p99 / idle p99: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f} .. {max(ratios):.2f}); worst loaded p99 {worst:.1f} ms "
        f"(target < 50 ms: {'PASS' if worst < 50 else 'MISS'})"
    )
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(json.dumps({"rounds": rounds, "ratios": ratios}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
