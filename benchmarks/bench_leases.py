"""What do leases cost? Bulk throughput of the same batch before and after them.

"Before" is a checkout of the commit before leases (BEFORE, in a git worktree under var/bench);
"after" is this checkout. Each run starts a private stack from one checkout (redis-server, one
worker of the default model, the API), submits one native batch of N_JOBS prompts (bench_core's)
x MAX_TOKENS tokens (temperature 0), and times it from the POST to the batch's end; completion
tokens over that time is the run's throughput. Each round runs both, in alternating order
(before-after, then after-before), ROUNDS rounds, so machine noise and drift fall on both. Reports each round, and the median of after/before over the paired rounds
with its range. Target: the ratio stays >= 0.98. Writes var/bench/leases.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import bench_core as core
from cli.stack import API_FACTORY, free_port, redis_reachable, redis_server_binary, wait_until
from jobs.settings import ROOT

#: The last commit before leases, tickets and the reconciler.
BEFORE = "ff8ee96"
ROUNDS = 5
N_JOBS, MAX_TOKENS = 64, 64
OUT_PATH = ROOT / "var" / "bench" / "leases.json"


def checkout_before() -> Path:
    path = ROOT / "var" / "bench" / f"tokenq-{BEFORE}"
    if not path.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), BEFORE],
            check=True,
            capture_output=True,
        )
    return path


def one_round(code: Path, tmp: Path) -> float:
    """Completion tokens per second of one batch on a fresh stack run from `code`."""
    port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(code),  # before the editable install: this checkout's packages
        "TOKENQ_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "TOKENQ_MODELS_CONFIG": str(ROOT / "configs" / "models.yaml"),
        "TOKENQ_DATA_DIR": str(ROOT / "var"),
        "TOKENQ_API_KEYS": "{}",
    }
    log = open(tmp / f"round-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    procs = []

    def spawn(*args: str) -> None:
        procs.append(
            subprocess.Popen(args, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
        )

    try:
        redis_dir = tmp / f"redis-{port}"
        redis_dir.mkdir()
        spawn(redis_server_binary(), str(ROOT / "configs" / "redis.conf"), "--port", str(port),
              "--dir", str(redis_dir))  # fmt: skip
        wait_until(lambda: redis_reachable(env["TOKENQ_REDIS_URL"]), 20, "redis")
        spawn(sys.executable, "-m", "worker", "--hostname", f"bench-{port}@%h")
        spawn(sys.executable, "-m", "uvicorn", "--factory", API_FACTORY, "--port", str(api_port),
              "--log-level", "warning")  # fmt: skip
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 60, "api")
        with httpx.Client(base_url=base, timeout=60) as client:
            warm = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
            job = client.post("/v1/jobs", json=warm).json()  # the worker has loaded its model
            wait_until(
                lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded",
                180,
                "the worker's first job",
            )
            jobs = [
                {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
                for prompt in core.workload()[:N_JOBS]
            ]
            start = time.perf_counter()
            batch = client.post("/v1/batches", json={"jobs": jobs}).json()
            while client.get(f"/v1/batches/{batch['id']}").json()["status"] != "completed":
                time.sleep(0.1)
            elapsed = time.perf_counter() - start
            results = client.get(f"/v1/batches/{batch['id']}/results").text.splitlines()
            tokens = sum(
                json.loads(line)["response"]["usage"]["completion_tokens"] for line in results
            )
        return tokens / elapsed
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def main() -> int:
    before_code = checkout_before()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="tokenq-bench-leases-") as tmp:
        for i in range(ROUNDS):
            row = {}
            order = [("before", before_code), ("after", ROOT)]
            for label, code in order if i % 2 == 0 else order[::-1]:  # ABBA: drift cancels
                row[label] = one_round(code, Path(tmp))
                print(f"round {i + 1} {label:6s} {row[label]:7.1f} tokens/s", flush=True)
            row["ratio"] = row["after"] / row["before"]
            rounds.append(row)
    ratios = [r["ratio"] for r in rounds]
    summary = {
        "before_commit": BEFORE,
        "rounds": rounds,
        "median_ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "target": ">= 0.98",
    }
    print(
        f"after/before throughput: median {summary['median_ratio']:.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}) over {ROUNDS} paired rounds"
    )
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
