"""A llama.cpp engine that runs one job at a time (llama-cpp-python's high-level Llama)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp

from jobs.models import FinishReason
from jobs.registry import ModelConfig
from jobs.tokenizer import tokenize_prompt
from worker.engine import Chunk, GenerationRequest, PromptTooLongError
from worker.text import TextAssembler


def load_llama(model: ModelConfig, data_dir: Path) -> llama_cpp.Llama:
    assert model.gguf is not None, "a llama engine needs a gguf source"
    return llama_cpp.Llama(
        model_path=str(model.gguf.resolve(data_dir)),
        n_ctx=model.n_ctx,
        n_batch=model.n_batch,
        n_gpu_layers=model.n_gpu_layers,
        n_threads=model.threads,
        n_threads_batch=model.threads,
        verbose=False,
    )


class LlamaGeneration:
    def __init__(self, engine: LlamaEngine, request: GenerationRequest):
        self._engine = engine
        self._request = request
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self) -> Iterator[Chunk]:
        with self._engine.lock:  # one sequence at a time on this context
            yield from self._generate()

    def _generate(self) -> Iterator[Chunk]:
        llm = self._engine.llm
        sampling = self._request.sampling
        prompt = tokenize_prompt(llm, self._request.prompt, special=self._request.chat)
        if len(prompt) + sampling.max_tokens > llm.n_ctx():
            raise PromptTooLongError(
                f"prompt of {len(prompt)} tokens + max_tokens {sampling.max_tokens} "
                f"exceeds the context of {llm.n_ctx()}"
            )
        llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(32))
        assembler = TextAssembler(sampling.stop)
        history = list(prompt)
        n = 0
        finish = FinishReason.LENGTH
        vocab = llm._model.vocab  # noqa: SLF001 - the EOG test needs the raw vocab
        for token in llm.generate(
            prompt,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
            reset=True,
        ):
            if self._cancelled.is_set():
                finish = FinishReason.CANCELLED
                break
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = FinishReason.STOP
                break
            n += 1
            text = assembler.feed(llm.detokenize([token], prev_tokens=history))
            history.append(token)
            if assembler.stopped:
                yield Chunk(text, n, len(prompt), FinishReason.STOP)
                return
            if n >= sampling.max_tokens:
                yield Chunk(text + assembler.flush(), n, len(prompt), FinishReason.LENGTH)
                return
            yield Chunk(text, n, len(prompt))
        yield Chunk(assembler.flush(), n, len(prompt), finish)


class LlamaEngine:
    """One llama.cpp context; generations run one after another (a lock serialises them)."""

    def __init__(self, model: ModelConfig, data_dir: Path):
        self.model = model
        self.llm = load_llama(model, data_dir)
        self.lock = threading.Lock()

    def submit(self, request: GenerationRequest) -> LlamaGeneration:
        return LlamaGeneration(self, request)

    def close(self) -> None:
        self.llm.close()
