"""Core benchmark: what does tokenq's queue cost compared with calling llama.cpp directly?

One run measures the same workload in-process and through a private tokenq stack:

* throughput: 64 distinct prompts x 64 tokens (temperature 0) on the default model with its
  configured threads. (a) llama-cpp-python in this process, one prompt after another;
  (b) tokenq end to end: 64 POST /v1/jobs + one SSE stream per job, all concurrent, from the
  first submit to the last `done` event. Target: (b)/(a) >= 0.90.
* queue overhead: one short job (8 tokens), 20 times: end to end (POST -> `done` over SSE) minus
  the same generation in-process, paired and interleaved so machine noise hits both. Target:
  median < 20 ms.

Tokens/s count the completion tokens actually produced (usage.completion_tokens), so a job that
stops early is not credited with 64. The in-process model and the worker never generate at the
same time. Prints a table and writes var/bench/core.json; exits 0 even when a target is missed.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import load_llama
from cli.stack import Stack, StackError, free_port
from jobs.registry import ModelConfig, Registry
from jobs.settings import ROOT, Settings
from tokenq.client import aiter_sse

N_JOBS = 64
MAX_TOKENS = 64
SHORT_MAX_TOKENS = 8
OVERHEAD_RUNS = 20
THROUGHPUT_TARGET = 0.90  # (b)/(a), at least
OVERHEAD_TARGET_MS = 20.0  # median, below
TOPICS = (
    "a lighthouse keeper, a lost robot, the last dragon, a haunted library, a time traveller, "
    "a desert caravan, a small bakery, a space station, a talking cat, a forgotten city, "
    "a pirate ship, a mountain village, a clockmaker, a deep-sea diver, a circus, a snowstorm"
).split(", ")
# "Once upon a time," makes the instruct model continue instead of ending at once (EOS).
SHORT_PROMPT = "Write a short story about a quiet harbour.\n\nOnce upon a time,"
OUT_PATH = ROOT / "var" / "bench" / "core.json"
JOB_TIMEOUT_S = 120.0
PHASE_TIMEOUT_S = 900.0


def workload() -> list[str]:
    """64 distinct prompts: 16 topics x 4 settings."""
    places = ("", " in winter", " at night", " long ago")
    return [
        f"Write a short story about {t}{p}.\n\nOnce upon a time," for p in places for t in TOPICS
    ]


def inprocess_tokens(llm: Any, prompt: str, max_tokens: int) -> int:
    out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0)
    return int(out["usage"]["completion_tokens"])


def bench_inprocess(llm: Any, prompts: list[str]) -> dict[str, float]:
    """(a) One prompt after another on the loaded Llama."""
    tokens, times = 0, []
    start = time.perf_counter()
    for prompt in prompts:
        t0 = time.perf_counter()
        tokens += inprocess_tokens(llm, prompt, MAX_TOKENS)
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    # A slowest prompt far above the median means the CPUs were shared meanwhile (noise).
    return dict(completion_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall,
                prompt_median_s=statistics.median(times), prompt_max_s=max(times))  # fmt: skip


async def run_job(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submit one job and follow its SSE stream to the final event; returns the final event."""
    resp = await client.post("/v1/jobs", json=body)
    resp.raise_for_status()
    job_id = resp.json()["id"]
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as events:
        events.raise_for_status()
        async for sse in aiter_sse(events.aiter_bytes()):
            event = sse.json()
            if event["type"] == "error":
                raise RuntimeError(f"job {job_id} failed: {event['data']}")
            if event["type"] == "done":
                return event
    raise RuntimeError(f"job {job_id}: stream ended without a final event")


def job_body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}


def completion_tokens(done: dict[str, Any]) -> int:
    result = done["data"]["result"]
    if done["data"]["status"] != "succeeded":
        raise RuntimeError(f"job ended {done['data']['status']}: {result.get('error')}")
    return int(result["usage"]["completion_tokens"])


def worker_ms(done: dict[str, Any], name: str) -> float:
    """The worker's own timing of a job (queue_wait_ms, generation_ms), for diagnosis."""
    return float((done["data"]["result"].get("timings") or {}).get(name) or 0.0)


def client_for(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        timeout=httpx.Timeout(JOB_TIMEOUT_S, connect=5.0),
        limits=httpx.Limits(max_connections=2 * N_JOBS, max_keepalive_connections=2 * N_JOBS),
    )


async def bench_tokenq(base: str, prompts: list[str]) -> dict[str, float]:
    """(b) All jobs submitted at once, each streamed back over its own SSE connection."""
    async with client_for(base) as client:
        start = time.perf_counter()
        finals = await asyncio.wait_for(
            asyncio.gather(*(run_job(client, job_body(p, MAX_TOKENS)) for p in prompts)),
            PHASE_TIMEOUT_S,
        )
        wall = time.perf_counter() - start
    tokens = sum(completion_tokens(f) for f in finals)
    # Wall time minus the worker's generation time = gaps between jobs (dispatch, claim, finish).
    generating = sum(worker_ms(f, "generation_ms") for f in finals) / 1000
    return dict(completion_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall,
                worker_generation_s=generating)  # fmt: skip


async def bench_overhead(base: str, llm: Any) -> dict[str, Any]:
    """Paired short jobs: in-process, then end to end, alternating (one warm-up pair first)."""
    inproc_ms: list[float] = []
    e2e_ms: list[float] = []
    waits_ms: list[float] = []
    async with client_for(base) as client:
        for i in range(OVERHEAD_RUNS + 1):
            # Forget the last prompt's KV: llama-cpp-python would otherwise reuse it for the same
            # prompt and skip the prompt evaluation that tokenq's worker does.
            llm.reset()
            t0 = time.perf_counter()
            n_in = inprocess_tokens(llm, SHORT_PROMPT, SHORT_MAX_TOKENS)
            t1 = time.perf_counter()
            done = await asyncio.wait_for(
                run_job(client, job_body(SHORT_PROMPT, SHORT_MAX_TOKENS)), JOB_TIMEOUT_S
            )
            t2 = time.perf_counter()
            n_e2e = completion_tokens(done)
            if n_in != n_e2e:
                print(f"note: short job produced {n_in} tokens in-process, {n_e2e} via tokenq")
            if i > 0:  # the first pair warms caches and connections
                inproc_ms.append((t1 - t0) * 1000)
                e2e_ms.append((t2 - t1) * 1000)
                waits_ms.append(worker_ms(done, "queue_wait_ms"))
    diffs = [e - p for e, p in zip(e2e_ms, inproc_ms, strict=True)]
    return {
        "runs": OVERHEAD_RUNS,
        "max_tokens": SHORT_MAX_TOKENS,
        "inprocess_median_ms": statistics.median(inproc_ms),
        "tokenq_median_ms": statistics.median(e2e_ms),
        "overhead_median_ms": statistics.median(diffs),
        "overhead_min_ms": min(diffs),
        "overhead_max_ms": max(diffs),
        "worker_queue_wait_median_ms": statistics.median(waits_ms),  # created -> claimed
    }


def start_stack(stack: Stack, settings: Settings, model: ModelConfig, tmp: Path) -> str:
    """Private Redis (temp data dir), one worker, the API on loopback; returns the API's URL."""
    stack.env.update(
        TOKENQ_DATA_DIR=str(settings.data_dir),  # assembled models live there; nothing is written
        TOKENQ_MODELS_CONFIG=str(settings.models_config),
        TOKENQ_API_KEYS="{}",  # one anonymous tenant (loopback only)
    )
    stack.start_redis(free_port(), tmp / "redis")
    stack.start_worker(model.alias)
    return stack.start_api("127.0.0.1", free_port())


async def warm_up(base: str) -> float:
    """Wait until the worker has loaded the model: one job, end to end."""
    async with client_for(base) as client:
        start = time.perf_counter()
        done = await asyncio.wait_for(run_job(client, job_body(SHORT_PROMPT, 4)), 300)
        completion_tokens(done)
        return time.perf_counter() - start


def show_log_tails(stack: Stack) -> None:
    for path in sorted(stack.log_dir.glob("*.log")) if stack.log_dir else []:
        tail = path.read_text(errors="replace").splitlines()[-15:]
        print(f"--- last lines of {path.name} ---", *tail, sep="\n", file=sys.stderr)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(model: ModelConfig, a: dict, b: dict, ov: dict) -> dict[str, Any]:
    ratio = b["tokens_per_s"] / a["tokens_per_s"]
    tp_ok = ratio >= THROUGHPUT_TARGET
    ov_ok = ov["overhead_median_ms"] < OVERHEAD_TARGET_MS
    e2e_ms, inproc_ms = ov["tokenq_median_ms"], ov["inprocess_median_ms"]
    rows = [
        ("measurement", "tokenq", "in-process", "ratio", "target", "result"),
        ("-" * 34, "-" * 10, "-" * 12, "-" * 8, "-" * 9, "-" * 6),
        ("throughput (tokens/s)", f"{b['tokens_per_s']:.1f}", f"{a['tokens_per_s']:.1f}",
         f"{ratio:.3f}", f">= {THROUGHPUT_TARGET:.2f}", verdict(tp_ok)),
        ("  completion tokens / wall (s)", f"{b['completion_tokens']}/{b['wall_s']:.1f}",
         f"{a['completion_tokens']}/{a['wall_s']:.1f}"),
        (f"short job, {SHORT_MAX_TOKENS} tokens (ms, median)", f"{e2e_ms:.1f}", f"{inproc_ms:.1f}",
         f"{e2e_ms / inproc_ms:.3f}"),
        (f"queue overhead per job (ms, n={ov['runs']})", f"{ov['overhead_median_ms']:.1f}", "",
         "", f"< {OVERHEAD_TARGET_MS:.0f} ms", verdict(ov_ok)),
    ]  # fmt: skip
    print(
        f"\ntokenq core benchmark: model {model.alias}, {model.threads} threads, "
        f"{os.cpu_count()} CPUs; {N_JOBS} prompts x {MAX_TOKENS} tokens, temperature 0"
    )
    for row in rows:
        cells = (*row, *[""] * (6 - len(row)))
        print("{:<34} {:>10} {:>12} {:>8} {:>9}  {}".format(*cells).rstrip())
    print(
        f"  overhead = median of paired differences (tokenq - in-process), range "
        f"{ov['overhead_min_ms']:.1f} .. {ov['overhead_max_ms']:.1f} ms;\n"
        f"  of it, median queue wait (created -> claimed by the worker): "
        f"{ov['worker_queue_wait_median_ms']:.1f} ms"
    )
    return {
        "at": time.time(),
        "model": model.alias,
        "threads": model.threads,
        "cpus": os.cpu_count(),
        "workload": {"jobs": N_JOBS, "max_tokens": MAX_TOKENS, "temperature": 0},
        "inprocess": a,
        "tokenq": b,
        "throughput_ratio": ratio,
        "throughput_target": THROUGHPUT_TARGET,
        "throughput_pass": tp_ok,
        "overhead": ov,
        "overhead_target_ms": OVERHEAD_TARGET_MS,
        "overhead_pass": ov_ok,
    }


def main() -> int:
    settings = Settings()
    model = Registry.load(settings.models_config).get(None)
    prompts = workload()
    print(f"loading {model.alias} in-process (n_ctx {model.n_ctx}, threads {model.threads})...")
    llm = load_llama(model, settings.data_dir)
    inprocess_tokens(llm, SHORT_PROMPT, SHORT_MAX_TOKENS)  # warm-up
    print(f"(a) in-process: {N_JOBS} prompts, one after another...")
    a = bench_inprocess(llm, prompts)
    print(
        f"    {a['completion_tokens']} tokens in {a['wall_s']:.1f}s (per prompt: median "
        f"{a['prompt_median_s']:.2f}s, slowest {a['prompt_max_s']:.2f}s)"
    )

    with tempfile.TemporaryDirectory(prefix="tokenq-bench-") as tmp:
        stack = Stack(log_dir=Path(tmp) / "logs")
        try:
            print("starting a private stack (redis, worker, api)...")
            base = start_stack(stack, settings, model, Path(tmp))
            print(f"    api at {base}; worker ready after {asyncio.run(warm_up(base)):.1f}s")
            print(f"(b) tokenq: {N_JOBS} jobs over HTTP, one SSE stream each...")
            b = asyncio.run(bench_tokenq(base, prompts))
            print(
                f"    {b['completion_tokens']} tokens in {b['wall_s']:.1f}s "
                f"(the worker generating for {b['worker_generation_s']:.1f}s of it)"
            )
            print(f"queue overhead: {OVERHEAD_RUNS} short jobs, alternating with in-process runs")
            ov = asyncio.run(bench_overhead(base, llm))
        except (StackError, RuntimeError, httpx.HTTPError, TimeoutError) as exc:
            print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            show_log_tails(stack)
            return 1
        finally:
            stack.stop()
    llm.close()

    figures = report(model, a, b, ov)
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nfigures written to {OUT_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
