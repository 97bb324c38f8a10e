"""The engine interface: submit a job, receive its tokens, cancel it.

The runner only talks to this interface. Two engines implement it: worker/batch_engine.py, which
decodes up to `slots` jobs at once in one llama.cpp context (continuous batching, with prompt
prefixes shared between slots), and worker/fake_engine.py, a deterministic stand-in for tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from jobs.errors import EngineError
from jobs.models import FinishReason, SamplingParams, TokenLogprob


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt: str
    sampling: SamplingParams
    chat: bool = False  #: parse special tokens in the prompt (it came from a chat template)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One step of a generation: new text (may be empty while a character or stop is held)."""

    text: str
    completion_tokens: int  #: tokens generated so far
    prompt_tokens: int
    finish_reason: FinishReason | None = None  #: set on the last chunk only
    logprobs: tuple[TokenLogprob, ...] = ()  #: the tokens of this step, when asked for
    #: prompt tokens copied from another sequence's KV cache instead of evaluated
    cached_tokens: int = 0


class Generation(Protocol):
    """A submitted job: iterate for chunks; the last one carries finish_reason."""

    def __iter__(self) -> Iterator[Chunk]: ...

    def cancel(self) -> None:
        """Stop decoding at the next token; the iterator then ends with finish_reason cancelled."""


class Engine(Protocol):
    def submit(self, request: GenerationRequest) -> Generation: ...

    def close(self) -> None: ...


class PromptTooLongError(EngineError):
    pass
