"""The browser page (web/) in a real headless Chromium against the real stack: a prompt streamed
to the end, a JSONL batch followed to 100%, a stream resumed after its connection is cut, and
keyless mode."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack, free_port
from tests.conftest import ALICE_KEY
from tests.web.proxy import CuttableProxy

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

#: Debian's chromium (`make install` installs it as root); Playwright's own browsers are never
#: downloaded.
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium executable (Debian: apt-get install chromium)"
)

#: Every wait of these tests on the page is bounded by this (ms): generous for a loaded machine.
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    args = ["--disable-dev-shm-usage"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (its own sessionStorage); the test fails if the page's scripts raise."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    uncaught: list[str] = []
    page.on("pageerror", lambda exc: uncaught.append(str(exc)))
    yield page
    context.close()
    assert not uncaught, f"the page's scripts raised: {uncaught}"


def _screenshot(page: Any, tmp_path: Path, name: str) -> None:
    """Save a screenshot in the test's folder and, when TOKENQ_SCREENSHOT_DIR is set, there too."""
    shot = page.screenshot(full_page=True)
    (tmp_path / name).write_bytes(shot)
    if folder := os.environ.get("TOKENQ_SCREENSHOT_DIR"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(shot)


def _open(page: Any, base_url: str, key: str | None) -> None:
    """Load the page (until its first requests are answered) and enter `key`, if any."""
    page.goto(base_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    if key is not None:
        _enter_key(page, key)


def _enter_key(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_function("document.body.dataset.models?.split(' ').includes('smollm2')")


def _submit_prompt(page: Any, model: str, prompt: str, max_tokens: int) -> str:
    """Submit a prompt at temperature 0 from the form; the id of the job the page follows."""
    page.select_option("#job-model", model)
    page.fill("#job-prompt", prompt)
    page.fill("#job-max-tokens", str(max_tokens))
    page.fill("#job-temperature", "0")
    before = page.get_attribute("#job-view", "data-job-id")
    page.click("#job-submit")
    page.wait_for_function(
        "before => { const v = document.querySelector('#job-view');"
        " return v.dataset.jobId && v.dataset.jobId !== before; }",
        arg=before,
    )
    return page.get_attribute("#job-view", "data-job-id")


def _wait_ended(page: Any) -> dict[str, str]:
    """Wait until the job view's stream ended; its data attributes."""
    page.wait_for_selector("#job-view[data-state=ended]")
    return page.eval_on_selector("#job-view", "v => ({...v.dataset})")


def test_a_prompt_streams_to_its_final_text_and_a_batch_to_100_percent(
    stack: Stack, page: Any, client: httpx.Client, tmp_path: Path
) -> None:
    base_url = stack.env["TOKENQ_BASE_URL"]

    # Given the page without a key: the API's 401 is shown, not swallowed
    _open(page, base_url, None)
    assert "missing API key" in page.text_content("#errors")
    assert page.is_visible("#errors-section")

    # When alice enters her key, the errors go and the models with live workers are offered
    _enter_key(page, ALICE_KEY)
    assert page.is_hidden("#errors-section")
    assert page.evaluate("sessionStorage.getItem('tokenq.apiKey')") == ALICE_KEY

    # And she submits a prompt to the real model
    job_id = _submit_prompt(page, "smollm2", "The capital of France is", 12)
    view = _wait_ended(page)

    # Then the text the page shows, token by token, is the job's final text
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["model"] == "smollm2"
    shown = page.text_content("#job-text")
    assert shown == job["text"] and shown.strip()
    assert view["status"] == "succeeded" and view["anomalies"] == "0"
    assert view["textDiffers"] == "false"
    assert f"{job['usage']['completion_tokens']} completion tokens" in page.text_content(
        "#job-summary"
    )

    # When she uploads a JSONL file of four jobs for the slow fake model (0.1 s a token, one
    # slot: the bar fills over a few seconds)
    lines = [{"custom_id": f"line-{i}", "prompt": f"Count {i}", "max_tokens": 8} for i in range(4)]
    upload = tmp_path / "prompts.jsonl"
    upload.write_text("".join(json.dumps(line) + "\n" for line in lines))
    page.set_input_files("#batch-file", str(upload))
    page.select_option("#batch-model", "slow")
    page.click("#batch-submit")
    page.wait_for_selector("#batch-view[data-batch-id]")
    batch_id = page.get_attribute("#batch-view", "data-batch-id")

    # Then its progress bar reaches 100% (a screenshot on the way, if the page is caught there)
    midway = False
    while page.get_attribute("#batch-view", "data-state") == "streaming":
        percent = int(page.get_attribute("#batch-view", "data-percent") or 0)
        if 0 < percent < 100 and not midway:
            _screenshot(page, tmp_path, "web-batch-midway.png")
            midway = True
        page.wait_for_function(
            "p => { const v = document.querySelector('#batch-view');"
            " return v.dataset.state !== 'streaming' || Number(v.dataset.percent) !== p; }",
            arg=percent,
        )
    assert page.get_attribute("#batch-view", "data-state") == "ended", page.text_content("#errors")
    assert page.get_attribute("#batch-view", "data-percent") == "100"
    assert page.eval_on_selector("#batch-progress", "p => [p.value, p.max]") == [4, 4]
    assert page.text_content("#batch-status") == "completed"
    batch = client.get(f"/v1/batches/{batch_id}").json()
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 4
    assert "4 succeeded" in page.text_content("#batch-counts")

    # And the last finished jobs are listed with their texts, as GET /v1/jobs/{id} has them
    page.wait_for_function(
        "document.querySelectorAll('#batch-results tbody tr[data-loaded=true]').length === 4"
    )
    rows = page.eval_on_selector_all(
        "#batch-results tbody tr",
        "rows => rows.map(r => [r.dataset.jobId, r.dataset.customId, r.querySelector('.text').textContent])",
    )
    assert sorted(custom for _, custom, _ in rows) == [f"line-{i}" for i in range(4)]
    for row_job, _, text in rows:
        assert text == client.get(f"/v1/jobs/{row_job}").json()["text"] != ""

    # And the results download as the API's JSONL (fetched with the key, saved from a Blob)
    with page.expect_download() as download:
        page.click("#batch-download")
    saved = Path(download.value.path()).read_text()
    results = [json.loads(line) for line in saved.splitlines()]
    assert saved == client.get(f"/v1/batches/{batch_id}/results").text
    assert [r["custom_id"] for r in results] == [f"line-{i}" for i in range(4)]

    # And the recent list has the job and the batch, with their status
    page.click("#recent-refresh")
    page.wait_for_selector(f"#recent-jobs tr[data-job-id='{job_id}'][data-status=succeeded]")
    page.wait_for_selector(f"#recent-batches tr[data-batch-id='{batch_id}'][data-status=completed]")
    _screenshot(page, tmp_path, "web-page.png")

    # And the page's files are revalidated on each load (never a stale module with a new page)
    assert client.get("/web/js/main.js").headers["cache-control"] == "no-cache"


def test_a_stream_cut_mid_job_resumes_without_gap_or_duplicate(
    stack: Stack, page: Any, client: httpx.Client, tmp_path: Path
) -> None:
    # Given the page behind a proxy whose connections can be cut
    port = int(stack.env["TOKENQ_BASE_URL"].rsplit(":", 1)[1])
    proxy = CuttableProxy(port)
    try:
        _open(page, proxy.url, ALICE_KEY)

        # When a job of the slow fake model (0.1 s a token) streams, and its connection is cut
        # twice mid-stream (an RST, as a dropped network gives the browser)
        job_id = _submit_prompt(page, "slow", "Count", 60)
        for word in (" tok5", " tok20"):
            page.wait_for_function(
                "w => document.querySelector('#job-text').textContent.includes(w)", arg=word
            )
            assert proxy.cut(b"/events") >= 1, "no open event stream to cut"
        view = _wait_ended(page)
    finally:
        proxy.close()

    # Then the page reconnected with Last-Event-ID, and shows every token once, in order
    job = client.get(f"/v1/jobs/{job_id}").json()
    expected = "".join(f" tok{i}" for i in range(60))
    assert job["status"] == "succeeded" and job["text"] == expected
    assert page.text_content("#job-text") == expected
    assert int(view["reconnects"]) >= 2 and view["anomalies"] == "0"
    resumed = [
        head
        for head in proxy.requests
        if f"/v1/jobs/{job_id}/events".encode() in head and b"last-event-id: " in head.lower()
    ]
    assert len(resumed) >= 2, proxy.requests
    assert "reconnected" in page.text_content("#job-connection")
    _screenshot(page, tmp_path, "web-resumed.png")


@pytest.fixture
def keyless_api(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """A second API process with no keys configured, on the stack's Redis and workers."""
    env = {
        k: v for k, v in stack.env.items() if k not in ("TOKENQ_API_KEYS", "TOKENQ_TENANTS_CONFIG")
    }
    keyless = Stack(env=env, log_dir=tmp_path / "logs")
    try:
        yield keyless.start_api("127.0.0.1", free_port())
    finally:
        keyless.stop()


def test_keyless_mode_sends_no_authorization_header(
    keyless_api: str, page: Any, tmp_path: Path
) -> None:
    # Given a server with no keys, and the page with none entered
    sent: list[dict[str, str]] = []
    page.on("request", lambda request: sent.append(request.headers))
    _open(page, keyless_api, None)
    assert page.get_attribute("body", "data-keyed") == "false"
    assert "smollm2" in page.get_attribute("body", "data-models").split()

    # When a prompt is submitted
    job_id = _submit_prompt(page, "fake", "Hello", 8)
    view = _wait_ended(page)

    # Then it ran as the anonymous tenant's job, without any Authorization header
    job = httpx.get(f"{keyless_api}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and view["status"] == "succeeded"
    assert page.text_content("#job-text") == job["text"] == "".join(f" tok{i}" for i in range(8))
    assert sent and not any("authorization" in headers for headers in sent)
    assert page.is_hidden("#errors-section")
    _screenshot(page, tmp_path, "web-keyless.png")


def _sse(*blocks: tuple[int | None, str, dict[str, Any]]) -> str:
    """An event stream as tokenq sends it: `(seq, type, data)` blocks; seq None: no id (a note)."""
    frames = []
    for seq, type_, data in blocks:
        head = f"id: {seq}\r\n" if seq is not None else ""
        frames.append(f"{head}event: {type_}\r\ndata: {json.dumps(data)}\r\n\r\n")
    return ": ping\r\n\r\n" + "".join(frames)


def test_the_stream_reader_resumes_at_the_last_seq_across_notes_and_resets(
    stack: Stack, page: Any
) -> None:
    """The page's stream reader against a scripted server (Playwright answers the requests):
    `queued` notes (no id) never move the resume point, `reset` drops the text, a stream that
    ends early is resumed with Last-Event-ID, and 204 means the log already ended."""
    _open(page, stack.env["TOKENQ_BASE_URL"], ALICE_KEY)
    path = "/v1/jobs/job_scripted/events"
    start = time.time() + 30

    def event(seq: int, type_: str, data: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
        return (seq, type_, {"seq": seq, "type": type_, "data": data})

    first = _sse(
        event(1, "status", {"status": "queued", "at": 1.0}),
        # the note as the server sends it (an event object with the seq before it), then bare
        (
            None,
            "queued",
            {"seq": 1, "type": "queued", "data": {"position": 2, "estimated_start_at": start}},
        ),
        event(2, "status", {"status": "running", "at": 2.0, "attempt": 1}),
        event(3, "token", {"text": "Hel", "n": 1}),
        (None, "queued", {"position": 0, "estimated_start_at": None}),
    )  # ...and the connection ends before the final event
    result = {"text": "Hi", "finish_reason": "stop", "usage": None, "timings": None, "error": None}
    rest = _sse(
        event(4, "token", {"text": "lo", "n": 2}),
        event(5, "reset", {"attempt": 2}),
        event(6, "token", {"text": "Hi", "n": 1}),
        event(7, "status", {"status": "succeeded", "at": 3.0}),
        event(8, "done", {"status": "succeeded", "result": result}),
    )
    asked: list[str | None] = []

    def serve(route: Any) -> None:
        resume = route.request.headers.get("last-event-id")
        asked.append(resume)
        if resume == "8":
            route.fulfill(status=204)
        else:
            body = first if resume is None else rest if resume == "3" else ""
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route(f"**{path}", serve)
    page.evaluate(
        """() => {
          // every text the queue line is given (a callback sees only the last one of a task)
          window.queueTexts = [];
          new MutationObserver(records => records.forEach(r => r.addedNodes.forEach(n => queueTexts.push(n.textContent))))
            .observe(document.querySelector('#job-queue'), {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.evaluate(
        """path => import('/web/js/job.js').then(m => m.watchJob(
             {id: 'job_scripted', status: 'queued', urls: {events: path}}))""",
        path,
    )
    view = _wait_ended(page)
    assert asked == [None, "3"]
    assert page.text_content("#job-text") == "Hi"
    assert view["status"] == "succeeded" and view["anomalies"] == "0"
    assert view["reconnects"] == "1" and view["lastSeq"] == "8"
    texts = page.evaluate("window.queueTexts")
    assert any(re.fullmatch(r"position 2 in queue, starts in ~(29|30) s", t) for t in texts), texts
    assert "attempt 2 started over" in page.text_content("#job-connection")

    # A reader already at the end is answered 204: the reader stops there
    outcome = page.evaluate(
        "path => import('/web/js/sse.js').then(m => m.follow(path, {after: 8}))", path
    )
    assert outcome == {"last": 8, "ended": "204", "reconnects": 0}
    assert asked[-1] == "8"


def test_recent_jobs_fall_back_to_this_tabs_jobs_without_the_list_route(
    stack: Stack, page: Any
) -> None:
    # Given a server whose GET /v1/jobs answers 405 (as one from before that route does)
    def old_server(route: Any) -> None:
        error = {"message": "Method Not Allowed", "type": "invalid_request_error", "param": None}
        route.fulfill(status=405, json={"error": {**error, "code": "http_405"}})

    page.route("**/v1/jobs?limit=*", old_server)
    _open(page, stack.env["TOKENQ_BASE_URL"], ALICE_KEY)

    # When the page submits a job
    job_id = _submit_prompt(page, "fake", "Hello", 4)
    _wait_ended(page)

    # Then the list shows the jobs this tab submitted, and says why
    page.click("#recent-refresh")
    page.wait_for_selector(f"#recent-jobs tr[data-job-id='{job_id}'][data-status=succeeded]")
    assert "has no GET /v1/jobs" in page.text_content("#recent-note")
    assert (
        page.eval_on_selector_all("#recent-jobs tbody tr[data-job-id]", "rows => rows.length") == 1
    )
    assert page.is_hidden("#errors-section")


def test_a_queued_job_is_watched_and_cancelled_from_the_list(
    stack: Stack, page: Any, client: httpx.Client
) -> None:
    if client.get("/v1/jobs", params={"limit": 1}).status_code in (404, 405):
        pytest.skip("this API has no GET /v1/jobs: the list holds only the page's own jobs")
    # Given a job of a model no worker serves (it stays queued)
    job = client.post("/v1/jobs", json={"model": "idle", "prompt": "Hi", "max_tokens": 4}).json()
    _open(page, stack.env["TOKENQ_BASE_URL"], ALICE_KEY)
    row = f"#recent-jobs tr[data-job-id='{job['id']}']"
    page.wait_for_selector(f"{row}[data-status=queued]")

    # When it is watched from the list, the page says where it waits
    page.click(f"{row} button:text('Watch')")
    page.wait_for_selector(f"#job-view[data-job-id='{job['id']}'][data-status=queued]")
    polled = client.get(f"/v1/jobs/{job['id']}").json()
    if polled.get("queue") is not None:  # an API that reports the job's place in line
        page.wait_for_function(
            "document.querySelector('#job-queue').textContent.includes('in queue')"
        )
    if polled.get("notice"):
        assert polled["notice"] in page.text_content("#job-queue")

    # And when it is cancelled from the list, the stream ends cancelled and the list says so
    page.click(f"{row} button:text('Cancel')")
    view = _wait_ended(page)
    assert view["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    page.wait_for_selector(f"{row}[data-status=cancelled]")
    assert page.is_hidden("#errors-section")
