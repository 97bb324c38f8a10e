"""Every example in README.md and docs/*.md runs against the real stack.

The examples are the ```bash and ```python blocks. They address http://127.0.0.1:8000 with no API
key, as `make run` serves them (no keys configured: one anonymous tenant, loopback only). The test
stack has API keys (and test models and limits), so this module starts one more API process with
`make run`'s settings, on the stack's Redis and so its workers, and points the examples at it.
Each block runs as its own process (bash -euo pipefail, or this Python) with a timeout, and passes
when it exits 0. The blocks of one page run in order in one directory, as a reader would run them
in one terminal (files carry over, shell variables do not); the pages run at once. curl runs with
`--fail-with-body` (from a .curlrc made for the test), so an example whose request the API refuses
fails too.

What cannot run here (`make run`, docker compose, pip install, output shown beside an example)
goes in ```console, ```text, ```json, ```yaml ... blocks, which are not run; a fence with any other
label, or none, fails the test, so no example slips past it unlabelled.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.stack import Stack, free_port
from jobs.settings import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Fence labels of the blocks that run.
RUNNABLE = {"bash", "python"}
#: Fence labels of blocks that are shown, never run.
SHOWN = {"console", "text", "json", "jsonl", "yaml", "dotenv", "gbnf", "dockerfile"}
#: The address the examples use, as `make run` serves it.
DOCS_ADDRESS = "127.0.0.1:8000"
BLOCK_TIMEOUT_S = 120
PARALLEL = 8

FENCE = re.compile(r"^(\s*)```(.*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  #: 1-based line of the opening fence
    lang: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    found = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, lang = opening.group(1), opening.group(2).strip()
        body = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^{indent}```\s*$", lines[j]):
            body.append(lines[j].removeprefix(indent))
            j += 1
        assert j < len(lines), f"{path.name}:{i + 1}: a fence that never closes"
        found.append(Block(path, i + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return found


ALL_BLOCKS = [block for path in DOCS for block in blocks(path)]
EXAMPLES = [block for block in ALL_BLOCKS if block.lang in RUNNABLE]


def test_every_block_says_whether_it_runs() -> None:
    unlabelled = [f"{b.name} ```{b.lang}" for b in ALL_BLOCKS if b.lang not in RUNNABLE | SHOWN]
    assert unlabelled == [], f"label each block one of {sorted(RUNNABLE | SHOWN)}"


def test_the_docs_have_examples() -> None:
    assert (ROOT / "docs").is_dir()
    assert {b.lang for b in EXAMPLES if b.path.name == "README.md"} == RUNNABLE


@pytest.fixture(scope="module")
def docs_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API process with the settings `make run` gives it (configs/models.yaml, no API keys,
    default limits), on the test stack's Redis and so its workers."""
    env = {name: value for name, value in stack.env.items() if not name.startswith("TOKENQ_")}
    env.update(
        TOKENQ_REDIS_URL=stack.env["TOKENQ_REDIS_URL"],
        TOKENQ_DATA_DIR=stack.env["TOKENQ_DATA_DIR"],
        TOKENQ_API_KEYS="{}",  # explicit: a .env in the checkout must not add keys
    )
    api = Stack(env=env, log_dir=tmp_path_factory.mktemp("docs-api"))
    try:
        yield api.start_api("127.0.0.1", free_port())
    finally:
        api.stop()


def run_block(block: Block, base_url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    code = block.code.replace(DOCS_ADDRESS, base_url.removeprefix("http://"))
    (workdir / ".curlrc").write_text("fail-with-body\n")
    env = {
        **os.environ,
        # The venv's python3 and tokenq come first, as after `. .venv/bin/activate`.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CURL_HOME": str(workdir),
        "TOKENQ_URL": base_url,
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("TOKENQ_API_KEY", "TOKENQ_API_KEYS"):
        env.pop(name, None)
    if block.lang == "bash":
        args = ["bash", "-euo", "pipefail", "-c", code]
    else:
        script = workdir / "example.py"
        script.write_text(code)
        args = [sys.executable, str(script)]
    try:
        return subprocess.run(
            args,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(
            args, -1, out, f"{err}\n(timed out after {exc.timeout}s)"
        )


def run_page(
    examples: list[Block], base_url: str, workdir: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """One page's examples, in order, in one directory."""
    return {block.name: run_block(block, base_url, workdir) for block in examples}


@pytest.fixture(scope="module")
def ran(
    docs_api: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every example: the pages at once (the worker decodes many jobs together)."""
    root = tmp_path_factory.mktemp("docs-examples")
    pages = [[b for b in EXAMPLES if b.path == path] for path in DOCS]
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [
            pool.submit(run_page, page, docs_api, root / page[0].path.stem)
            for page in pages
            if page
        ]
        return {name: result for f in futures for name, result in f.result().items()}


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.name for b in EXAMPLES])
def test_example_runs(block: Block, ran: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = ran[block.name]
    if result.returncode != 0:
        pytest.fail(
            f"{block.name} ({block.lang}) exited {result.returncode}\n"
            f"--- the block\n{block.code}--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}",
            pytrace=False,
        )
