"""`tokenq up` as a user runs it: its children die with it, kill -9 included; a second one, a port
in use, Redis refusing its data dir or a model that does not load stop it with the cause in its
last line, a non-zero exit, and nothing left running.

Real processes throughout: `tokenq up` as a subprocess with the settings a user gets, except free
loopback ports, a temporary data dir, and a models config whose only model is the fake engine (no
real model loads; the model-load test adds one whose GGUF is missing).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from cli.ports import port_in_use
from cli.stack import free_port
from tests.conftest import wait_for

TOKENQ = Path(sys.executable).with_name("tokenq")
#: Bounds: a fake-engine stack starts in a few seconds; a refused one exits in about one.
UP_TIMEOUT_S = 60
REFUSED_TIMEOUT_S = 30
#: "Within a few seconds": the parent-death signal acts at once; Redis syncs its AOF first.
GONE_TIMEOUT_S = 5

FAKE_MODELS = {"default": "fake", "models": {"fake": {"engine": "fake", "n_ctx": 4096}}}


@dataclass
class Up:
    """One `tokenq up` process, its output in a file."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    redis_port: int
    output_path: Path

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def last_line(self) -> str:
        lines = [line for line in self.output().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def wait_up(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"tokenq up exited:\n{self.output()[-3000:]}"
            return "tokenq is up" in self.output()

        wait_for(up, UP_TIMEOUT_S, "tokenq is up")

    def wait_exit(self, timeout_s: float = REFUSED_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"tokenq up still running:\n{self.output()[-3000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            self.wait_exit()


def start_up(
    tmp: Path,
    name: str,
    *,
    data_dir: Path | None = None,
    port: int | None = None,
    redis_port: int | None = None,
    models: dict | None = None,
) -> Up:
    """Run `tokenq up` with a user's defaults but for ports, data dir and models config."""
    config = tmp / f"{name}-models.yaml"
    config.write_text(yaml.safe_dump(models or FAKE_MODELS))
    data_dir = data_dir or tmp / f"{name}-data"
    port = port or free_port()
    redis_port = redis_port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENQ_")}
    env.update(
        TOKENQ_DATA_DIR=str(data_dir),
        TOKENQ_MODELS_CONFIG=str(config),
        TOKENQ_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        TOKENQ_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    output_path = tmp / f"{name}.out"
    with output_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(TOKENQ), "up"], env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT
        )
    return Up(proc, data_dir, port, redis_port, output_path)


# --- processes, from /proc ----------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command; None for a process gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields


def children(pid: int) -> dict[tuple[int, str], str]:
    """A process's children as (pid, start time) -> command line (the start time tells a reused
    pid from the same process)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[1] == str(pid):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            found[(int(entry.name), fields[19])] = command
    return found


def alive(process: tuple[int, str]) -> bool:
    fields = _stat(process[0])
    return fields is not None and fields[19] == process[1]


def stack_processes(data_dir: Path) -> list[int]:
    """Every live process started for this data dir, grandchildren included (they inherit the
    TOKENQ_DATA_DIR the test gave `tokenq up`); not redis-server, which writes its process title
    over its environment: its port tells whether it runs."""
    marker = f"\0TOKENQ_DATA_DIR={data_dir}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _stat(int(entry.name)) is None:
            continue
        try:
            environ = b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ:
            found.append(int(entry.name))
    return found


def assert_nothing_left(up: Up) -> None:
    wait_for(lambda: not stack_processes(up.data_dir), GONE_TIMEOUT_S, "no process left")
    assert not port_in_use("127.0.0.1", up.port)
    assert not port_in_use("127.0.0.1", up.redis_port)


# --- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """A `tokenq up` serving the fake model, shared by the tests that run beside it."""
    up = start_up(tmp_path_factory.mktemp("up"), "first")
    try:
        up.wait_up()
        yield up
    finally:
        up.stop()
    # Ctrl-C stops all of it, cleanly
    assert up.proc.returncode == 0, up.output()[-3000:]
    assert up.last_line() == "stopped"
    assert_nothing_left(up)


def test_tokenq_up_killed_with_sigkill_leaves_no_process_behind(tmp_path: Path) -> None:
    # Given a running `tokenq up` and its children: redis-server, the worker, the API
    up = start_up(tmp_path, "killed")
    kids: dict[tuple[int, str], str] = {}
    try:
        up.wait_up()
        kids = children(up.proc.pid)
        commands = " | ".join(kids.values())
        assert len(kids) == 3, commands
        assert "redis-server" in commands and "-m worker" in commands and "uvicorn" in commands
        python_kids = {pid for (pid, _), command in kids.items() if "redis-server" not in command}
        assert set(stack_processes(up.data_dir)) == {up.proc.pid} | python_kids

        # When it is killed with SIGKILL (it can run no handler)
        up.proc.kill()
        up.proc.wait(GONE_TIMEOUT_S)

        # Then every process of its own is gone within seconds, and its ports are free
        wait_for(lambda: not any(alive(kid) for kid in kids), GONE_TIMEOUT_S, "its children to die")
        assert_nothing_left(up)
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
        for kid in kids:  # where the test failed: no orphan outlives it
            if alive(kid):
                os.kill(kid[0], signal.SIGKILL)


@pytest.mark.parametrize("which", ["api", "redis"])
def test_a_port_in_use_is_named_in_the_last_line_and_nothing_starts(
    tmp_path: Path, which: str
) -> None:
    # Given another program listening on the port `tokenq up` would take
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        ports = {"port": taken} if which == "api" else {"redis_port": taken}

        # When `tokenq up` starts
        up = start_up(tmp_path, f"taken-{which}", **ports)
        code = up.wait_exit()

        # Then it exits non-zero, its last line names the port and who holds it, nothing runs
        assert code != 0, up.output()
        last = up.last_line()
        assert f"port {taken} ({'the API' if which == 'api' else 'Redis'}) is in use" in last
        assert f"by pid {os.getpid()}" in last, last
        assert not (up.data_dir / "logs").exists(), "something was started"
        wait_for(lambda: not stack_processes(up.data_dir), GONE_TIMEOUT_S, "no process left")


def test_a_second_tokenq_up_on_the_same_data_dir_says_so_and_the_first_keeps_working(
    running: Up, tmp_path: Path
) -> None:
    before = set(stack_processes(running.data_dir))
    # When a second `tokenq up` starts beside the running one, as a user would run it again
    second = start_up(
        tmp_path,
        "second",
        data_dir=running.data_dir,
        port=running.port,
        redis_port=running.redis_port,
    )
    code = second.wait_exit()

    # Then it exits non-zero naming the running one's pid and ports, having started nothing
    assert code != 0, second.output()
    last = second.last_line()
    assert "tokenq up is already running" in last, second.output()
    assert f"pid {running.proc.pid}" in last
    assert f":{running.port}" in last and f":{running.redis_port}" in last
    assert set(stack_processes(running.data_dir)) == before

    # And the first still serves jobs
    with httpx.Client(base_url=f"http://127.0.0.1:{running.port}", timeout=10) as client:
        job = client.post("/v1/jobs", json={"model": "fake", "prompt": "hi", "max_tokens": 3})
        assert job.status_code == 202, job.text
        done = wait_for(
            lambda: (
                body
                if (body := client.get(f"/v1/jobs/{job.json()['id']}").json())["status"]
                == "succeeded"
                else None
            ),
            30,
            "the job to succeed",
        )
    assert done["text"] == " tok0 tok1 tok2"


def test_a_second_stack_on_the_api_port_of_a_running_one_names_that_stack(
    running: Up, tmp_path: Path
) -> None:
    # When a `tokenq up` with another data dir starts on the running stack's API port
    second = start_up(tmp_path, "same-port", port=running.port)
    code = second.wait_exit()

    # Then its last line says an earlier tokenq stack holds the port, and whose `tokenq up` it is
    assert code != 0, second.output()
    last = second.last_line()
    assert f"port {running.port} (the API) is in use by an earlier tokenq stack" in last, last
    assert f"its `tokenq up` is pid {running.proc.pid}" in last
    assert not (second.data_dir / "logs").exists(), "something was started"


def test_redis_refusing_its_data_dir_is_named_in_the_last_line(tmp_path: Path) -> None:
    # Given a data dir where Redis cannot create its append-only dir
    data_dir = tmp_path / "data"
    (data_dir / "redis").mkdir(parents=True)
    (data_dir / "redis" / "appendonlydir").write_text("not a directory")

    # When `tokenq up` starts
    up = start_up(tmp_path, "refused", data_dir=data_dir)
    code = up.wait_exit()

    # Then its last line is Redis's own reason, naming the data dir; nothing runs
    assert code != 0, up.output()
    last = up.last_line()
    assert f"redis-server (data dir {data_dir / 'redis'}) exited with code 1" in last, last
    assert "append-only dir appendonlydir: Not a directory" in last
    assert_nothing_left(up)


def test_a_model_that_does_not_load_is_named_in_the_last_line(tmp_path: Path) -> None:
    # Given a model whose GGUF file is missing
    missing = tmp_path / "missing.gguf"
    models = {"default": "missing", "models": {"missing": {"gguf": {"path": str(missing)}}}}

    # When `tokenq up` serves it
    up = start_up(tmp_path, "noload", models=models)
    code = up.wait_exit(UP_TIMEOUT_S)

    # Then its last line is the error of the first process it stopped for: the worker, or the
    # API (it loads the default model's tokenizer at start-up)
    assert code != 0, up.output()
    last = up.last_line()
    assert re.search(
        r"(the worker for model 'missing'|the API) exited with code \d+ before it", last
    )
    assert f"ValueError: Model path does not exist: {missing}" in last
    assert "tokenq is up" not in up.output()
    assert_nothing_left(up)
