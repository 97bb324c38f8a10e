"""One job's lifecycle in a worker: claim, generate through the engine, stream, finish once."""

from __future__ import annotations

import json
import logging
import time

from jobs.errors import JobTimeLimitError
from jobs.events import EventType
from jobs.models import (
    FinishReason,
    Job,
    JobError,
    JobResult,
    JobStatus,
    Timings,
    TokenLogprob,
    Usage,
)
from jobs.store import WorkerStore
from worker.engine import Chunk, Engine, Generation, GenerationRequest
from worker.publisher import Publisher, Stream

logger = logging.getLogger(__name__)


def _token_event(text: str, n: int, logprobs: tuple[TokenLogprob, ...] = ()) -> tuple[str, str]:
    data: dict[str, object] = {"text": text, "n": n}
    if logprobs:
        data["logprobs"] = [lp.model_dump() for lp in logprobs]
    return EventType.TOKEN.value, json.dumps(data, separators=(",", ":"))


class Runner:
    """Runs jobs by id on one engine. Thread-safe as far as the engine is."""

    def __init__(
        self, store: WorkerStore, engine: Engine, publisher: Publisher, time_limit_s: float
    ):
        self.store = store
        self.engine = engine
        self.publisher = publisher
        self.time_limit_s = time_limit_s

    def run(self, job_id: str) -> JobStatus | None:
        """Run one job to its final status; None when there was nothing to run."""
        job = self.store.get_job(job_id)
        if job is None:
            logger.warning("job %s has no record (expired or never written); dropping", job_id)
            return None
        fence = self.store.claim(job)
        if fence is None:
            logger.info("job %s needs no run (already final, cancelled or expired)", job_id)
            return None
        return self._generate(job, fence)

    def _generate(self, job: Job, fence: int) -> JobStatus | None:
        spec = job.spec
        generation = self.engine.submit(
            GenerationRequest(prompt=spec.prompt, sampling=spec.sampling, chat=spec.chat)
        )
        stream = self.publisher.open(job, fence, on_stop=generation.cancel)
        try:
            return self._attempt(job, fence, generation, stream)
        finally:
            self.publisher.close_stream(stream)

    def _attempt(
        self, job: Job, fence: int, generation: Generation, stream: Stream
    ) -> JobStatus | None:
        spec = job.spec
        claimed_at = time.time()
        first_token_at: float | None = None
        parts: list[str] = []
        logprobs: list[TokenLogprob] | None = [] if spec.sampling.logprobs is not None else None
        last = Chunk("", 0, spec.prompt_tokens)
        cancelled = False
        if spec.echo:
            parts.append(spec.prompt)
            self.publisher.send(stream, 0, [_token_event(spec.prompt, 0)])
        try:
            for chunk in generation:
                last = chunk
                if not chunk.text and chunk.finish_reason is None:
                    continue  # a held-back piece: nothing to show yet
                if chunk.text:
                    parts.append(chunk.text)
                    first_token_at = first_token_at or time.time()
                if logprobs is not None:
                    logprobs.extend(chunk.logprobs)
                # Handed to the publisher thread: decoding goes on while Redis is written.
                self.publisher.send(
                    stream,
                    chunk.completion_tokens,
                    [_token_event(chunk.text, chunk.completion_tokens, chunk.logprobs)],
                )
                if (stream.cancel_requested or stream.fenced) and not cancelled:
                    cancelled = True  # the generation ends at its next token; drain it
                    generation.cancel()
                if time.time() - claimed_at > self.time_limit_s and not cancelled:
                    generation.cancel()
                    raise JobTimeLimitError(
                        f"the job ran longer than its limit of {self.time_limit_s:.0f}s"
                    )
        except Exception as exc:  # a failing job must not take the worker down
            logger.exception("job %s failed", job.id)
            result = JobResult(
                text="".join(parts),
                finish_reason=FinishReason.ERROR,
                usage=_usage(last),
                error=JobError(type=type(exc).__name__, message=str(exc)),
            )
            stream.wait_flushed()
            self.store.finish(job, fence, JobStatus.FAILED, result)
            return JobStatus.FAILED

        done_at = time.time()
        stream.wait_flushed()  # every token event is in the log before the final one
        if stream.fenced:
            logger.warning("job %s attempt %d lost ownership; its result is dropped", job.id, fence)
            return None
        status = JobStatus.CANCELLED if cancelled else JobStatus.SUCCEEDED
        finish_reason = FinishReason.CANCELLED if cancelled else last.finish_reason
        result = JobResult(
            text="".join(parts),
            finish_reason=finish_reason,
            usage=_usage(last),
            logprobs=logprobs,
            timings=Timings(
                queue_wait_ms=(claimed_at - job.created_at) * 1000,
                time_to_first_token_ms=(first_token_at - claimed_at) * 1000
                if first_token_at
                else None,
                generation_ms=(done_at - claimed_at) * 1000,
                tokens_per_second=(
                    last.completion_tokens / (done_at - first_token_at)
                    if first_token_at and done_at > first_token_at
                    else None
                ),
            ),
        )
        if not self.store.finish(job, fence, status, result):
            logger.warning("job %s already had a final result; attempt %d discarded", job.id, fence)
            return None
        return status


def _usage(chunk: Chunk) -> Usage:
    return Usage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
    )
