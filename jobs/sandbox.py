"""llama.cpp's grammar parser and llama-cpp-python's JSON-schema converter, in a child process.

Both are checked before any job is queued, and both have taken a whole process down on hostile
input: the parser recurses without a depth limit (SIGSEGV), and the converter builds a rule per
repetition (`maxItems: 10**9` grew a process to 22 GB). jobs/grammars.py bounds their input
first; this is the second wall. The child runs with an address-space limit (MEMORY_BYTES) and
each call with a deadline (TIMEOUT_S): a crash, a MemoryError or a runaway costs the child, which
is started again, and the request gets a 400 that says what happened. The API process never runs
either.

One child per API process, one call at a time (grammar checks are rare next to jobs); started
with `spawn`, so it shares nothing with the API's threads.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import resource
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from jobs.errors import TokenqError

logger = logging.getLogger(__name__)

#: The child's address-space limit: its Python, llama.cpp, and each model's vocabulary (mmapped).
MEMORY_BYTES = 3 * 1024**3
#: Longest one conversion or parse may take.
TIMEOUT_S = 10.0


class SandboxError(TokenqError):
    """The child could not give an answer: it crashed, ran out of memory or out of time. The
    API answers it as a 400 about the grammar (api/service.py), never as itself."""


def _serve(conn: Connection, memory_bytes: int) -> None:
    """The child: answer (op, args) requests until the pipe closes."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import llama_cpp
    from llama_cpp import llama_grammar

    from jobs.llama_log import route_llama_logs

    route_llama_logs()
    vocabularies: dict[str, Any] = {}
    while True:
        try:
            op, args = conn.recv()
        except EOFError:
            return
        try:
            if op == "schema":
                answer: Any = llama_grammar.json_schema_to_gbnf(args[0])
            else:
                gguf, gbnf = args
                if gguf not in vocabularies:
                    vocabularies[gguf] = llama_cpp.Llama(gguf, vocab_only=True, verbose=False)
                vocab = vocabularies[gguf]._model.vocab  # noqa: SLF001
                sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
                answer = (
                    None if sampler else "the grammar does not parse (GBNF, with a `root` rule)"
                )
                if sampler:
                    llama_cpp.llama_sampler_free(sampler)
            conn.send(("ok", answer))
        except MemoryError:
            conn.send(("failed", "it needs more memory than a grammar may use"))
        except Exception as exc:  # the converter raises plain errors on schemas it cannot do
            conn.send(("invalid", str(exc)))


class GrammarSandbox:
    def __init__(self, memory_bytes: int = MEMORY_BYTES, timeout_s: float = TIMEOUT_S):
        self.memory_bytes = memory_bytes
        self.timeout_s = timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._child: tuple[Any, Connection] | None = None

    def schema_to_gbnf(self, schema: dict[str, Any]) -> str:
        """The GBNF of a JSON schema; ValueError when the converter cannot do it."""
        status, answer = self._call("schema", (json.dumps(schema),))
        if status == "invalid":
            raise ValueError(answer)
        return str(answer)

    def grammar_error(self, gguf: Path, gbnf: str) -> str | None:
        """Why llama.cpp rejects the grammar for this vocabulary (None: it parses)."""
        _, answer = self._call("grammar", (str(gguf), gbnf))
        return None if answer is None else str(answer)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _call(self, op: str, args: tuple[str, ...]) -> tuple[str, Any]:
        with self._lock:
            process, conn = self._started()
            try:
                conn.send((op, args))
                if not conn.poll(self.timeout_s):
                    self._stop()
                    raise SandboxError(f"it took more than {self.timeout_s:.0f}s")
                status, answer = conn.recv()
            except (EOFError, OSError) as exc:
                code = process.exitcode
                self._stop()
                logger.warning("the grammar sandbox died (exit code %s)", code)
                raise SandboxError("it crashed llama.cpp's grammar code") from exc
            if status == "failed":
                self._stop()  # memory may be left in a bad state: a fresh child next time
                raise SandboxError(answer)
            return status, answer

    def _started(self) -> tuple[Any, Connection]:
        if self._child is None or not self._child[0].is_alive():
            parent, child = self._context.Pipe()
            process = self._context.Process(
                target=_serve, args=(child, self.memory_bytes), name="tokenq-grammars", daemon=True
            )
            process.start()
            child.close()
            self._child = (process, parent)
        return self._child

    def _stop(self) -> None:
        if self._child is not None:
            process, conn = self._child
            self._child = None
            conn.close()
            process.kill()
            process.join(5)
