"""A deterministic fake engine for scale and fault tests, where the model is not the point.

It "generates" `tok0 tok1 ...` (one word per token) at a configurable pace, honours max_tokens,
stop sequences and cancel, fails on purpose when the prompt contains FAKE_FAIL_MARKER, and kills
its whole worker process (as a crash in llama.cpp would) when it contains FAKE_CRASH_MARKER.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

from jobs.errors import EngineError
from jobs.models import FinishReason
from jobs.registry import ModelConfig
from worker.engine import Chunk, GenerationRequest
from worker.text import TextAssembler

#: A prompt containing this makes the fake engine raise mid-generation (failure-path tests).
FAKE_FAIL_MARKER = "[[fail]]"
#: A prompt containing this SIGKILLs the worker process mid-generation (poison-job tests).
FAKE_CRASH_MARKER = "[[crash]]"


class FakeGeneration:
    def __init__(self, request: GenerationRequest, delay_s: float):
        self._request = request
        self._delay_s = delay_s
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self) -> Iterator[Chunk]:
        sampling = self._request.sampling
        prompt_tokens = len(self._request.prompt.split()) + 1
        assembler = TextAssembler(sampling.stop)
        n = 0
        finish = FinishReason.LENGTH
        while n < sampling.max_tokens:
            if self._cancelled.wait(self._delay_s) if self._delay_s else self._cancelled.is_set():
                finish = FinishReason.CANCELLED
                break
            if FAKE_FAIL_MARKER in self._request.prompt and n == 2:
                raise EngineError("fake engine failed on purpose")
            if FAKE_CRASH_MARKER in self._request.prompt and n == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            n += 1
            text = assembler.feed(f" tok{n - 1}".encode())
            if assembler.stopped:
                yield Chunk(text, n, prompt_tokens, FinishReason.STOP)
                return
            yield Chunk(text, n, prompt_tokens)
        yield Chunk(assembler.flush(), n, prompt_tokens, finish)


class FakeEngine:
    def __init__(self, model: ModelConfig):
        self._delay_s = model.fake_token_delay_s

    def submit(self, request: GenerationRequest) -> FakeGeneration:
        return FakeGeneration(request, self._delay_s)

    def close(self) -> None:
        pass
