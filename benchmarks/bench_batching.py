"""Batching benchmark: what does continuous batching buy, against llama.cpp's own batching?

bench_core compares tokenq with one-sequence llama-cpp-python; this puts the batching engine next
to peers that batch too. One run, one peer at a time (never two generating at once):

* throughput, 64 prompts x 64 tokens (temperature 0), default model and threads, 16 concurrent:
  (a) llama-cpp-python in-process, one after another; (b) llama-server -np 16, with our engine's
  attention settings (flash attention as configured, one unified KV buffer: the headline) and
  with its defaults; (c) the raw BatchEngine in-process, 16 client threads; (d) tokenq end to
  end: 64 POST /v1/jobs + 64 SSE streams, first submit -> last `done`.
  Targets: (d) >= 1.1 x (b, matched) and >= 2.5 x (a).
* generation rate at 16 sequences: llama-batched-bench's S_TG (-npp 32 -ntg 64 -npl 16) against
  the raw engine's decode rate while all 16 sequences generate. Target: >= 90% (matched).
* time to first token of one job on an idle system (median of 10): tokenq (POST -> first token
  event) and the raw engine, against in-process create_completion(stream=True). Target: tokenq
  minus in-process <= 15 ms.
* shared-prefix reuse: 16 prompts with one ~300-token system prefix, submitted at once to the raw
  engine with prefix sharing on and off (MIN_SHARED_PREFIX patched out of reach).

llama-server and llama-batched-bench are built from the llama.cpp vendored in the sdist of the
llama-cpp-python release we run, with the Makefile's CMake flags, so only the batching differs;
the build runs once (about 10 minutes on 2 cores). `--profile` samples the worker with py-spy
during (d). Prints a table and writes var/bench/batching.json; a MISS is reported, not an error.
The load average printed with each phase tells how busy the machine was (the figures are noisy
when other work runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

import worker.batch_engine as batch_engine
from benchmarks import bench_core as core
from benchmarks.common import load_llama
from cli.stack import Stack, free_port, wait_until
from jobs.models import SamplingParams
from jobs.registry import ModelConfig, Registry
from jobs.settings import ROOT, Settings
from worker.batch_engine import BatchEngine
from worker.engine import GenerationRequest

N_JOBS, MAX_TOKENS, CONCURRENCY = 64, 64, 16
TTFT_RUNS = 10
PREFIX_MAX_TOKENS = 32
PHASE_TIMEOUT_S = 900.0
E2E_VS_SERVER_TARGET, E2E_VS_INPROCESS_TARGET = 1.10, 2.50  # ratios, at least
GEN_RATE_TARGET = 0.90  # raw engine / llama-batched-bench S_TG, at least
TTFT_OVERHEAD_TARGET_MS = 15.0  # tokenq - in-process, at most
LLAMA_CPP_PYTHON = "0.3.36"  # the release we run: its sdist vendors the llama.cpp we link
BUILD_ROOT = ROOT / "var" / "llama-server"
LLAMA_SRC = BUILD_ROOT / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
TOOLS = ("llama-server", "llama-batched-bench")
# The Makefile's CMAKE_ARGS: an explicit instruction set (AVX512 only where the CPU has it).
CMAKE_FLAGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
AVX512_FLAGS = "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"
OUT_PATH = ROOT / "var" / "bench" / "batching.json"
PROFILE_PATH = ROOT / "var" / "bench" / "worker-profile.txt"
SYSTEM_PREFIX = (  # about 300 tokens, the same for all 16 prompts of the shared-prefix phase
    "You are the storyteller of a children's magazine and you write for readers aged eight to "
    "twelve, who read on their own and like to be surprised. Every story has one main character "
    "with a name, a wish, and a problem in the way. Begin in the middle of the action; never begin "
    "with the weather or with waking up. Use short sentences and plain words, and explain any "
    "unusual word in the same sentence. Show feelings through what characters do and say, not by "
    "naming the feeling. Give every place one sound, one smell and one colour that a reader can "
    "remember. Dialogue is welcome, but no more than three characters may speak in one story. "
    "Nobody is hurt badly, nothing is scary for long, and every animal is treated kindly. Humour "
    "comes from the characters and their mistakes, never from mocking anyone. The problem is "
    "solved by the main character's own idea, not by luck or by an adult. End with a small change "
    "in the main character and one sentence that looks ahead. Do not use lists, headings, morals "
    "spelled out, or the words 'the end'. Keep names simple to read aloud, and do not reuse names "
    "from famous books or films.\n\n"
)
LOADS: dict[str, list[float]] = {}  # phase -> load average as it began


def phase(name: str, what: str) -> None:
    LOADS[name] = [round(x, 2) for x in os.getloadavg()]
    print(f"{what}  [load {' '.join(f'{x:.2f}' for x in LOADS[name])}]", flush=True)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# --- llama.cpp's own tools (b) -----------------------------------------------------------------


def ensure_llama_tools() -> Path:
    """llama-server and llama-batched-bench from llama-cpp-python's sdist, built when missing."""
    bindir = LLAMA_SRC / "build" / "bin"
    if all((bindir / tool).exists() for tool in TOOLS):
        return bindir
    print(f"building {' and '.join(TOOLS)} from llama-cpp-python {LLAMA_CPP_PYTHON}'s sdist (about 10 minutes on 2 cores)...", flush=True)  # fmt: skip
    if not (LLAMA_SRC / "CMakeLists.txt").exists():
        sdist = BUILD_ROOT / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        if not sdist.exists():
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            spec = f"llama-cpp-python=={LLAMA_CPP_PYTHON}"
            subprocess.run([*pip, spec, "-d", str(BUILD_ROOT)], check=True, timeout=600)
        with tarfile.open(sdist) as tar:
            tar.extractall(BUILD_ROOT, filter="data")
    flags = CMAKE_FLAGS.split()
    if "avx512f" in Path("/proc/cpuinfo").read_text().split():
        flags += AVX512_FLAGS.split()
    flags += ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    configure = ["cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=Release", *flags]
    subprocess.run(configure, cwd=LLAMA_SRC, check=True, timeout=600)
    build = ["cmake", "--build", "build", "-j2", "--target", *TOOLS]
    subprocess.run(build, cwd=LLAMA_SRC, check=True, timeout=3600)
    return bindir


def matched_flags(model: ModelConfig) -> list[str]:
    """Our engine's attention settings: flash attention as configured, one unified KV buffer."""
    return ["-fa", "on" if model.flash_attn else "off", "-kvu"]


def batched_bench(bindir: Path, gguf: Path, model: ModelConfig, extra: list[str]) -> dict:
    """llama-batched-bench at 16 sequences: its table's row as {column: value}."""
    cmd = [bindir / "llama-batched-bench", "-m", gguf, "-npp", 32, "-ntg", MAX_TOKENS,
           "-npl", CONCURRENCY, "-t", model.threads or os.cpu_count(), "-c", 8192, "-b", 512,
           "-ub", 512, *extra]  # fmt: skip
    out = subprocess.run(
        list(map(str, cmd)), capture_output=True, text=True, timeout=600, check=True
    )
    lines = (out.stdout + out.stderr).splitlines()
    rows = [[c.strip() for c in ln.strip(" |").split("|")] for ln in lines if ln.startswith("|")]
    header = next(r for r in rows if "S_TG t/s" in r)
    return dict(zip(header, map(float, next(r for r in rows if r[0].isdigit())), strict=True))


async def drive_server(base: str, prompts: list[str]) -> dict[str, float]:
    """Every prompt as POST /completion, 16 at a time; tokens as the server counts them."""
    sem = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(300, connect=5)) as client:

        async def one(prompt: str, n: int) -> int:
            body = {"prompt": prompt, "n_predict": n, "temperature": 0, "cache_prompt": False}
            async with sem:
                resp = await client.post("/completion", json=body)
            resp.raise_for_status()
            return int(resp.json()["tokens_predicted"])

        await one(core.SHORT_PROMPT, 4)  # warm-up
        start = time.perf_counter()
        jobs = asyncio.gather(*(one(p, MAX_TOKENS) for p in prompts))
        tokens = sum(await asyncio.wait_for(jobs, PHASE_TIMEOUT_S))
        wall = time.perf_counter() - start
    return dict(completion_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall)


def bench_server(bindir: Path, gguf: Path, model: ModelConfig, prompts: list[str], extra: list[str]) -> dict:  # fmt: skip
    """(b) llama-server on loopback with 16 slots of n_ctx each."""
    port, threads = free_port(), str(model.threads or os.cpu_count())
    cmd = [bindir / "llama-server", "-m", gguf, "-t", threads, "-tb", threads, "-np", CONCURRENCY,
           "-c", CONCURRENCY * model.n_ctx, "--no-webui", "--host", "127.0.0.1", "--port", port,
           *extra]  # fmt: skip
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    with OUT_PATH.with_name("llama-server.log").open("ab") as log:
        proc = subprocess.Popen(list(map(str, cmd)), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: httpx.get(f"{base}/health").status_code == 200, 120, "llama-server", proc
        )
        return asyncio.run(drive_server(base, prompts))
    finally:
        stop_process(proc)


# --- the raw engine (c) ------------------------------------------------------------------------


def engine_run(engine: BatchEngine, prompts: list[str], max_tokens: int) -> dict[str, Any]:
    """Every prompt through the engine, CONCURRENCY client threads taking the next prompt from a
    shared queue. Per generation: when each chunk arrived (seconds from the start)."""
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for prompt in prompts:
        work.put(prompt)
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0)
    times: list[list[float]] = []
    first_text: list[float] = []  # first chunk with text: what a client sees first
    tokens: list[int] = []
    errors: list[BaseException] = []
    start = time.perf_counter()

    def client() -> None:
        while not errors:
            try:
                prompt = work.get_nowait()
            except queue.Empty:
                return
            seen, texts, last = [], [], None
            try:
                for last in engine.submit(GenerationRequest(prompt, sampling=sampling)):
                    seen.append(time.perf_counter() - start)
                    if last.text:
                        texts.append(seen[-1])
            except BaseException as exc:
                errors.append(exc)
                return
            times.append(seen)
            first_text.append((texts or seen)[0])
            tokens.append(last.completion_tokens if last else 0)

    clients = [threading.Thread(target=client, daemon=True) for _ in range(CONCURRENCY)]
    for t in clients:
        t.start()
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    for t in clients:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors or any(t.is_alive() for t in clients):
        raise RuntimeError(f"raw engine run failed: {errors[:1] or 'timed out'}")
    wall = max(ts[-1] for ts in times)
    return dict(completion_tokens=sum(tokens), wall_s=wall, tokens_per_s=sum(tokens) / wall,
                chunk_times=times, first_text_s=first_text)  # fmt: skip


def generation_rate(run: dict[str, Any]) -> dict[str, float]:
    """The decode rate while all sequences generate, comparable with batched-bench's S_TG (ntg
    steps of npl tokens, prompt processing excluded). Rather than 16 x 64 / (wall - time to the
    16th first token), which credits tokens sampled before that and times a tail where early
    finishers have left, count the tokens that arrived between the last sequence's first token
    (all prompts evaluated) and the first sequence's last token (all still generating). With
    all 16 admitted in one step that is 63 steps x 16 tokens."""
    times = run["chunk_times"]
    opens, closes = max(ts[0] for ts in times), min(ts[-1] for ts in times)
    inside = sum(1 for ts in times for t in ts if opens < t <= closes)
    return dict(
        window_s=closes - opens, window_tokens=inside, tokens_per_s=inside / (closes - opens)
    )


def bench_engine(model: ModelConfig, data_dir: Path, prompts: list[str]) -> dict[str, Any]:
    """(c) throughput, the generation rate at 16, single-job TTFT, shared-prefix reuse."""
    engine = BatchEngine(model, data_dir)
    try:
        engine_run(engine, [core.SHORT_PROMPT], 4)  # warm-up
        phase("engine", f"(c) raw engine: {N_JOBS} prompts, {CONCURRENCY} client threads...")
        run = engine_run(engine, prompts, MAX_TOKENS)
        c = {k: run[k] for k in ("completion_tokens", "wall_s", "tokens_per_s")}
        print(f"    {c['completion_tokens']} tokens in {c['wall_s']:.1f}s")
        phase(
            "engine_rate", f"    generation rate: {CONCURRENCY} prompts x {MAX_TOKENS} at once..."
        )
        run = engine_run(engine, prompts[:CONCURRENCY], MAX_TOKENS)
        c["rate16"] = {"tokens_per_s_overall": run["tokens_per_s"], **generation_rate(run)}
        print(f"    {c['rate16']['window_tokens']} tokens in {c['rate16']['window_s']:.2f}s with all {CONCURRENCY} generating ({run['tokens_per_s']:.1f} tokens/s overall)")  # fmt: skip
        phase("engine_ttft", f"    time to first token: {TTFT_RUNS} single jobs...")
        one = [core.SHORT_PROMPT]
        ttft = [engine_run(engine, one, core.SHORT_MAX_TOKENS)["first_text_s"][0] for _ in range(TTFT_RUNS)]  # fmt: skip
        c["ttft_median_ms"] = statistics.median(ttft) * 1000
        c["prefix"] = bench_prefix(engine)
    finally:
        engine.close()
    return c


def bench_prefix(engine: BatchEngine) -> dict[str, Any]:
    """16 prompts sharing SYSTEM_PREFIX, all at once: prefix sharing on, then off."""
    prompts = [f"{SYSTEM_PREFIX}Write a short story about {t}.\n\nOnce upon a time," for t in core.TOPICS]  # fmt: skip
    n_prefix = len(engine.tokenize(GenerationRequest(SYSTEM_PREFIX, SamplingParams())))
    out: dict[str, Any] = {"prefix_tokens": n_prefix, "max_tokens": PREFIX_MAX_TOKENS}
    saved = batch_engine.MIN_SHARED_PREFIX
    for label, min_shared in (("on", saved), ("off", 1 << 30)):
        phase(f"prefix_{label}", f"    shared prefix ({n_prefix} tokens) x 16, sharing {label}...")
        batch_engine.MIN_SHARED_PREFIX = min_shared  # read at each admission
        before = dict(engine.stats)
        try:
            run = engine_run(engine, prompts, PREFIX_MAX_TOKENS)
        finally:
            batch_engine.MIN_SHARED_PREFIX = saved
        out[label] = {k: engine.stats[k] - before[k] for k in engine.stats}
        out[label].update(wall_s=run["wall_s"], last_first_token_s=max(run["first_text_s"]))
        print(f"    {run['wall_s']:.1f}s; prompt tokens evaluated {out[label]['prompt_tokens_evaluated']}, shared {out[label]['prompt_tokens_shared']}")  # fmt: skip
    return out


# --- tokenq end to end (d) ---------------------------------------------------------------------


async def tokenq_ttft_ms(client: httpx.AsyncClient) -> float:
    """POST one short job -> its first token event over SSE; then read on to the end."""
    start, first = time.perf_counter(), None
    resp = await client.post(
        "/v1/jobs", json=core.job_body(core.SHORT_PROMPT, core.SHORT_MAX_TOKENS)
    )
    resp.raise_for_status()
    async with client.stream("GET", f"/v1/jobs/{resp.json()['id']}/events") as events:
        async for line in events.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if first is None and event["type"] == "token" and event["data"]["text"]:
                    first = time.perf_counter()
                if event["type"] in ("done", "error"):
                    break
    if first is None:
        raise RuntimeError("a short job streamed no token")
    return (first - start) * 1000


def inprocess_ttft_ms(llm: Any) -> float:
    """create_completion(stream=True) -> first chunk with text. reset() first: no KV prefix kept
    from the previous call, so the whole prompt is evaluated, as it is in tokenq."""
    llm.reset()
    start, first = time.perf_counter(), None
    kwargs = dict(max_tokens=core.SHORT_MAX_TOKENS, temperature=0, stream=True)
    for chunk in llm.create_completion(core.SHORT_PROMPT, **kwargs):
        if first is None and chunk["choices"][0]["text"]:
            first = time.perf_counter()
    return ((first or time.perf_counter()) - start) * 1000


async def bench_ttft(base: str, llm: Any) -> dict[str, Any]:
    """Pairs, in-process then tokenq, so noise hits both (one warm-up pair first)."""
    inproc, e2e = [], []
    async with core.client_for(base) as client:
        for i in range(TTFT_RUNS + 1):
            ip = inprocess_ttft_ms(llm)
            tq = await asyncio.wait_for(tokenq_ttft_ms(client), 120)
            if i:
                inproc.append(ip)
                e2e.append(tq)
    diffs = [t - p for t, p in zip(e2e, inproc, strict=True)]
    return dict(inprocess_median_ms=statistics.median(inproc), tokenq_median_ms=statistics.median(e2e),
                overhead_median_ms=statistics.median(diffs), overhead_min_ms=min(diffs),
                overhead_max_ms=max(diffs))  # fmt: skip


def bench_stack(settings: Settings, model: ModelConfig, prompts: list[str], llm: Any, profile: bool) -> dict:  # fmt: skip
    """(d) and the TTFT pairs on a private stack; py-spy on the worker during (d) if asked."""
    with tempfile.TemporaryDirectory(prefix="tokenq-bench-") as tmp:
        stack, spy = Stack(log_dir=Path(tmp) / "logs"), None
        try:
            base = core.start_stack(stack, settings, model, Path(tmp))
            print(f"    api at {base}; worker ready after {asyncio.run(core.warm_up(base)):.1f}s")
            if profile:  # --nonblocking: sample without pausing the worker
                pid = next(p.pid for name, p in stack.procs if name.startswith("worker"))
                spy_cmd = [Path(sys.executable).with_name("py-spy"), "record", "-p", pid, "-o", PROFILE_PATH, "-f", "raw", "-d", 600, "--threads", "--nonblocking"]  # fmt: skip
                spy = subprocess.Popen(list(map(str, spy_cmd)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
                time.sleep(1.0)  # attached before the first job
            phase("tokenq", f"(d) tokenq: {N_JOBS} jobs over HTTP, one SSE stream each...")
            d = asyncio.run(core.bench_tokenq(base, prompts))
            print(f"    {d['completion_tokens']} tokens in {d['wall_s']:.1f}s")
            if spy is not None:
                stop_process(spy, signal.SIGINT)  # py-spy writes its file on Ctrl-C
                spy, d["profile"] = None, summarize_profile(PROFILE_PATH)
            phase("ttft", f"time to first token: {TTFT_RUNS} short jobs, paired with in-process...")
            d["ttft"] = asyncio.run(bench_ttft(base, llm))
            return d
        except BaseException:
            core.show_log_tails(stack)
            raise
        finally:
            if spy is not None:
                stop_process(spy, signal.SIGINT)
            stack.stop()


def summarize_profile(path: Path, top: int = 8) -> dict[str, list[tuple[str, float]]]:
    """Share of samples per leaf function (lines merged): the decode thread, and the rest."""
    leaves: dict[str, Counter[str]] = {"tokenq-decode": Counter(), "other": Counter()}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        func, _, where = frames[-1].partition(" (")
        leaf = f"{func} ({where.split(':')[0]})"
        if thread == "tokenq-decode":
            leaves[thread][leaf] += int(count)
        else:
            leaves["other"][f"[{thread}] {leaf}"] += int(count)
    out = {}
    for group, counter in leaves.items():
        total = sum(counter.values()) or 1
        out[group] = [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(top)]
        print(f"    profile, {group} threads ({total} samples), top leaf frames:")
        for frame, pct in out[group]:
            print(f"      {pct:5.1f}%  {frame}")
    return out


# --- report ------------------------------------------------------------------------------------


def get(figures: dict[str, Any], *path: str) -> Any:
    for key in path:
        figures = figures.get(key) if isinstance(figures, dict) else None
    return figures


def report(model: ModelConfig, f: dict[str, Any]) -> None:
    e2e, raw = get(f, "tokenq", "tokens_per_s"), get(f, "engine", "tokens_per_s")
    rate, inproc_ttft = get(f, "engine", "rate16", "tokens_per_s"), get(f, "tokenq", "ttft", "inprocess_median_ms")  # fmt: skip
    server, bb = get(f, "server_matched", "tokens_per_s"), get(f, "bb_matched", "S_TG t/s")
    rows = [  # measurement, ours, peer, peer's figure, target (None: for information), difference?
        ("tokenq e2e (tokens/s)", e2e, "llama-server, matched", server, E2E_VS_SERVER_TARGET, False),
        ("", e2e, "llama-server, defaults", get(f, "server_default", "tokens_per_s"), None, False),
        ("", e2e, "in-process, sequential", get(f, "inprocess", "tokens_per_s"), E2E_VS_INPROCESS_TARGET, False),
        ("", e2e, "raw engine (queue cost)", raw, None, False),
        ("raw engine (tokens/s)", raw, "llama-server, matched", server, None, False),
        ("raw engine gen rate at 16 (t/s)", rate, "batched-bench S_TG, matched", bb, GEN_RATE_TARGET, False),
        ("", rate, "batched-bench S_TG, defaults", get(f, "bb_default", "S_TG t/s"), None, False),
        ("TTFT tokenq (ms, median)", get(f, "tokenq", "ttft", "tokenq_median_ms"), "in-process", inproc_ttft, TTFT_OVERHEAD_TARGET_MS, True),
        ("TTFT raw engine (ms, median)", get(f, "engine", "ttft_median_ms"), "in-process", inproc_ttft, None, True),
        ("shared prefix x16, wall (s)", get(f, "engine", "prefix", "on", "wall_s"), "sharing off", get(f, "engine", "prefix", "off", "wall_s"), None, False),
    ]  # fmt: skip
    print(f"\ntokenq batching benchmark: model {model.alias}, {model.threads} threads, {model.slots} slots, {os.cpu_count()} CPUs; {N_JOBS} prompts x {MAX_TOKENS} tokens, {CONCURRENCY} concurrent, temperature 0")  # fmt: skip
    line = "{:<32} {:>7}  {:<29} {:>7} {:>9} {:>9}  {}"
    print(line.format("measurement", "ours", "peer", "peer", "ratio", "target", "result"))
    num = lambda x: "n/a" if x is None else f"{x:.1f}"  # noqa: E731
    f["verdicts"], measurement = {}, ""
    for name, ours, peer_name, peer, target, diff in rows:
        measurement = name or measurement
        value = None if ours is None or peer is None else (ours - peer if diff else ours / peer)
        cmp = "n/a" if value is None else (f"{value:+.1f} ms" if diff else f"{value:.3f}")
        tgt = result = ""
        if target is not None:
            tgt = f"<= {target:.0f} ms" if diff else f">= {target:.2f}"
            ok = None if value is None else (value <= target if diff else value >= target)
            result = "n/a" if ok is None else core.verdict(ok)
            f["verdicts"][f"{measurement} vs {peer_name}"] = ok
        print(line.format(name, num(ours), peer_name, num(peer), cmp, tgt, result).rstrip())
    print("  ratio = ours / peer (TTFT: ours - peer); matched = our engine's attention settings (-fa as configured, -kvu)")  # fmt: skip
    for label in ("on", "off"):
        p = get(f, "engine", "prefix", label) or {}
        print(f"  shared prefix {label}: prompt tokens evaluated {p.get('prompt_tokens_evaluated')}, shared {p.get('prompt_tokens_shared')}, last first token after {p.get('last_first_token_s', 0):.2f}s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_batching", description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--profile", action="store_true", help=f"py-spy the worker during (d) into {PROFILE_PATH.relative_to(ROOT)}")  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings()
    model = Registry.load(settings.models_config).get(None)
    gguf, prompts = model.gguf.resolve(settings.data_dir), core.workload()
    f: dict[str, Any] = {"at": time.time(), "model": model.alias, "threads": model.threads, "slots": model.slots, "cpus": os.cpu_count(), "loads": LOADS}  # fmt: skip
    f["workload"] = {"jobs": N_JOBS, "max_tokens": MAX_TOKENS, "concurrency": CONCURRENCY}
    failed = []

    def attempt(key: str, fn: Any, *fn_args: Any, show: str | None = None) -> None:
        try:
            f[key] = fn(*fn_args)
        except Exception as exc:  # a peer that fails leaves the others' figures
            print(f"{key} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(key)
        if show and key in f:
            print(f"    {f[key][show]:.1f} {show}")

    print(f"loading {model.alias} in-process (n_ctx {model.n_ctx}, threads {model.threads})...")
    llm = load_llama(model, settings.data_dir)
    try:
        llm.create_completion(core.SHORT_PROMPT, max_tokens=4, temperature=0)  # warm-up
        phase("inprocess", f"(a) in-process: {N_JOBS} prompts, one after another...")
        attempt("inprocess", core.bench_inprocess, llm, prompts, show="tokens_per_s")
        attempt("engine", bench_engine, model, settings.data_dir, prompts)
        attempt("bindir", ensure_llama_tools)
        for label, extra in (("matched", matched_flags(model)), ("default", [])):
            if "bindir" not in f:
                break
            phase(f"bb_{label}", f"llama-batched-bench, {label} settings {' '.join(extra)}...")
            attempt(f"bb_{label}", batched_bench, f["bindir"], gguf, model, extra, show="S_TG t/s")
            phase(f"server_{label}", f"(b) llama-server -np {CONCURRENCY}, {label} settings {' '.join(extra)}...")  # fmt: skip
            attempt(f"server_{label}", bench_server, f["bindir"], gguf, model, prompts, extra, show="tokens_per_s")  # fmt: skip
        print("starting a private stack (redis, worker, api)...")
        attempt("tokenq", bench_stack, settings, model, prompts, llm, args.profile)
    finally:
        llm.close()
    f["bindir"], f["failed"] = str(f.get("bindir")), failed
    report(model, f)
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(json.dumps(f, indent=2) + "\n")
    print(f"\nfigures written to {OUT_PATH.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
