"""`tokenq`: run the whole stack on one machine, submit prompts, tail a job, show status."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.stack import Stack, StackError, redis_durability_problems, redis_port, redis_reachable
from tokenq.client import BATCH_FINAL_STATUSES, FINAL_EVENTS, AsyncClient, TokenqClientError

app = typer.Typer(help="tokenq: batch completion service (FastAPI + Celery + Redis + llama.cpp).")
err = Console(stderr=True)

URL = Annotated[str, typer.Option(envvar="TOKENQ_URL", help="API base URL.")]
KEY = Annotated[str | None, typer.Option(envvar="TOKENQ_API_KEY", help="API key (Bearer).")]
T = TypeVar("T")


def _call(work: Coroutine[Any, Any, T]) -> T:
    """Run one command's calls on tokenq's client; an error is printed, not raised (exit 1)."""
    try:
        return asyncio.run(work)
    except TokenqClientError as exc:
        where = f"error {exc.status}:" if exc.status is not None else "error:"
        err.print(f"[red]{where}[/red] {escape(exc.message)}")
        raise typer.Exit(1) from exc


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def up(
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated aliases to serve (default: the default model)."),
    ] = None,
    host: Annotated[str, typer.Option(envvar="TOKENQ_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TOKENQ_PORT")] = 8000,
) -> None:
    """Start Redis (unless TOKENQ_REDIS_URL answers), one worker per model, and the API.

    Its children die with it however it ends; a failure to start is named in its last line.
    """
    import yaml
    from pydantic import ValidationError

    from cli.ports import port_holder, port_in_use
    from cli.stack import MODEL_LOAD_TIMEOUT_S, StackLock
    from jobs.errors import TokenqError
    from jobs.registry import Registry
    from jobs.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join(filter(None, ("TOKENQ_" + "_".join(map(str, e["loc"])).upper(), e["msg"])))
            if e["loc"]
            else e["msg"]
            for e in exc.errors()
        )
        err.print(
            f"[red]tokenq up failed:[/red] invalid settings: {escape(problems)}", soft_wrap=True
        )
        raise typer.Exit(2) from exc
    if not settings.api_keys and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            "[red]refusing to serve without API keys on a non-loopback address[/red] (set TOKENQ_API_KEYS)"
        )
        raise typer.Exit(2)
    try:
        registry = Registry.load(settings.models_config)
        aliases = [m.strip() for m in models.split(",")] if models else [registry.default]
        for alias in aliases:
            registry.get(alias)
    except (OSError, ValueError, yaml.YAMLError, TokenqError) as exc:
        err.print(
            f"[red]tokenq up failed:[/red] models config {settings.models_config}: {escape(str(exc))}",
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)  # stop the stack as Ctrl-C does
    stack = Stack(log_dir=settings.data_dir / "logs")
    lock = StackLock(settings.data_dir)
    failure = None
    interrupted = False
    try:
        lock.acquire(api=f"http://{host}:{port}")
        try:
            api_taken = port_in_use(host, port)
        except OSError as exc:
            raise StackError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        if api_taken:
            raise StackError(
                f"port {port} (the API) is in use {port_holder(host, port)}; "
                "free it or set TOKENQ_PORT"
            )
        if redis_reachable(settings.redis_url):
            err.print(f"using Redis at {settings.redis_url}")
            for problem in redis_durability_problems(settings.redis_url):
                err.print(f"[yellow]warning:[/yellow] {problem}")
            stack.env["TOKENQ_REDIS_URL"] = settings.redis_url
        else:
            redis_at = redis_port(settings.redis_url)
            if port_in_use("127.0.0.1", redis_at):
                raise StackError(
                    f"port {redis_at} (Redis) is in use {port_holder('127.0.0.1', redis_at)}, "
                    f"but no Redis answers at {settings.redis_url}; free it or set TOKENQ_REDIS_URL"
                )
            url = stack.start_redis(redis_at, settings.data_dir / "redis")
            err.print(f"started Redis at {url} (data in {settings.data_dir / 'redis'})")
        lock.update(redis=stack.env["TOKENQ_REDIS_URL"])
        for alias in aliases:
            stack.start_worker(alias, quiet=False)
            err.print(f"started worker for model {alias!r}")
        base = stack.start_api(host, port, quiet=False)
        for alias in aliases:
            stack.wait_worker(alias, MODEL_LOAD_TIMEOUT_S)
        err.print(
            f"[green]tokenq is up:[/green] {base}  (docs: {base}/docs; Ctrl-C stops everything)",
            soft_wrap=True,
        )
        while (broken := stack.exited()) is None:
            time.sleep(0.5)
        failure = f"tokenq stopped: {broken}"
    except StackError as exc:
        failure = f"tokenq up failed: {exc}"
    except KeyboardInterrupt:
        err.print("stopping...")
        interrupted = True
    finally:
        stack.stop()
        lock.release()
    if interrupted:
        err.print("stopped")
    if failure is not None:
        # Last, after the children's own shutdown lines: the one line that says why.
        err.print(f"[red]{escape(failure)}[/red]", soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def submit(
    file: Annotated[
        Path, typer.Argument(help="JSONL, one job object per line (prompt/messages/template...).")
    ],
    url: URL = "http://127.0.0.1:8000",
    api_key: KEY = None,
    model: Annotated[str | None, typer.Option(help="Model alias for jobs that name none.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the batch, with a progress bar.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write results JSONL here (implies --wait)."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Resubmitting with the same key returns the same batch.")
    ] = None,
) -> None:
    """Submit a JSONL file as one batch; print its id (and with --wait, wait and save results)."""
    data = file.read_bytes()

    async def run() -> None:
        async with AsyncClient(url, api_key, timeout=300) as tq:
            batch = await tq.submit_jsonl(data, model=model, idempotency_key=idempotency_key)
            err.print(f"batch {batch['id']}: {batch['request_counts']['total']} jobs queued")
            if not (wait or output):
                typer.echo(batch["id"])
                return
            batch = await _wait_batch(tq, batch)
            counts = batch["request_counts"]
            err.print(
                f"batch {batch['status']}: {counts['completed']} succeeded, {counts['failed']} failed, {counts.get('cancelled', 0)} cancelled"
            )
            if output:
                # Each line written as the API wrote it: json.dumps of the same object.
                results = await tq.results(batch["id"])
                output.write_bytes("".join(json.dumps(r) + "\n" for r in results).encode())
                err.print(f"results written to {output}")
            typer.echo(batch["id"])

    _call(run())


async def _wait_batch(tq: AsyncClient, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch once final, with a progress bar that follows its event stream."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(batch["id"], total=batch["request_counts"]["total"])
        if batch["status"] in BATCH_FINAL_STATUSES:
            return batch
        async for event in tq.batch_events(batch["id"]):
            if counts := event["data"].get("counts"):
                ended = counts["succeeded"] + counts["failed"] + counts["cancelled"]
                progress.update(task, completed=ended + counts["expired"])
    return await tq.batch(batch["id"])


@app.command()
def tail(job_id: str, url: URL = "http://127.0.0.1:8000", api_key: KEY = None) -> None:
    """Print a job's tokens as they stream (from the start; reconnects resume where they left)."""

    async def run() -> None:
        async with AsyncClient(url, api_key) as tq:
            async for event in tq.events(job_id):
                if event["type"] == "token":
                    sys.stdout.write(event["data"]["text"])
                    sys.stdout.flush()
                elif event["type"] == "queued":
                    note = event["data"]
                    eta = note["estimated_start_at"]
                    starts = f", starts in ~{max(eta - time.time(), 0):.0f}s" if eta else ""
                    err.print(f"[dim]-- position {note['position']} in line{starts} --[/dim]")
                elif event["type"] == "reset":
                    err.print(
                        f"\n[yellow]-- worker lost; attempt {event['data']['attempt']} restarts --[/yellow]"
                    )
                elif event["type"] in FINAL_EVENTS:
                    result = event["data"]["result"]
                    sys.stdout.write("\n")
                    err.print(
                        f"[{event['data']['status']}] finish_reason={result.get('finish_reason')}"
                        + (f" error={result['error']}" if result.get("error") else "")
                    )

    _call(run())


@app.command()
def status(id: str, url: URL = "http://127.0.0.1:8000", api_key: KEY = None) -> None:
    """Show a job (job_...) or a batch (batch_...) as JSON."""

    async def run() -> dict[str, Any]:
        async with AsyncClient(url, api_key) as tq:
            return await (tq.batch(id) if id.startswith("batch_") else tq.job(id))

    typer.echo(json.dumps(_call(run()), indent=2))


@app.command()
def top(
    url: URL = "http://127.0.0.1:8000",
    api_key: KEY = None,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
    once: Annotated[
        bool, typer.Option(help="Print two scrapes' view (`interval` apart) and exit.")
    ] = False,
) -> None:
    """A live view of queues, workers, slots and throughput, from the API's /metrics."""
    import httpx
    from rich.live import Live

    from cli.top import Scrape, parse, render

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out = Console()

    def scrape(http: httpx.Client) -> Scrape:
        try:
            response = http.get("/metrics")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            err.print(f"[red]error:[/red] GET {url}/metrics: {escape(str(exc))}")
            raise typer.Exit(1) from exc
        return parse(response.text)

    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        before, now = None, scrape(http)
        if once:
            time.sleep(interval)
            out.print(render(scrape(http), now, url))
            return
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            with Live(render(now, None, url), console=out, refresh_per_second=4) as live:
                while True:
                    time.sleep(interval)
                    before, now = now, scrape(http)
                    live.update(render(now, before, url))
        except KeyboardInterrupt:
            return


if __name__ == "__main__":
    app()
