"""`tokenq`: run the whole stack on one machine, submit prompts, tail a job, show status."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.stack import Stack, StackError, redis_durability_problems, redis_port, redis_reachable

app = typer.Typer(help="tokenq: batch completion service (FastAPI + Celery + Redis + llama.cpp).")
err = Console(stderr=True)

URL = Annotated[str, typer.Option(envvar="TOKENQ_URL", help="API base URL.")]
KEY = Annotated[str | None, typer.Option(envvar="TOKENQ_API_KEY", help="API key (Bearer).")]


def _client(url: str, api_key: str | None, timeout: float | None = 60) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=timeout)


def _check(response: httpx.Response) -> dict:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        err.print(f"[red]error {response.status_code}:[/red] {message}")
        raise typer.Exit(1)
    return response.json()


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
    """Start Redis (unless TOKENQ_REDIS_URL answers), one worker per model, and the API."""
    from jobs.registry import Registry
    from jobs.settings import Settings

    settings = Settings()
    if not settings.api_keys and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            "[red]refusing to serve without API keys on a non-loopback address[/red] (set TOKENQ_API_KEYS)"
        )
        raise typer.Exit(2)
    registry = Registry.load(settings.models_config)
    aliases = [m.strip() for m in models.split(",")] if models else [registry.default]
    for alias in aliases:
        registry.get(alias)
    stack = Stack(log_dir=settings.data_dir / "logs")
    try:
        if redis_reachable(settings.redis_url):
            err.print(f"using Redis at {settings.redis_url}")
            for problem in redis_durability_problems(settings.redis_url):
                err.print(f"[yellow]warning:[/yellow] {problem}")
            stack.env["TOKENQ_REDIS_URL"] = settings.redis_url
        else:
            url = stack.start_redis(redis_port(settings.redis_url), settings.data_dir / "redis")
            err.print(f"started Redis at {url} (data in {settings.data_dir / 'redis'})")
        for alias in aliases:
            stack.start_worker(alias, quiet=False)
            err.print(f"started worker for model {alias!r}")
        base = stack.start_api(host, port, quiet=False)
        err.print(
            f"[green]tokenq is up:[/green] {base}  (docs: {base}/docs; Ctrl-C stops everything)"
        )
        signal.signal(signal.SIGTERM, _interrupt)
        while all(p.poll() is None for _, p in stack.procs):
            time.sleep(0.5)
        dead = [name for name, p in stack.procs if p.poll() is not None]
        err.print(f"[red]{', '.join(dead)} exited; stopping[/red]")
        raise typer.Exit(1)
    except StackError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        err.print("stopping...")
    finally:
        stack.stop()


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
    headers = {"Content-Type": "application/jsonl"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    with _client(url, api_key, timeout=300) as client:
        batch = _check(
            client.post(
                "/v1/batches",
                content=file.read_bytes(),
                headers=headers,
                params={"model": model} if model else None,
            )
        )
        err.print(f"batch {batch['id']}: {batch['request_counts']['total']} jobs queued")
        if not (wait or output):
            typer.echo(batch["id"])
            return
        batch = _wait_batch(client, batch)
        counts = batch["request_counts"]
        err.print(
            f"batch {batch['status']}: {counts['completed']} succeeded, {counts['failed']} failed, {counts.get('cancelled', 0)} cancelled"
        )
        if output:
            with (
                output.open("wb") as out,
                client.stream("GET", f"/v1/batches/{batch['id']}/results") as r,
            ):
                for chunk in r.iter_bytes():
                    out.write(chunk)
            err.print(f"results written to {output}")
        typer.echo(batch["id"])


def _wait_batch(client: httpx.Client, batch: dict) -> dict:
    done_statuses = {"completed", "cancelled", "failed", "expired"}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(batch["id"], total=batch["request_counts"]["total"])
        while batch["status"] not in done_statuses:
            time.sleep(0.5)
            batch = _check(client.get(f"/v1/batches/{batch['id']}"))
            c = batch["request_counts"]
            progress.update(
                task,
                completed=c["completed"]
                + c["failed"]
                + c.get("cancelled", 0)
                + c.get("expired", 0),
            )
    return batch


@app.command()
def tail(job_id: str, url: URL = "http://127.0.0.1:8000", api_key: KEY = None) -> None:
    """Print a job's tokens as they stream (from the start; reconnects resume where they left)."""
    last = 0
    with _client(url, api_key, timeout=None) as client:
        while True:
            try:
                headers = {"Last-Event-ID": str(last)} if last else {}
                with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
                    if response.status_code >= 400:
                        response.read()
                        _check(response)
                    for event in _sse_events(response.iter_lines()):
                        last = event["seq"]
                        if event["type"] == "token":
                            sys.stdout.write(event["data"]["text"])
                            sys.stdout.flush()
                        elif event["type"] == "reset":
                            err.print(
                                f"\n[yellow]-- worker lost; attempt {event['data']['attempt']} restarts --[/yellow]"
                            )
                        elif event["type"] in ("done", "error"):
                            result = event["data"]["result"]
                            sys.stdout.write("\n")
                            err.print(
                                f"[{event['data']['status']}] finish_reason={result.get('finish_reason')}"
                                + (f" error={result['error']}" if result.get("error") else "")
                            )
                            return
                return
            except httpx.TransportError:
                err.print("[yellow]connection lost; resuming[/yellow]")
                time.sleep(1)


def _sse_events(lines):  # type: ignore[no-untyped-def]
    """tokenq's SSE `data:` lines carry the whole event as JSON."""
    for line in lines:
        if line.startswith("data:"):
            yield json.loads(line[5:].strip())


@app.command()
def status(id: str, url: URL = "http://127.0.0.1:8000", api_key: KEY = None) -> None:
    """Show a job (job_...) or a batch (batch_...) as JSON."""
    kind = "batches" if id.startswith("batch_") else "jobs"
    with _client(url, api_key) as client:
        typer.echo(json.dumps(_check(client.get(f"/v1/{kind}/{id}")), indent=2))


if __name__ == "__main__":
    app()
