"""Seeing inside, on the real stack: GET /metrics counts every job where it happens, a queued
job says where it stands in line (and its stream says when that changes), a batch says when it
should be done, and `tokenq top` shows the queues and workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cli.stack import Stack, free_port
from jobs.settings import ROOT
from tests.conftest import ALICE_KEY, submit, wait_for, wait_job
from tokenq.client import iter_sse


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics: (name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _cancel(client: httpx.Client, *job_ids: str) -> None:
    for job_id in job_ids:
        client.post(f"/v1/jobs/{job_id}/cancel")


def test_metrics_count_every_job_its_tokens_and_latencies(client: httpx.Client) -> None:
    # Given the fake model's worker with nothing to do
    wait_for(
        lambda: (
            sample(scrape(client), "tokenq_jobs_running", model="fake") == 0
            and sample(
                scrape(client), "tokenq_queue_depth", model="fake", lane="interactive:normal"
            )
            == 0
        ),
        what="the fake model to be idle",
    )
    before = scrape(client)

    # When five jobs run to the end
    jobs = [submit(client, model="fake", prompt=f"metrics {i}", max_tokens=6) for i in range(5)]
    done = [wait_job(client, job["id"]) for job in jobs]
    after = scrape(client)

    # Then each was counted once where it happened: accepted, finished, its tokens, its times
    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("tokenq_jobs_submitted_total", model="fake", lane="interactive") == 5
    assert (
        delta("tokenq_jobs_finished_total", model="fake", lane="interactive", status="succeeded")
        == 5
    )
    assert delta("tokenq_completion_tokens_total", model="fake") == sum(
        job["usage"]["completion_tokens"] for job in done
    )
    assert delta("tokenq_prompt_tokens_total", model="fake") == sum(
        job["usage"]["prompt_tokens"] for job in done
    )
    for histogram in (
        "tokenq_queue_wait_seconds",
        "tokenq_time_to_first_token_seconds",
        "tokenq_request_duration_seconds",
        "tokenq_generation_tokens_per_second",
    ):
        assert delta(f"{histogram}_count", model="fake") == 5, histogram
        assert delta(f"{histogram}_bucket", model="fake", le="+Inf") == 5, histogram
        assert delta(f"{histogram}_sum", model="fake") > 0, histogram
    durations = [job["finished_at"] - job["created_at"] for job in done]
    # (finished_at is stamped by the worker, the observation by finish.lua: ms apart)
    assert delta("tokenq_request_duration_seconds_sum", model="fake") == pytest.approx(
        sum(durations), abs=0.25
    )
    # and what is true now: the live worker, its slots, nothing left waiting
    assert sample(after, "tokenq_workers_live", model="fake") >= 1
    fake_slots = [v for (n, labels), v in after.items() if n == "tokenq_worker_slots"
                  and ("model", "fake") in labels]  # fmt: skip
    assert fake_slots and all(v == 8 for v in fake_slots)
    assert sample(after, "tokenq_queue_depth", model="fake", lane="interactive:normal") == 0


def test_a_queued_job_knows_its_place_and_its_stream_sees_it_move(
    client: httpx.Client, base_url: str
) -> None:
    # Given (model `idle` has no worker) a batch, then two single jobs of the same tenant
    batch = client.post(
        "/v1/batches",
        json={"model": "idle", "jobs": [{"prompt": f"b{i}", "max_tokens": 1} for i in range(3)]},
    )
    assert batch.status_code == 202, batch.text
    first = submit(client, model="idle", prompt="first", max_tokens=1)
    second = submit(client, model="idle", prompt="second", max_tokens=1)
    try:
        # Then each knows its place: interactive work goes before the batch, in order
        assert first["queue"] is not None and second["queue"] is not None
        assert second["queue"]["position"] == first["queue"]["position"] + 1
        place = client.get(f"/v1/jobs/{second['id']}").json()["queue"]
        assert place["position"] == second["queue"]["position"]
        # no worker has claimed any job of the model: no rate, so no estimated start
        assert place["service_rate_per_s"] == 0 and place["estimated_start_at"] is None

        # When the second job's stream is open (and the gauge counts it)...
        notes: list[dict[str, Any]] = []
        ended = threading.Event()
        final: list[dict[str, Any]] = []

        def watch() -> None:
            with httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=60
            ) as http:
                with http.stream("GET", second["urls"]["events"]) as response:
                    for sse in iter_sse(response.iter_bytes()):
                        event = sse.json()
                        if sse.event == "queued":
                            # a note is not in the log: the resume point stays where it was
                            assert sse.id == (str(event["seq"]) if event["seq"] else None)
                            notes.append(event["data"])
                        elif event["type"] in ("done", "error"):
                            final.append(event)
                            break
            ended.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wait_for(lambda: notes, 30, "a queued note")
        assert notes[0]["position"] == place["position"]
        assert sample(scrape(client), "tokenq_stream_clients", transport="sse") >= 1

        # ...and the job ahead of it is cancelled: the stream says it moved up
        _cancel(client, first["id"])
        wait_for(lambda: len(notes) >= 2, 30, "a second queued note")
        assert notes[1]["position"] == place["position"] - 1

        # and the stream still ends, with the job
        _cancel(client, second["id"])
        assert ended.wait(30), "the stream did not end"
        assert final and final[0]["data"]["status"] == "cancelled"
    finally:
        _cancel(client, first["id"], second["id"])
        client.post(f"/v1/batches/{batch.json()['id']}/cancel")


def test_a_job_behind_others_gets_an_estimated_start_and_a_batch_an_eta(
    client: httpx.Client,
) -> None:
    # Given the one-slot `slow` model (0.1 s a token) with four jobs of 2 s each
    jobs = [submit(client, model="slow", prompt=f"e{i}", max_tokens=20) for i in range(4)]
    try:
        # Then, once a job of the model has been claimed, the last one has an estimated start
        def estimate() -> dict[str, Any] | None:
            queue = client.get(f"/v1/jobs/{jobs[-1]['id']}").json()["queue"]
            return queue if queue and queue["estimated_start_at"] else None

        queue = wait_for(estimate, 30, "an estimated start")
        assert queue["service_rate_per_s"] > 0 and 1 <= queue["position"] <= 2
        assert queue["estimated_start_at"] > time.time()
    finally:
        _cancel(client, *(job["id"] for job in jobs))

    # And a batch, once its first job is done, an estimated completion while it runs
    batch = client.post(
        "/v1/batches",
        json={"model": "slow", "jobs": [{"prompt": f"b{i}", "max_tokens": 5} for i in range(6)]},
    ).json()
    try:

        def eta() -> dict[str, Any] | None:
            b = client.get(f"/v1/batches/{batch['id']}").json()
            return b if b["estimated_completion_at"] else None

        running = wait_for(eta, 60, "a batch ETA")
        assert running["status"] == "in_progress"
        assert running["estimated_completion_at"] > running["created_at"]
    finally:
        client.post(f"/v1/batches/{batch['id']}/cancel")
    finished = wait_for(
        lambda: (
            (b := client.get(f"/v1/batches/{batch['id']}").json())["status"]
            in ("completed", "cancelled")
            and b
        ),
        120,
        "the batch to end",
    )
    assert finished["estimated_completion_at"] is None


def test_the_caller_lists_its_latest_jobs_and_no_one_elses(
    client: httpx.Client, bob: httpx.Client
) -> None:
    mine = [submit(client, model="fake", prompt=f"list {i}", max_tokens=1)["id"] for i in range(3)]
    listed = client.get("/v1/jobs", params={"limit": 3})
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    assert [job["id"] for job in body["data"]] == mine[::-1]  # newest first
    assert not {job["id"] for job in bob.get("/v1/jobs").json()["data"]} & set(mine)
    for bad in ("0", "101", "x"):
        response = client.get("/v1/jobs", params={"limit": bad})
        assert 400 <= response.status_code < 500
        assert "error" in response.json()


def test_tokenq_top_shows_queues_and_workers(stack: Stack) -> None:
    env = {**stack.env, "TOKENQ_URL": stack.env["TOKENQ_BASE_URL"], "COLUMNS": "160"}
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "top", "--once", "--interval", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    for expected in ("busy/slots", "tokens/s", "fake", "smollm2", "live workers"):
        assert expected in run.stdout, run.stdout


def test_the_dashboard_and_prometheus_config_use_what_the_api_serves(
    client: httpx.Client,
) -> None:
    """Every metric the Grafana dashboard queries is one GET /metrics serves, and the
    Prometheus of docker-compose.yml scrapes the compose API at that path."""
    served = {family.name for family in text_string_to_metric_families(client.get("/metrics").text)}
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tokenq-dashboard.json").read_text())
    queried = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\btokenq_\w+", target["expr"])
    }
    assert queried and queried <= served, queried - served

    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert client.get(job["metrics_path"]).status_code == 200
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api_port = compose["services"]["api"]["ports"][0].split(":")[-1]
    assert job["static_configs"][0]["targets"] == [f"api:{api_port}"]
    assert (
        "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (compose["services"]["prometheus"]["volumes"])
    )


def test_api_processes_in_multiprocess_mode_each_serve_the_sum(
    stack: Stack, tmp_path: Path
) -> None:
    """Two API processes sharing PROMETHEUS_MULTIPROC_DIR: a stream held by one is counted in
    the other's answer, for a job submitted through the other."""
    env = dict(stack.env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    one, other = Stack(env=env, log_dir=stack.log_dir), Stack(env=env, log_dir=stack.log_dir)
    headers = {"Authorization": f"Bearer {ALICE_KEY}"}
    try:
        with (
            httpx.Client(base_url=one.start_api("127.0.0.1", free_port()), headers=headers) as a,
            httpx.Client(base_url=other.start_api("127.0.0.1", free_port()), headers=headers) as b,
        ):
            job = submit(a, model="idle", prompt="held", max_tokens=1)
            assert sample(scrape(a), "tokenq_stream_clients", transport="sse") == 0
            with b.stream("GET", job["urls"]["events"], timeout=60) as stream:
                assert stream.status_code == 200
                wait_for(
                    lambda: sample(scrape(a), "tokenq_stream_clients", transport="sse") == 1,
                    30,
                    "the other process's stream client",
                )
                _cancel(a, job["id"])
            wait_for(
                lambda: sample(scrape(a), "tokenq_stream_clients", transport="sse") == 0,
                30,
                "the stream client to be gone",
            )
            # the service's own metrics come from Redis: both processes answer the same
            assert sample(scrape(a), "tokenq_jobs_submitted_total", model="idle",
                          lane="interactive") == sample(scrape(b), "tokenq_jobs_submitted_total",
                                                        model="idle", lane="interactive")  # fmt: skip
    finally:
        one.stop()
        other.stop()
