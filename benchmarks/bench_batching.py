"""Batching benchmark: what does continuous batching buy, against llama.cpp's own batching?

bench_core compares tokenq with one-sequence llama-cpp-python; this puts the batching engine next
to peers that batch too. One run, one peer at a time (never two generating at once):

* throughput, 64 prompts x 64 tokens (temperature 0), default model and threads, 16 concurrent:
  (a) llama-cpp-python in-process, one after another; (b) llama-server -np 16, with our engine's
  attention settings (flash attention as configured, a KV stream per sequence: the headline)
  and with its defaults, each driven with and without streaming; (c) the raw BatchEngine
  in-process; (d) tokenq end to end two ways: 64 POST /v1/jobs each followed over its own SSE
  stream (peer: llama-server streaming), and one POST /v1/batches followed over the batch's SSE
  with its results downloaded (peer: llama-server without streaming). Targets: (d) >= 1.1 x (b,
  matched), >= 2.5 x (a).
* generation rate at 16 sequences: the raw engine's decode rate while 16 sequences generate
  against llama-batched-bench's S_TG. Target: >= 90% (matched settings).
* time to first token of one job on an idle system, median of 10: tokenq, paired with in-process
  create_completion(stream=True) (target: <= 15 ms more), and the raw engine.
* shared-prefix reuse: 16 prompts with one ~300-token system prefix, submitted at once to the raw
  engine, prefix sharing on and off (MIN_SHARED_PREFIX patched out of reach).

llama-server and llama-batched-bench are built (once, ~10 minutes on 2 cores) from the llama.cpp
vendored in the sdist of the llama-cpp-python we run, with the Makefile's CMake flags, so only the
batching differs. `--profile` samples the worker with py-spy during (d). Each phase prints the
load average as it starts (other work on the machine makes figures noisy). Prints a table, writes
var/bench/batching.json; a MISS is a finding, not an error (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import httpx

import worker.batch_engine as batch_engine
from benchmarks import bench_core as core
from benchmarks.common import ensure_llama_tools, load_llama, stop_process
from cli.stack import Stack, free_port, wait_until
from jobs.models import SamplingParams
from jobs.registry import ModelConfig, Registry
from jobs.settings import ROOT, Settings
from tokenq.client import aiter_sse, iter_sse
from worker.batch_engine import BatchEngine
from worker.engine import GenerationRequest

N_JOBS, MAX_TOKENS, CONCURRENCY = 64, 64, 16
TTFT_RUNS, PREFIX_MAX_TOKENS = 10, 32
PHASE_TIMEOUT_S = 900.0
E2E_VS_SERVER_TARGET, E2E_VS_INPROCESS_TARGET = 1.10, 2.50  # ratios, at least
GEN_RATE_TARGET = 0.90  # raw engine / llama-batched-bench S_TG, at least
TTFT_OVERHEAD_TARGET_MS = 15.0  # tokenq - in-process, at most
OUT_PATH = ROOT / "var" / "bench" / "batching.json"
PROFILE_PATH = ROOT / "var" / "bench" / "worker-profile.txt"
SYSTEM_PREFIX = (  # ~300 tokens, the same for all 16 prompts of the shared-prefix phase
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
    "from famous books or films. When a story is set long ago, avoid modern objects such as "
    "phones, cars and computers. When a story is set at night, name the light: the moon, lamps or "
    "stars. Prefer verbs to adjectives, and concrete nouns to abstract ones. Each story is between "
    "three hundred and five hundred words long, in paragraphs of two to five sentences.\n\n"
)
LOADS: dict[str, list[float]] = {}  # phase -> load average as it began


def phase(name: str, what: str) -> None:
    LOADS[name] = [round(x, 2) for x in os.getloadavg()]
    print(f"{what}  [load {' '.join(f'{x:.2f}' for x in LOADS[name])}]", flush=True)


def cmdline(*parts: Any) -> list[str]:
    return [str(p) for p in parts]


def matched_flags(model: ModelConfig) -> list[str]:
    """Our engine's attention settings: flash attention as configured, a KV stream per sequence."""
    return ["-fa", "on" if model.flash_attn else "off", "-no-kvu"]


def batched_bench(bindir: Path, gguf: Path, model: ModelConfig, extra: list[str]) -> dict:
    """llama-batched-bench at 16 sequences: its table's row as {column: value}."""
    cmd = cmdline(bindir / "llama-batched-bench", "-m", gguf, "-npp", 32, "-ntg", MAX_TOKENS,
                  "-npl", CONCURRENCY, "-t", model.threads or os.cpu_count(), "-c", 8192,
                  "-b", 512, "-ub", 512, *extra)  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    lines = (out.stdout + out.stderr).splitlines()
    rows = [[c.strip() for c in ln.strip(" |").split("|")] for ln in lines if ln.startswith("|")]
    header = next(r for r in rows if "S_TG t/s" in r)
    return dict(zip(header, map(float, next(r for r in rows if r[0].isdigit())), strict=True))


async def drive_server(base: str, prompts: list[str], stream: bool) -> dict[str, float]:
    """Every prompt as POST /completion, 16 at a time; tokens as the server counts them.
    With `stream`, every token comes back as an SSE event that the client parses (as tokenq's
    per-job streams do); without, one response per prompt."""
    sem = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(300, connect=5)) as client:

        async def one(prompt: str, n: int) -> int:
            body = {"prompt": prompt, "n_predict": n, "temperature": 0, "cache_prompt": False,
                    "stream": stream}  # fmt: skip
            async with sem:
                if not stream:
                    resp = await client.post("/completion", json=body)
                    resp.raise_for_status()
                    return int(resp.json()["tokens_predicted"])
                async with client.stream("POST", "/completion", json=body) as resp:
                    resp.raise_for_status()
                    async for sse in aiter_sse(resp.aiter_bytes()):
                        chunk = sse.json()
                        if chunk.get("stop"):
                            return int(chunk["tokens_predicted"])
            raise RuntimeError("llama-server stream ended without its final chunk")

        await one(core.SHORT_PROMPT, 4)  # warm-up
        start = time.perf_counter()
        jobs = asyncio.gather(*(one(p, MAX_TOKENS) for p in prompts))
        tokens = sum(await asyncio.wait_for(jobs, PHASE_TIMEOUT_S))
        wall = time.perf_counter() - start
    return dict(completion_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall)


def bench_server(bindir: Path, gguf: Path, model: ModelConfig, prompts: list[str], extra: list[str]) -> dict:  # fmt: skip
    """(b) llama-server on loopback, 16 slots of n_ctx tokens each: streamed and not."""
    port, threads = free_port(), model.threads or os.cpu_count()
    cmd = cmdline(bindir / "llama-server", "-m", gguf, "-t", threads, "-tb", threads,
                  "-np", CONCURRENCY, "-c", CONCURRENCY * model.n_ctx, "--no-webui",
                  "--host", "127.0.0.1", "--port", port, *extra)  # fmt: skip
    with OUT_PATH.with_name("llama-server.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        ready = lambda: httpx.get(f"{base}/health").status_code == 200  # noqa: E731
        wait_until(ready, 120, "llama-server", proc)
        figures = asyncio.run(drive_server(base, prompts, stream=False))
        figures["stream"] = asyncio.run(drive_server(base, prompts, stream=True))
        return figures
    finally:
        stop_process(proc)


def engine_run(engine: BatchEngine, prompts: list[str], max_tokens: int) -> dict[str, Any]:
    """Every prompt through the engine, CONCURRENCY client threads taking the next prompt from a
    shared queue. Per generation: when each of its chunks arrived (seconds from the start)."""
    work = deque(prompts)  # popleft is atomic: each client takes the next prompt
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0)
    times: list[list[float]] = []
    tokens: list[int] = []
    errors: list[BaseException] = []
    start = time.perf_counter()

    def client() -> None:
        while not errors:
            try:
                prompt = work.popleft()
            except IndexError:
                return
            seen, last = [], None
            try:
                for chunk in engine.submit(GenerationRequest(prompt, sampling=sampling)):
                    seen.append(time.perf_counter() - start)
                    last = chunk
            except BaseException as exc:
                errors.append(exc)
                return
            times.append(seen)
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
                chunk_times=times)  # fmt: skip


def generation_rate(run: dict[str, Any]) -> dict[str, float]:
    """The decode rate while all sequences generate, comparable with batched-bench's S_TG (ntg
    steps of npl tokens each, prompt processing excluded). Rather than 16 x 64 / (wall - time to
    the 16th first token), which credits tokens sampled before that instant and times a tail in
    which early finishers have left, count the tokens that arrived between the last sequence's
    first token (all prompts evaluated) and the first sequence's last token (all still
    generating). With the 16 admitted in one step that is 63 steps x 16 tokens."""
    times = run["chunk_times"]
    opens, closes = max(ts[0] for ts in times), min(ts[-1] for ts in times)
    inside = sum(1 for ts in times for t in ts if opens < t <= closes)
    return dict(window_s=closes - opens, window_tokens=inside, tokens_per_s=inside / (closes - opens))  # fmt: skip


def engine_ttft_ms(engine: BatchEngine) -> float:
    """Submit one short request -> its first chunk with text; then read on to the end."""
    sampling = SamplingParams(max_tokens=core.SHORT_MAX_TOKENS, temperature=0)
    start, first = time.perf_counter(), None
    for chunk in engine.submit(GenerationRequest(core.SHORT_PROMPT, sampling=sampling)):
        if first is None and chunk.text:
            first = time.perf_counter()
    return ((first or time.perf_counter()) - start) * 1000


def inprocess_ttft_ms(llm: Any) -> float:
    """create_completion(stream=True) -> first chunk with text. reset() first: no KV prefix kept
    from the previous call, so the whole prompt is evaluated, as the engine does."""
    llm.reset()
    start, first = time.perf_counter(), None
    kwargs = dict(max_tokens=core.SHORT_MAX_TOKENS, temperature=0, stream=True)
    for chunk in llm.create_completion(core.SHORT_PROMPT, **kwargs):
        if first is None and chunk["choices"][0]["text"]:
            first = time.perf_counter()
    return ((first or time.perf_counter()) - start) * 1000


def bench_engine(model: ModelConfig, data_dir: Path, prompts: list[str]) -> dict[str, Any]:
    """(c) throughput, the generation rate at 16, single-job TTFT, shared-prefix reuse. Runs
    before llama-cpp-python decodes in this process: after that, libgomp manages more OpenMP
    threads than there are CPUs, stops spin-waiting at barriers, and the engine decodes ~25%
    slower (measured; not with OMP_WAIT_POLICY=active). The worker has its decode thread only."""
    engine = BatchEngine(model, data_dir)
    try:
        engine_run(engine, [core.SHORT_PROMPT], 4)  # warm-up
        phase("engine", f"(c) raw engine: {N_JOBS} prompts, {CONCURRENCY} client threads...")
        run = engine_run(engine, prompts, MAX_TOKENS)
        c = {k: run[k] for k in ("completion_tokens", "wall_s", "tokens_per_s")}
        print(f"    {c['completion_tokens']} tokens in {c['wall_s']:.1f}s")
        phase("engine_rate", f"    generation rate: {CONCURRENCY} x {MAX_TOKENS} tokens at once...")
        run = engine_run(engine, prompts[:CONCURRENCY], MAX_TOKENS)
        c["rate16"] = {"tokens_per_s_overall": run["tokens_per_s"], **generation_rate(run)}
        print(f"    {c['rate16']['window_tokens']} tokens in {c['rate16']['window_s']:.2f}s with all {CONCURRENCY} generating; {run['tokens_per_s']:.1f} tokens/s overall")  # fmt: skip
        phase("engine_ttft", f"    time to first token: {TTFT_RUNS} single jobs...")
        ttft = [engine_ttft_ms(engine) for _ in range(TTFT_RUNS + 1)][1:]  # and a warm-up
        c["ttft"] = {"median_ms": statistics.median(ttft), "min_ms": min(ttft), "max_ms": max(ttft)}
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
        out[label].update(wall_s=run["wall_s"], last_first_token_s=max(t[0] for t in run["chunk_times"]))  # fmt: skip
        print(f"    {run['wall_s']:.1f}s; prompt tokens evaluated {out[label]['prompt_tokens_evaluated']}, shared {out[label]['prompt_tokens_shared']}")  # fmt: skip
    return out


def tokenq_ttft_ms(client: httpx.Client) -> float:
    """POST one short job -> its first token event over SSE; then read on to the end."""
    start, first = time.perf_counter(), None
    resp = client.post("/v1/jobs", json=core.job_body(core.SHORT_PROMPT, core.SHORT_MAX_TOKENS))
    resp.raise_for_status()
    with client.stream("GET", f"/v1/jobs/{resp.json()['id']}/events") as events:
        for sse in iter_sse(events.iter_bytes()):
            event = sse.json()
            if first is None and event.get("type") == "token" and event["data"]["text"]:
                first = time.perf_counter()
            if event.get("type") in ("done", "error"):
                break
    if first is None:
        raise RuntimeError("a short job streamed no token")
    return (first - start) * 1000


def paired_ttft(llm: Any, client: httpx.Client) -> dict[str, float]:
    """Pairs, in-process then tokenq, so machine noise hits both (and a warm-up pair first)."""
    pairs = [(inprocess_ttft_ms(llm), tokenq_ttft_ms(client)) for _ in range(TTFT_RUNS + 1)][1:]
    diffs = [b - a for a, b in pairs]
    return dict(median_ms=statistics.median(b for _, b in pairs),
                inprocess_median_ms=statistics.median(a for a, _ in pairs),
                overhead_median_ms=statistics.median(diffs), overhead_min_ms=min(diffs),
                overhead_max_ms=max(diffs))  # fmt: skip


async def bench_tokenq_bulk(base: str, prompts: list[str]) -> dict[str, float]:
    """(d, bulk) The jobs as one POST /v1/batches; the batch's SSE (one event per finished job)
    until it is done; then its results JSONL. Tokens are still streamed into Redis per job."""
    async with core.client_for(base) as client:
        start = time.perf_counter()
        jobs = [core.job_body(p, MAX_TOKENS) for p in prompts]
        batch = (await client.post("/v1/batches", json={"jobs": jobs})).raise_for_status().json()
        async with client.stream("GET", batch["events_url"]) as events:
            async for sse in aiter_sse(events.aiter_bytes()):
                if sse.event == "done":
                    break
        results = (await client.get(batch["results_url"])).raise_for_status().text
        wall = time.perf_counter() - start
    tokens = sum(
        json.loads(x)["response"]["usage"]["completion_tokens"] for x in results.splitlines()
    )
    return dict(completion_tokens=tokens, wall_s=wall, tokens_per_s=tokens / wall)


def bench_stack(settings: Settings, model: ModelConfig, prompts: list[str], llm: Any, profile: bool) -> dict:  # fmt: skip
    """(d) and the TTFT pairs on a private stack; py-spy on the worker during (d) if asked."""
    with tempfile.TemporaryDirectory(prefix="tokenq-bench-") as tmp:
        stack, spy = Stack(log_dir=Path(tmp) / "logs"), None
        try:
            base = core.start_stack(stack, settings, model, Path(tmp))
            print(f"    api at {base}; worker ready after {asyncio.run(core.warm_up(base)):.1f}s")
            if profile:  # --nonblocking: sample without pausing the worker
                pid = next(p.pid for name, p in stack.procs if name.startswith("worker"))
                spy_cmd = cmdline(Path(sys.executable).with_name("py-spy"), "record", "-p", pid, "-o", PROFILE_PATH, "-f", "raw", "-d", 600, "--threads", "--nonblocking")  # fmt: skip
                spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
                time.sleep(1.0)  # attached before the first job
            phase("tokenq", f"(d) tokenq: {N_JOBS} jobs over HTTP, one SSE stream each...")
            d = asyncio.run(core.bench_tokenq(base, prompts))
            print(f"    {d['completion_tokens']} tokens in {d['wall_s']:.1f}s")
            phase("tokenq_bulk", f"(d) tokenq bulk: one batch of {N_JOBS}, batch SSE, results...")
            d["bulk"] = asyncio.run(bench_tokenq_bulk(base, prompts))
            print(f"    {d['bulk']['completion_tokens']} tokens in {d['bulk']['wall_s']:.1f}s")
            if spy is not None:
                stop_process(spy, signal.SIGINT)  # py-spy writes its file on Ctrl-C
                spy, d["profile"] = None, summarize_profile(PROFILE_PATH)
            phase("tokenq_ttft", f"    time to first token: {TTFT_RUNS} short jobs, paired...")
            with httpx.Client(base_url=base, timeout=httpx.Timeout(120, connect=5)) as client:
                d["ttft"] = paired_ttft(llm, client)
            return d
        except BaseException:
            core.show_log_tails(stack)
            raise
        finally:
            if spy is not None:
                stop_process(spy, signal.SIGINT)
            stack.stop()


def summarize_profile(path: Path, top: int = 8) -> dict[str, list[tuple[str, float]]]:
    """Share of samples per leaf frame: the decode thread, then the rest (task threads merged)."""
    leaves: dict[str, Counter[str]] = {"tokenq-decode": Counter(), "other": Counter()}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = re.sub(r"_\d+$", "", frames[0].split(": ", 1)[-1])  # pool threads as one
        if thread == "tokenq-decode":
            leaves[thread][frames[-1]] += int(count)
        else:
            leaves["other"][f"[{thread}] {frames[-1]}"] += int(count)
    out = {}
    for group, counter in leaves.items():
        total = sum(counter.values()) or 1
        out[group] = [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(top)]
        print(f"    profile, {group} ({total} samples), top leaf frames:")
        for frame, pct in out[group]:
            print(f"      {pct:5.1f}%  {frame}")
    return out


def get(figures: Any, *path: str) -> Any:
    for key in path:
        figures = figures.get(key) if isinstance(figures, dict) else None
    return figures


def report(model: ModelConfig, f: dict[str, Any]) -> None:
    e2e, raw, rate = get(f, "tokenq", "tokens_per_s"), get(f, "engine", "tokens_per_s"), get(f, "engine", "rate16", "tokens_per_s")  # fmt: skip
    server, ttft, ettft = get(f, "server_matched", "tokens_per_s"), get(f, "tokenq", "ttft") or {}, get(f, "engine", "ttft") or {}  # fmt: skip
    bulk, server_stream = get(f, "tokenq", "bulk", "tokens_per_s"), get(f, "server_matched", "stream", "tokens_per_s")  # fmt: skip
    rows = [  # measurement, ours, peer, its figure, target (None: for information), diff (TTFT)
        ("tokenq e2e, SSE per job (t/s)", e2e, "llama-server stream, matched", server_stream, E2E_VS_SERVER_TARGET, None),
        ("", e2e, "llama-server, matched", server, None, None),
        ("", e2e, "in-process, sequential", get(f, "inprocess", "tokens_per_s"), E2E_VS_INPROCESS_TARGET, None),
        ("", e2e, "raw engine (queue cost)", raw, None, None),
        ("tokenq e2e, bulk batch (t/s)", bulk, "llama-server, matched", server, E2E_VS_SERVER_TARGET, None),
        ("", bulk, "llama-server, defaults", get(f, "server_default", "tokens_per_s"), None, None),
        ("", bulk, "in-process, sequential", get(f, "inprocess", "tokens_per_s"), E2E_VS_INPROCESS_TARGET, None),
        ("raw engine (tokens/s)", raw, "llama-server, matched", server, None, None),
        ("raw engine gen rate at 16 (t/s)", rate, "batched-bench S_TG, matched", get(f, "bb_matched", "S_TG t/s"), GEN_RATE_TARGET, None),
        ("", rate, "batched-bench S_TG, defaults", get(f, "bb_default", "S_TG t/s"), None, None),
        ("TTFT tokenq (ms, median)", ttft.get("median_ms"), "in-process", ttft.get("inprocess_median_ms"), TTFT_OVERHEAD_TARGET_MS, ttft.get("overhead_median_ms")),
        ("TTFT raw engine (ms, median)", ettft.get("median_ms"), "in-process (unpaired)", ttft.get("inprocess_median_ms"), None, None),
        ("shared prefix x16, wall (s)", get(f, "engine", "prefix", "on", "wall_s"), "sharing off", get(f, "engine", "prefix", "off", "wall_s"), None, None),
    ]  # fmt: skip
    print(f"\ntokenq batching benchmark: model {model.alias}, {model.threads} threads, {model.slots} slots, {os.cpu_count()} CPUs; {N_JOBS} prompts x {MAX_TOKENS} tokens, {CONCURRENCY} concurrent, temperature 0")  # fmt: skip
    line = "{:<32} {:>7}  {:<29} {:>7} {:>9} {:>9}  {}"
    print(line.format("measurement", "ours", "peer", "peer", "ratio", "target", "result"))
    num = lambda x: "n/a" if x is None else f"{x:.1f}"  # noqa: E731
    f["verdicts"], measurement = {}, ""
    for name, ours, peer_name, peer, target, diff in rows:
        measurement = name or measurement
        is_diff = "TTFT" in measurement
        value = None if ours is None or peer is None else (ours - peer if is_diff else ours / peer)
        value = diff if diff is not None else value
        cmp = "n/a" if value is None else (f"{value:+.1f} ms" if is_diff else f"{value:.3f}")
        tgt = result = ""
        if target is not None:
            tgt = f"<= {target:.0f} ms" if is_diff else f">= {target:.2f}"
            ok = None if value is None else (value <= target if is_diff else value >= target)
            result = "n/a" if ok is None else core.verdict(ok)
            f["verdicts"][f"{measurement} vs {peer_name}"] = ok
        print(line.format(name, num(ours), peer_name, num(peer), cmp, tgt, result).rstrip())
    print("  ratio = ours / peer; TTFT: ours - peer (tokenq: median of paired differences). matched = our engine's attention settings (-fa as configured, -no-kvu); stream = the client reads every token as an SSE event")  # fmt: skip
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
    f: dict[str, Any] = {"at": time.time(), "model": model.alias, "threads": model.threads,
                         "slots": model.slots, "cpus": os.cpu_count(), "loads": LOADS,
                         "workload": {"jobs": N_JOBS, "max_tokens": MAX_TOKENS, "concurrency": CONCURRENCY}}  # fmt: skip
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)  # also for llama-server.log
    failed = []

    def attempt(key: str, fn: Any, *fn_args: Any, show: str | None = None) -> None:
        try:
            f[key] = fn(*fn_args)
        except Exception as exc:  # a peer that fails leaves the others' figures
            print(f"{key} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(key)
        if show and key in f:
            print(f"    {f[key][show]:.1f} {show}")

    attempt("engine", bench_engine, model, settings.data_dir, prompts)  # first: see its docstring
    print(f"loading {model.alias} in-process (n_ctx {model.n_ctx}, threads {model.threads})...")
    llm = load_llama(model, settings.data_dir)
    try:
        llm.create_completion(core.SHORT_PROMPT, max_tokens=4, temperature=0)  # warm-up
        phase("inprocess", f"(a) in-process: {N_JOBS} prompts, one after another...")
        attempt("inprocess", core.bench_inprocess, llm, prompts, show="tokens_per_s")
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
    OUT_PATH.write_text(json.dumps(f, indent=2) + "\n")
    print(f"\nfigures written to {OUT_PATH.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
