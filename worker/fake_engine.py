"""A deterministic fake engine for scale and fault tests, where the model is not the point.

It "generates" `tok0 tok1 ...` (one word per token) at a configurable pace, honours max_tokens,
stop sequences and cancel, and fails on purpose when the prompt contains FAKE_FAIL_MARKER.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from jobs.errors import EngineError
from jobs.models import FinishReason
from jobs.registry import ModelConfig
from worker.engine import Chunk, GenerationRequest
from worker.text import TextAssembler

#: A prompt containing this makes the fake engine raise mid-generation (failure-path tests).
FAKE_FAIL_MARKER = "[[fail]]"


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
