"""The `tokenq` CLI against the running stack: submit --wait -o, status, tail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from cli.stack import Stack
from tests.conftest import ALICE_KEY, submit


def _tokenq(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "TOKENQ_URL": stack.env["TOKENQ_BASE_URL"], "TOKENQ_API_KEY": ALICE_KEY}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_submit_waits_and_writes_results_in_order(stack: Stack, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"custom_id": f"c{i}", "prompt": f"p{i}", "max_tokens": 3}) + "\n"
            for i in range(12)
        )
    )
    out = tmp_path / "results.jsonl"
    run = _tokenq(stack, "submit", str(prompts), "--model", "fake", "--wait", "-o", str(out))
    assert run.returncode == 0, run.stderr
    batch_id = run.stdout.strip()
    assert batch_id.startswith("batch_")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"c{i}" for i in range(12)]
    assert all(x["response"]["text"] == " tok0 tok1 tok2" for x in lines)
    status = _tokenq(stack, "status", batch_id)
    assert json.loads(status.stdout)["status"] == "completed"


def test_tail_prints_the_tokens_of_a_job(stack: Stack, client: httpx.Client) -> None:
    job = submit(client, model="fake", prompt="tail me", max_tokens=4)
    run = _tokenq(stack, "tail", job["id"])
    assert run.returncode == 0, run.stderr
    assert run.stdout == " tok0 tok1 tok2 tok3\n"
    assert "finish_reason=length" in run.stderr


def test_errors_are_reported_not_raised(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    run = _tokenq(stack, "submit", str(bad))
    assert run.returncode == 1
    assert "line 2" in run.stderr and "Traceback" not in run.stderr
    assert "404" in _tokenq(stack, "status", "job_missing").stderr
