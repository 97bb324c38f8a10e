"""One job's lifecycle in a worker: claim, generate through the engine, stream, finish once.

A Celery message is a ticket: the runner claims the next job of its model's line under a lease
(LeaseKeeper renews it) and runs it on the shared engine. A job that lost its worker before (a
suspect) runs alone: the runner first lets its running jobs end, so that a job that kills its
worker cannot take healthy jobs down with it again.

Redis errors never drop an attempt's work: events wait in the publisher and the final result is
retried until Redis answers (fencing decides whether it still counts), for up to
REDIS_PATIENCE_S. Past that the attempt is given up and its lease lapses: the reconciler puts
the job back in line.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from jobs.errors import JobTimeLimitError
from jobs.events import EventType
from jobs.models import (
    FinishReason,
    Job,
    JobError,
    JobResult,
    JobStatus,
    PromptTokensDetails,
    Timings,
    TokenLogprob,
    Usage,
)
from jobs.store import Claim, WorkerStore
from worker.engine import Chunk, Engine, Generation, GenerationRequest
from worker.leases import LeaseKeeper, redis_errors
from worker.publisher import Publisher, Stream

logger = logging.getLogger(__name__)

#: How long an attempt that has finished generating waits for Redis to take its events and
#: result before it is given up (and its job re-run by the reconciler).
REDIS_PATIENCE_S = 600.0
#: Retry delays of a claim or a final write that Redis failed: from the first to the longest.
RETRY_S = (0.1, 5.0)


def _token_event(text: str, n: int, logprobs: tuple[TokenLogprob, ...] = ()) -> tuple[str, str]:
    data: dict[str, object] = {"text": text, "n": n}
    if logprobs:
        data["logprobs"] = [lp.model_dump() for lp in logprobs]
    return EventType.TOKEN.value, json.dumps(data, separators=(",", ":"))


class Runner:
    """Runs the jobs of one model's line on one engine, one per task thread."""

    def __init__(
        self,
        store: WorkerStore,
        engine: Engine,
        publisher: Publisher,
        leases: LeaseKeeper,
        time_limit_s: float,
        scheduling: str = "fair",
    ):
        self.store = store
        self.scheduling = scheduling
        self.engine = engine
        self.publisher = publisher
        self.leases = leases
        self.time_limit_s = time_limit_s
        # Claims of this process, one at a time: who may run what depends on what runs.
        self._slots = threading.Condition()
        self._running = 0
        self._alone = False  # a suspect runs: nothing else starts
        self._draining = False  # a suspect waits: nothing else starts until the worker is empty

    def run_next(self) -> JobStatus | None:
        """Claim the next job of the model's line and run it to its final status; None when
        there was nothing to run (a spare ticket) or the attempt was given up."""
        claim = self._claim()
        if claim is None:
            return None
        try:
            return self._generate(claim.job, claim.fence)
        finally:
            with self._slots:
                self._running -= 1
                self._alone = False
                self._slots.notify_all()

    def _claim(self) -> Claim | None:
        delay = RETRY_S[0]
        deadline = time.monotonic() + REDIS_PATIENCE_S
        while True:
            try:
                return self._claim_once()
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise
                redis_errors.add()
                logger.warning("claiming a job failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])

    def _claim_once(self) -> Claim | None:
        model, lease_s = self.leases.model, self.leases.lease_s
        with self._slots:
            self._slots.wait_for(lambda: not self._alone and not self._draining)
            outcome = self.store.claim_next(
                model, lease_s, may_run_suspect=self._running == 0, scheduling=self.scheduling
            )
            if outcome == "drain":
                # A suspect waits: start nothing new, let what runs end, then take it alone.
                self._draining = True
                try:
                    self._slots.wait_for(lambda: self._running == 0)
                    outcome = self.store.claim_next(
                        model, lease_s, may_run_suspect=True, scheduling=self.scheduling
                    )
                finally:
                    self._draining = False
                    self._slots.notify_all()
            if not isinstance(outcome, Claim):
                return None
            self._running += 1
            self._alone = outcome.suspect
            if outcome.suspect:
                logger.warning(
                    "job %s lost its worker before; attempt %d runs alone",
                    outcome.job.id,
                    outcome.fence,
                )
            return outcome

    def _generate(self, job: Job, fence: int) -> JobStatus | None:
        spec = job.spec
        generation = self.engine.submit(
            GenerationRequest(prompt=spec.prompt, sampling=spec.sampling, chat=spec.chat)
        )
        stream = self.publisher.open(job, fence, on_stop=generation.cancel)
        self.leases.hold(job.id, fence, on_lost=stream.fence_out)
        try:
            return self._attempt(job, fence, generation, stream)
        finally:
            self.leases.release(job.id)  # after the final write: a job never runs unleased
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
            self.publisher.send(stream, 0, [_token_event(spec.prompt, 0)], spec.prompt)
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
                    chunk.text,
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
            return self._finish(job, stream, JobStatus.FAILED, result, last.cached_tokens)

        done_at = time.time()
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
        return self._finish(job, stream, status, result, last.cached_tokens)

    def _finish(
        self, job: Job, stream: Stream, status: JobStatus, result: JobResult, cached_tokens: int
    ) -> JobStatus | None:
        """Write the final result once every event is in the log, retrying Redis errors."""
        deadline = time.monotonic() + REDIS_PATIENCE_S
        # every token event is in the log before the final one
        if not stream.wait_flushed(REDIS_PATIENCE_S):
            logger.error(
                "job %s: Redis took no events for %.0fs; giving up", job.id, REDIS_PATIENCE_S
            )
            return None
        delay = RETRY_S[0]
        while not stream.fenced:
            try:
                written = self.store.finish(job, stream.fence, status, result, cached_tokens)
            except Exception as exc:
                if time.monotonic() > deadline:
                    logger.error("job %s: its result could not be written; giving up", job.id)
                    return None
                redis_errors.add()
                logger.warning("writing job %s's result failed (%s); retrying", job.id, exc)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_S[1])
                continue
            if written:
                return status
            break
        logger.warning("job %s: attempt %d no longer owns it; result dropped", job.id, stream.fence)
        return None


def _usage(chunk: Chunk) -> Usage:
    return Usage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=chunk.cached_tokens),
    )
