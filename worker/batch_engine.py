"""Continuous batching over llama.cpp's C API: one context, many sequences, one decode per step.

A decode thread owns the llama.cpp context. Each step it
  1. admits waiting requests into free sequence slots (a shared prompt prefix is copied from a
     running sequence's KV cells with llama_memory_seq_cp instead of being evaluated again),
  2. builds one llama_batch: the last sampled token of every generating sequence, then as many
     prompt tokens of newcomers as the batch has room for (prompt processing shares the step),
  3. decodes it once, samples each sequence with its own llama.cpp sampler chain, and hands
     each sequence's new text to its Generation,
  4. frees the slot and KV cells of every finished or cancelled sequence at once.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals as internals

from jobs.errors import EngineError
from jobs.grammars import grammar_problem
from jobs.llama_log import route_llama_logs
from jobs.models import FinishReason, SamplingParams, TokenLogprob
from jobs.registry import ModelConfig
from jobs.tokenizer import tokenize_prompt
from worker.engine import Chunk, GenerationRequest, PromptTooLongError
from worker.text import TextAssembler

logger = logging.getLogger(__name__)

#: A shared prefix shorter than this is evaluated again rather than copied (a copy moves the
#: donor's whole KV stream, a few ms).
MIN_SHARED_PREFIX = 32
#: llama-cpp-python's repeat-penalty window (Llama(last_n_tokens_size=64)); kept equal so that
#: sampling matches its high-level API.
PENALTY_LAST_N = 64


class EngineClosedError(EngineError):
    pass


class BatchGeneration:
    """A submitted request: iterate for chunks (blocking); cancel from any thread."""

    def __init__(self, engine: BatchEngine, request: GenerationRequest):
        self._engine = engine
        self.request = request
        self.chunks: queue.SimpleQueue[Chunk | BaseException] = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.submitted = False

    def cancel(self) -> None:
        self.cancelled.set()
        self._engine.wake()

    def __iter__(self) -> Iterator[Chunk]:
        if not self.submitted:
            self.submitted = True
            self._engine.enqueue(self)
        while True:
            item = self.chunks.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return


@dataclass
class _Sequence:
    """A generation occupying one slot (llama.cpp sequence id = slot)."""

    slot: int
    generation: BatchGeneration
    prompt: list[int]
    sampler: internals.LlamaSampler
    assembler: TextAssembler
    max_tokens: int
    logprobs: int | None = None  #: top alternatives to report per token (None: no logprobs)
    n_past: int = 0  #: tokens of this sequence already in the KV cache
    cached: int = 0  #: of its prompt, tokens copied from a donor's KV cache
    pending: deque[int] = field(default_factory=deque)  #: tokens to evaluate next
    generated: int = 0
    batch_index: int = -1  #: where its logits are in the current batch (-1: none this step)
    #: (donor, n): copy the donor's first n prompt cells once it has evaluated them
    wait_for: tuple[_Sequence, int] | None = None

    @property
    def prompt_done(self) -> bool:
        return self.n_past >= len(self.prompt)


def build_sampler(model: internals.LlamaModel, sampling: SamplingParams) -> internals.LlamaSampler:
    """The same chain llama-cpp-python's Llama._init_sampler builds, per sequence."""
    sampler = internals.LlamaSampler()
    if sampling.logit_bias:  # first, as llama.cpp's own chain has it: every later step sees it
        if max(sampling.logit_bias) >= model.n_vocab():  # the API refuses these too
            sampler.close()
            raise EngineError(f"logit_bias names a token beyond the {model.n_vocab()} of the model")
        sampler.add_logit_bias(model.n_vocab(), sampling.logit_bias)
    sampler.add_penalties(
        n_vocab=model.n_vocab(),
        penalty_last_n=PENALTY_LAST_N,
        penalty_repeat=sampling.repeat_penalty,
        penalty_freq=sampling.frequency_penalty,
        penalty_present=sampling.presence_penalty,
    )
    if sampling.grammar is not None:
        if why := grammar_problem(sampling.grammar):  # the API refuses these; so does the worker
            sampler.close()
            raise EngineError(why)
        grammar = llama_cpp.llama_sampler_init_grammar(
            model.vocab, sampling.grammar.encode(), b"root"
        )
        if not grammar:
            sampler.close()
            raise EngineError("the grammar does not parse")
        llama_cpp.llama_sampler_chain_add(sampler.sampler, grammar)
    if sampling.temperature == 0.0:
        sampler.add_greedy()
    else:
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
        sampler.add_top_k(sampling.top_k)
        sampler.add_typical(1.0, 1)
        sampler.add_top_p(sampling.top_p, 1)
        sampler.add_min_p(sampling.min_p, 1)
        sampler.add_temp(sampling.temperature)
        sampler.add_dist(seed)
    return sampler


class BatchEngine:
    """llama.cpp with `slots` sequences decoded together; each slot has `n_ctx` tokens of KV."""

    def __init__(self, config: ModelConfig, data_dir: Path):
        assert config.gguf is not None, "a llama engine needs a gguf source"
        route_llama_logs()
        self.config = config
        self.slots = config.slots
        self.n_ctx_slot = config.n_ctx
        self.n_batch = max(config.n_batch, config.slots)
        self._piece = ctypes.create_string_buffer(256)
        self._waiting: queue.SimpleQueue[BatchGeneration] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self._active: dict[int, _Sequence] = {}
        self.stats = {"prompt_tokens_evaluated": 0, "prompt_tokens_shared": 0, "steps": 0}
        # Everything that touches llama.cpp runs on the decode thread, loading included: once a
        # second thread has run ggml's OpenMP regions there are two thread teams, and decoding
        # on 2 cores went 2.5x slower (measured: 16-token prompt + 8 tokens, 105 -> 280 ms).
        loaded: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(data_dir, loaded), name="tokenq-decode", daemon=True
        )
        self._thread.start()
        error = loaded.get()
        if error is not None:
            raise error

    def _load(self, data_dir: Path) -> None:
        config = self.config
        assert config.gguf is not None
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = config.n_gpu_layers
        self.model = internals.LlamaModel(
            path_model=str(config.gguf.resolve(data_dir)), params=model_params, verbose=False
        )
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = self.n_ctx_slot * self.slots
        ctx_params.n_batch = self.n_batch
        ctx_params.n_ubatch = self.n_batch
        ctx_params.n_seq_max = self.slots
        # A KV stream per sequence (n_ctx each): faster than one unified buffer, and each
        # sequence's attention sees the same KV layout as a single-sequence context would, so
        # greedy output matches llama-cpp-python's even with flash attention.
        ctx_params.kv_unified = False
        ctx_params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if config.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        threads = config.threads or 0
        if threads:
            ctx_params.n_threads = threads
            ctx_params.n_threads_batch = threads
        self.context = internals.LlamaContext(model=self.model, params=ctx_params, verbose=False)
        self.memory = llama_cpp.llama_get_memory(self.context.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)

    def _run(self, data_dir: Path, loaded: queue.SimpleQueue[BaseException | None]) -> None:
        try:
            self._load(data_dir)
        except BaseException as exc:
            loaded.put(exc)
            return
        loaded.put(None)
        self._loop()

    # --- the Engine interface ------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> BatchGeneration:
        return BatchGeneration(self, request)

    def close(self) -> None:
        self._closed = True
        self.wake()
        self._thread.join(timeout=30)
        llama_cpp.llama_batch_free(self.batch)
        self.context.close()
        self.model.close()

    # --- used by BatchGeneration ---------------------------------------------------------

    def enqueue(self, generation: BatchGeneration) -> None:
        if self._closed:
            raise EngineClosedError("the engine is shut down")
        self._waiting.put(generation)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def tokenize(self, request: GenerationRequest) -> list[int]:
        return tokenize_prompt(_TokenizerView(self.model), request.prompt, special=request.chat)

    # --- the decode thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._admit()
            self._drop_cancelled()
            if not self._active:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self._step()
            except Exception as exc:  # a failed decode fails every sequence in it, not the worker
                logger.exception("decode step failed")
                for seq in list(self._active.values()):
                    seq.generation.chunks.put(EngineError(f"decode failed: {exc}"))
                    self._free(seq)
        for seq in list(self._active.values()):
            seq.generation.chunks.put(EngineClosedError("the engine shut down"))

    def _admit(self) -> None:
        free = [s for s in range(self.slots) if s not in self._active]
        while free:
            try:
                generation = self._waiting.get_nowait()
            except queue.Empty:
                return
            if generation.cancelled.is_set():
                generation.chunks.put(Chunk("", 0, 0, FinishReason.CANCELLED))
                continue
            request = generation.request
            try:
                prompt = self.tokenize(request)
                if len(prompt) + request.sampling.max_tokens > self.n_ctx_slot:
                    raise PromptTooLongError(
                        f"the prompt is {len(prompt)} tokens and max_tokens is "
                        f"{request.sampling.max_tokens}: more than the {self.n_ctx_slot} tokens "
                        "of context a slot has"
                    )
                sampler = build_sampler(self.model, request.sampling)
            except Exception as exc:
                generation.chunks.put(exc)
                continue
            slot = free.pop(0)
            seq = _Sequence(
                slot=slot,
                generation=generation,
                prompt=prompt,
                sampler=sampler,
                assembler=TextAssembler(request.sampling.stop),
                max_tokens=request.sampling.max_tokens,
                logprobs=request.sampling.logprobs,
            )
            self._plan_prefix_share(seq)
            self._active[slot] = seq

    def _plan_prefix_share(self, seq: _Sequence) -> None:
        """Find the longest prompt prefix another sequence has (or is about to have) in its KV
        cells; copy it now, or once that sequence has evaluated it. Otherwise evaluate it all."""
        best, donor = 0, None
        limit = len(seq.prompt) - 1  # the last prompt token is evaluated for its logits
        for other in self._active.values():
            if other.wait_for is not None:
                continue
            n, bound = 0, min(limit, len(other.prompt))
            while n < bound and other.prompt[n] == seq.prompt[n]:
                n += 1
            if n > best:
                best, donor = n, other
        if donor is not None and best >= MIN_SHARED_PREFIX:
            seq.wait_for = (donor, best)
            self._resolve_wait(seq)
        else:
            seq.pending.extend(seq.prompt)

    def _resolve_wait(self, seq: _Sequence) -> None:
        assert seq.wait_for is not None
        donor, n = seq.wait_for
        if self._active.get(donor.slot) is not donor:  # the donor left: evaluate it all
            seq.wait_for = None
            seq.pending.extend(seq.prompt)
        elif donor.n_past >= n:
            # Across KV streams llama.cpp copies whole sequences: copy, then drop the tail.
            llama_cpp.llama_memory_seq_cp(self.memory, donor.slot, seq.slot, -1, -1)
            llama_cpp.llama_memory_seq_rm(self.memory, seq.slot, n, -1)
            seq.wait_for = None
            seq.n_past = seq.cached = n
            seq.pending.extend(seq.prompt[n:])
            self.stats["prompt_tokens_shared"] += n

    def _drop_cancelled(self) -> None:
        for seq in list(self._active.values()):
            if seq.generation.cancelled.is_set():
                self._finish(seq, "", FinishReason.CANCELLED)

    def _step(self) -> None:
        for seq in list(self._active.values()):
            if seq.wait_for is not None:
                self._resolve_wait(seq)
        batch = self.batch
        n = 0
        # Generating sequences first: one token each, each wants logits.
        for seq in self._active.values():
            seq.batch_index = -1
            if seq.prompt_done and seq.pending:
                n = self._add(n, seq.pending.popleft(), seq, logits=True)
        # Then prompt tokens of newcomers, as many as fit; logits only for a prompt's last token.
        for seq in self._active.values():
            while seq.pending and not seq.prompt_done and n < self.n_batch:
                token = seq.pending.popleft()
                last = seq.n_past == len(seq.prompt) - 1
                n = self._add(n, token, seq, logits=last)
                self.stats["prompt_tokens_evaluated"] += 1
        if n == 0:
            return
        batch.n_tokens = n
        status = llama_cpp.llama_decode(self.context.ctx, batch)
        if status != 0:
            raise EngineError(f"llama_decode returned {status}")
        self.stats["steps"] += 1
        for seq in list(self._active.values()):
            if seq.batch_index >= 0:
                self._sample(seq)

    def _add(self, n: int, token: int, seq: _Sequence, *, logits: bool) -> int:
        batch = self.batch
        batch.token[n] = token
        batch.pos[n] = seq.n_past
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq.slot
        batch.logits[n] = logits
        if logits:
            seq.batch_index = n
        seq.n_past += 1
        return n + 1

    def _sample(self, seq: _Sequence) -> None:
        ctx = self.context.ctx
        token = llama_cpp.llama_sampler_sample(seq.sampler.sampler, ctx, seq.batch_index)
        if llama_cpp.llama_vocab_is_eog(self.model.vocab, token):
            self._finish(seq, "", FinishReason.STOP)
            return
        seq.generated += 1
        piece = self._token_bytes(token)
        logprobs = () if seq.logprobs is None else (self._logprobs(seq, token, piece),)
        text = seq.assembler.feed(piece)
        if seq.assembler.stopped:
            self._finish(seq, text, FinishReason.STOP, logprobs)
        elif seq.generated >= seq.max_tokens:
            self._finish(seq, text + seq.assembler.flush(), FinishReason.LENGTH, logprobs)
        else:
            seq.pending.append(token)
            seq.generation.chunks.put(
                Chunk(text, seq.generated, len(seq.prompt), None, logprobs, seq.cached)
            )

    def _logprobs(self, seq: _Sequence, token: int, piece: bytes) -> TokenLogprob:
        """log-softmax of the raw logits at this sequence's output row (before any sampler)."""
        n_vocab = self.model.n_vocab()
        row = llama_cpp.llama_get_logits_ith(self.context.ctx, seq.batch_index)
        logits = np.ctypeslib.as_array(row, shape=(n_vocab,)).astype(np.float64)
        logits -= logits.max()
        logp = logits - np.log(np.exp(logits).sum())
        top: list[tuple[str, float]] = []
        if seq.logprobs:
            best = np.argpartition(-logp, seq.logprobs)[: seq.logprobs]
            best = best[np.argsort(-logp[best])]
            top = [(self._text(int(t)), float(logp[t])) for t in best]
        return TokenLogprob(token=self._text(token), logprob=float(logp[token]), top_logprobs=top)

    def _text(self, token: int) -> str:
        return self._token_bytes(token).decode("utf-8", "replace")

    def _token_bytes(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.model.vocab, token, self._piece, 256, 0, False)
        return self._piece.raw[: max(n, 0)]

    def _finish(
        self,
        seq: _Sequence,
        text: str,
        reason: FinishReason,
        logprobs: tuple[TokenLogprob, ...] = (),
    ) -> None:
        if reason != FinishReason.LENGTH:
            text += seq.assembler.flush()
        seq.generation.chunks.put(
            Chunk(text, seq.generated, len(seq.prompt), reason, logprobs, seq.cached)
        )
        self._free(seq)

    def _free(self, seq: _Sequence) -> None:
        """Give the slot back and drop its KV cells (shared cells stay for their other owners)."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
        seq.sampler.close()
        del self._active[seq.slot]


class _TokenizerView:
    """What tokenize_prompt needs, over a bare LlamaModel."""

    def __init__(self, model: internals.LlamaModel):
        self._model = model

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        return list(self._model.tokenize(text, add_bos, special))

    def token_bos(self) -> int:
        return self._model.token_bos()
