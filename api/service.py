"""The one way in: JobService turns validated requests into durable, enqueued jobs and batches,
reads them back (owned by the caller), follows them as they run, and cancels them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from celery import Celery
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.errors import REDIS_OUTAGES, invalid_request
from api.limits import duration, rate_headers
from api.protocol import CreateJobRequest
from api.streaming import EventHub, Finished, JobUpdate, LogFollower, Restarted, TextDelta
from jobs import keys
from jobs.errors import (
    ConflictError,
    ContextOverflowError,
    InvalidRequestError,
    ModelUnavailableError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RateLimitError,
    TokenqError,
    TooManyJobsError,
)
from jobs.events import EventType
from jobs.grammars import grammar_problem, schema_problem
from jobs.models import (
    MAX_TOKENS_CAP,
    Batch,
    BatchLineError,
    BatchStatus,
    Job,
    JobSpec,
    JobStatus,
    Lane,
    Priority,
    StoredFile,
)
from jobs.queue import enqueue
from jobs.registry import ModelConfig, Registry
from jobs.sandbox import GrammarSandbox, SandboxError
from jobs.settings import Settings
from jobs.store import Admission, AsyncStore, QueuePosition
from jobs.templates import PromptTemplates
from jobs.tokenizer import Tokenizer, json_schema_grammar, load_tokenizer

#: A batch item: a native job body, a request already converted, or a line that failed to convert.
BatchItem = dict[str, object] | CreateJobRequest | BatchLineError

#: Batches that will change no more (a retry starts from one of these).
FINAL_BATCH_STATUSES = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
#: At most this many line errors are copied into the `errors` of a batch that failed outright.
MAX_BATCH_ERRORS = 100
#: Jobs read per Redis round trip when a batch's jobs are read back (exports, cancel).
BATCH_PAGE = 500
#: Live worker counts are read from Redis at most this often.
LIVE_WORKERS_TTL_S = 1.0
#: Requests rendered, tokenized and checked at once (the rest wait their turn).
VALIDATION_THREADS = max(1, os.cpu_count() or 1)

T = TypeVar("T")

logger = logging.getLogger(__name__)


#: The ids tokenq hands out: a prefix, then 24 hex digits (new_id; files: `file-<hex>`).
_ID = re.compile(r"(job|batch)_[0-9a-f]{24}|file-[0-9a-f]{24}")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def is_id(value: str, prefix: str) -> bool:
    """Whether `value` has the form of an id tokenq gave out with this prefix. Anything else
    names nothing and is answered 404 before any Redis lookup: a made-up id must never address
    a neighbouring key (`job_x:events`), nor tell another tenant's ids from unknown ones."""
    return _ID.fullmatch(value) is not None and value.startswith(prefix)


class JobService:
    """The one way in: every route of every surface submits, reads, follows and cancels jobs
    through this object (one per API process, built by app.create_app)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        templates: PromptTemplates,
        store: AsyncStore,
        celery: Celery,
        hub: EventHub,
    ):
        self.settings = settings
        self.registry = registry
        self.templates = templates
        self.store = store
        self.celery = celery
        self.hub = hub
        self._tokenizers: dict[str, Tokenizer] = {}
        self._tokenizers_lock = threading.Lock()
        # Rendering, tokenizing and grammar checks run in threads, never on the event loop, and
        # at most this many at once: a flood of heavy requests queues here instead of starving
        # every stream and /healthz.
        self._validation = anyio.CapacityLimiter(VALIDATION_THREADS)
        self._live_workers: tuple[float, dict[str, int]] | None = None
        #: llama.cpp's grammar parse and the JSON-schema converter, in a child process
        self.sandbox = GrammarSandbox()

    @property
    def stream_ping_s(self) -> float:
        """Keep-alive interval of every stream (TOKENQ_STREAM_PING_S)."""
        return self.settings.stream_ping_s

    def tokenizer(self, alias: str) -> Tokenizer:
        with self._tokenizers_lock:  # validation threads may ask for a model's first at once
            if alias not in self._tokenizers:
                model = self.registry.get(alias)
                self._tokenizers[alias] = load_tokenizer(model, self.settings.data_dir)
            return self._tokenizers[alias]

    async def _off_the_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a validation thread (see __init__)."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._validation)

    async def live_workers(self) -> dict[str, int]:
        """Live workers per configured model, from their heartbeats (cached a second)."""
        now = time.monotonic()
        if self._live_workers is None or now - self._live_workers[0] > LIVE_WORKERS_TTL_S:
            counts = await self.store.live_workers(self.registry.models)
            self._live_workers = (now, counts)
        return self._live_workers[1]

    async def queue_position(self, job: Job) -> QueuePosition | None:
        """Where a queued job stands in its model's line; None for one that is not queued."""
        if job.status is not JobStatus.QUEUED:
            return None
        return await self.store.queue_position(job.id, self.settings.scheduling)

    async def unserved_notice(self, job: Job) -> str | None:
        """For a queued job whose model no live worker serves: a line that says so."""
        if job.status != JobStatus.QUEUED or (await self.live_workers()).get(job.spec.model):
            return None
        return f"no worker serves model {job.spec.model!r} now; the job waits until one starts"

    # --- submit ------------------------------------------------------------------------------

    def build_job(
        self,
        request: CreateJobRequest,
        tenant: str,
        *,
        default_model: str | None = None,
        default_max_tokens: int = MAX_TOKENS_CAP,
        batch_id: str | None = None,
        index: int | None = None,
        expires_at: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> Job:
        """Validate one request against its model (alias, template, context) into a Job.

        The prompt is rendered and tokenized here, once. A request without max_tokens gets what
        the model's context leaves after its prompt, up to `default_max_tokens` (each surface's
        own default: OpenAI's 256, Chatchat's whole context).
        """
        model = self.registry.get(request.model or default_model)
        tokenizer = self.tokenizer(model.alias)
        chat = request.messages is not None
        if request.messages is not None:
            prompt = tokenizer.render_chat([m.model_dump() for m in request.messages])
        elif request.template is not None:
            inputs = dict(request.inputs or {})
            if request.prompt is not None:
                inputs.setdefault("input", request.prompt)
            prompt = self.templates.render(request.template, inputs)
        else:
            prompt = request.prompt or ""
        prompt_tokens = tokenizer.count(prompt, special=chat)
        source = "messages" if chat else "prompt"
        if prompt_tokens == 0:
            raise InvalidRequestError("the prompt is empty", param=source, code="empty_prompt")
        max_tokens = request.max_tokens
        if max_tokens is None:
            max_tokens = min(model.n_ctx - prompt_tokens, default_max_tokens)
            if max_tokens < 1:
                raise ContextOverflowError(
                    f"the prompt is {prompt_tokens} tokens and fills model {model.alias!r}'s "
                    f"context of {model.n_ctx} tokens",
                    param=source,
                )
        elif prompt_tokens + max_tokens > model.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                f"{prompt_tokens + max_tokens} tokens exceed model {model.alias!r}'s "
                f"context of {model.n_ctx} tokens",
                param="max_tokens",
            )
        sampling = request.to_sampling_params(max_tokens)
        if sampling.logit_bias and max(sampling.logit_bias) >= tokenizer.n_vocab:
            raise InvalidRequestError(
                f"logit_bias names token {max(sampling.logit_bias)}; model {model.alias!r} has "
                f"tokens 0 to {tokenizer.n_vocab - 1}",
                param="logit_bias",
            )
        grammar_param = "grammar"
        if request.json_schema is not None:
            grammar_param = "json_schema"
            schema_chars = len(json.dumps(request.json_schema))
            if why := schema_problem(request.json_schema, schema_chars):
                raise InvalidRequestError(why, param="json_schema", code="schema_too_complex")
            try:
                grammar = (
                    self.sandbox.schema_to_gbnf(request.json_schema)
                    if request.json_schema
                    else json_schema_grammar(None)
                )
            except (ValueError, SandboxError) as exc:
                raise InvalidRequestError(
                    f"json_schema cannot be turned into a grammar: {exc}", param="json_schema"
                ) from exc
            sampling = sampling.model_copy(update={"grammar": grammar})
        if sampling.grammar is not None:
            # Bounds first: llama.cpp's parser crashes on deep grammars (jobs/grammars.py).
            if why := grammar_problem(sampling.grammar):
                raise InvalidRequestError(why, param=grammar_param, code="grammar_too_complex")
            if why := self._grammar_error(model, sampling.grammar):
                raise InvalidRequestError(why, param=grammar_param, code="invalid_grammar")
        spec = JobSpec(
            model=model.alias,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            chat=chat,
            echo=request.echo,
            sampling=sampling,
        )
        now = time.time()
        if request.deadline_s is not None:
            deadline = now + request.deadline_s
            expires_at = deadline if expires_at is None else min(expires_at, deadline)
        return Job(
            id=new_id("job"),
            tenant=tenant,
            status=JobStatus.QUEUED,
            spec=spec,
            batch_id=batch_id,
            custom_id=request.custom_id,
            index=index,
            lane=Lane.BATCH if batch_id else Lane.INTERACTIVE,
            priority=request.priority or priority,
            created_at=now,
            expires_at=expires_at,
        )

    def _grammar_error(self, model: ModelConfig, gbnf: str) -> str | None:
        """Why the model's llama.cpp would refuse the grammar; parsed in the sandbox (a crash
        there costs the child process, not the API). The fake engine only needs a root rule."""
        if model.gguf is None or model.engine == "fake":
            return None if "root" in gbnf else "the grammar has no `root` rule"
        try:
            return self.sandbox.grammar_error(model.gguf.resolve(self.settings.data_dir), gbnf)
        except SandboxError as exc:
            return f"the grammar cannot be checked: {exc}"

    async def admit(self, tenant: str, n: int) -> Admission:
        """Count n more jobs in flight for the tenant, in one Redis step; 429 when that would
        pass its limit. What is admitted and not created is given back: by release(), or by
        itself when the admission lapses (an API killed mid-submit)."""
        admission = await self.store.admit(tenant, n, self.settings.max_inflight)
        if not isinstance(admission, Admission):
            raise TooManyJobsError(
                f"{admission} of your jobs are in flight; {n} more would pass the limit of "
                f"{self.settings.max_inflight}. Retry when some have finished."
            )
        return admission

    async def _check_queue_depth(self, jobs: list[Job]) -> None:
        """503 overloaded when a model's line is past TOKENQ_MAX_QUEUE_DEPTH (interactive work
        only: a batch waits durably instead)."""
        limit = self.settings.max_queue_depth
        if limit is None:
            return
        for model in {job.spec.model for job in jobs}:
            depth = await self.store.queue_depth(model)
            if depth >= limit:
                raise OverloadedError(
                    f"{depth} jobs wait for model {model!r}, the most it queues for requests "
                    "answered as they run; retry later, or submit a batch",
                    param="model",
                )

    async def _take_rate(self, tenant: str, jobs: list[Job]) -> None:
        """Count the request against the tenant's requests and tokens per minute (the tokens it
        reserves: prompt + max_tokens; a finished job gives back what it did not generate);
        429 past either, with OpenAI's x-ratelimit-* headers either way."""
        limits = self.settings.tenant_limits.get(tenant) or self.settings.tenant_limits.get("*")
        if limits is None or (limits.rpm is None and limits.tpm is None):
            return
        tokens = sum(job.spec.prompt_tokens + job.spec.sampling.max_tokens for job in jobs)
        verdict = await self.store.take_rate(tenant, limits.rpm, limits.tpm, tokens)
        headers: dict[str, str] = {}
        for what, cap, left, reset in (
            ("requests", limits.rpm, verdict.requests_left, verdict.requests_reset_s),
            ("tokens", limits.tpm, verdict.tokens_left, verdict.tokens_reset_s),
        ):
            if cap is not None:
                headers[f"x-ratelimit-limit-{what}"] = str(cap)
                headers[f"x-ratelimit-remaining-{what}"] = str(int(left))
                headers[f"x-ratelimit-reset-{what}"] = duration(reset)
        rate_headers().update(headers)
        if verdict.admitted:
            return
        if limits.tpm is not None and tokens > limits.tpm:
            message = (
                f"the request reserves {tokens} tokens (prompt + max_tokens), more than your "
                f"limit of {limits.tpm} a minute: lower max_tokens"
            )
        else:
            message = (
                f"rate limit reached ({limits.rpm or 'unlimited'} requests and "
                f"{limits.tpm or 'unlimited'} tokens a minute); retry in "
                f"{verdict.retry_after_s:.1f}s"
            )
        retry = max(1, math.ceil(min(verdict.retry_after_s, 60)))
        raise RateLimitError(message, retry_after_s=retry, headers=headers)

    async def submit(
        self,
        requests: Sequence[CreateJobRequest],
        tenant: str,
        *,
        default_max_tokens: int = MAX_TOKENS_CAP,
        answer_waits: bool = False,
        notify: str | None = None,
    ) -> list[Job]:
        """Jobs that answer one request (OpenAI's n choices are several): all are validated
        first (one bad request rejects them all), then written and put in line in one step,
        then a worker is told.

        `answer_waits`: the caller holds its request open for the answer (the compatibility
        surfaces), so a model that no live worker serves is 503 at once instead of a request
        that never returns. Native jobs are accepted either way and wait durably.
        `notify`: the webhook family the jobs' final statuses are announced in ("response").
        """
        jobs = await self._off_the_loop(self._build_jobs, requests, tenant, default_max_tokens)
        if notify is not None:
            jobs = [job.model_copy(update={"notify": notify}) for job in jobs]
        await self._check_queue_depth(jobs)
        await self._take_rate(tenant, jobs)
        if answer_waits:
            live = await self.live_workers()
            for model in {job.spec.model for job in jobs}:
                if not live.get(model):
                    raise ModelUnavailableError(
                        f"no worker serves model {model!r} now; retry later or pick another "
                        "of GET /v1/models",
                        param="model",
                    )
        admission = await self.admit(tenant, len(jobs))
        try:
            await self.store.create(admission, jobs)
        except BaseException:
            await self._release(admission)
            raise
        await self.send_tickets(jobs)
        return jobs

    def _build_jobs(
        self, requests: Sequence[CreateJobRequest], tenant: str, default_max_tokens: int
    ) -> list[Job]:
        return [
            self.build_job(request, tenant, default_max_tokens=default_max_tokens)
            for request in requests
        ]

    async def submit_batch(
        self,
        items: Sequence[BatchItem],
        tenant: str,
        *,
        model: str | None,
        metadata: dict[str, str] | None,
        item_label: str = "jobs[{i}]",
        batch_id: str | None = None,
        endpoint: str = "/v1/jobs",
        input_file_id: str | None = None,
        fail_bad_items: bool = False,
        default_max_tokens: int = MAX_TOKENS_CAP,
        priority: Priority | None = None,
    ) -> Batch:
        """Validate every item first, then write, then enqueue.

        A bad item rejects the whole batch, unless `fail_bad_items` (OpenAI's Batch API): then it
        becomes a failed request of the batch, and a batch with no good item is `failed`.
        """
        if len(items) > self.settings.max_batch_jobs:
            raise PayloadTooLargeError(
                f"{len(items)} jobs in one batch; the limit is {self.settings.max_batch_jobs}",
                param="jobs",
            )
        if model is not None:
            self.registry.get(model)
        admission = await self.admit(tenant, len(items))
        try:
            now = time.time()
            batch = Batch(
                id=batch_id or new_id("batch"),
                tenant=tenant,
                model=model or self.registry.default,
                status=BatchStatus.IN_PROGRESS,
                endpoint=endpoint,
                total=len(items),
                created_at=now,
                in_progress_at=now,
                expires_at=now + self.settings.batch_window_s,
                metadata=metadata,
                input_file_id=input_file_id,
            )
            jobs, line_errors = await self._off_the_loop(
                self._build_batch_jobs,
                items,
                tenant,
                batch,
                item_label,
                fail_bad_items,
                default_max_tokens,
                priority or Priority.NORMAL,
            )
            if fail_bad_items:
                batch = self._with_line_errors(batch, jobs, line_errors, model)
            await self.store.create(
                admission,
                jobs,
                batch,
                line_errors,
                line_errors_ttl_s=self.settings.batch_window_s
                + self.settings.job_time_limit_s
                + self.settings.result_ttl_s,
            )
        except BaseException:
            await self._release(admission)
            raise
        await self.send_tickets(jobs)
        return batch

    @staticmethod
    def _with_line_errors(
        batch: Batch, jobs: list[Job], line_errors: list[BatchLineError], model: str | None
    ) -> Batch:
        """Count bad lines as failed; with no good line at all, the batch failed outright."""
        update: dict[str, object] = {"failed": len(line_errors)}
        if jobs and model is None:
            update["model"] = jobs[0].spec.model
        if not jobs:
            update.update(
                status=BatchStatus.FAILED,
                in_progress_at=None,
                failed_at=batch.created_at,
                errors=line_errors[:MAX_BATCH_ERRORS]
                or [
                    BatchLineError(index=0, code="empty_batch", message="the file has no requests")
                ],
            )
        return batch.model_copy(update=update)

    def _build_batch_jobs(
        self,
        items: Sequence[BatchItem],
        tenant: str,
        batch: Batch,
        item_label: str,
        fail_bad_items: bool,
        default_max_tokens: int,
        priority: Priority,
    ) -> tuple[list[Job], list[BatchLineError]]:
        jobs = []
        line_errors = []
        for i, item in enumerate(items):
            if isinstance(item, BatchLineError):
                line_errors.append(item)
                continue
            try:
                request = (
                    item
                    if isinstance(item, CreateJobRequest)
                    else CreateJobRequest.model_validate(item)
                )
                jobs.append(
                    self.build_job(
                        request,
                        tenant,
                        default_model=batch.model,
                        default_max_tokens=default_max_tokens,
                        batch_id=batch.id,
                        index=i,
                        expires_at=batch.expires_at,
                        priority=priority,
                    )
                )
            except (ValidationError, TokenqError) as exc:
                error = (
                    invalid_request(exc.errors(), code="invalid_job")
                    if isinstance(exc, ValidationError)
                    else exc
                )
                if fail_bad_items:
                    line_errors.append(_line_error(i, item, error))
                    continue
                raise error.with_label(item_label.format(i=i, line=i + 1)) from exc
        return jobs, line_errors

    async def _release(self, admission: Admission) -> None:
        """Give an admission back; if Redis is what failed, it lapses by itself instead."""
        with contextlib.suppress(*REDIS_OUTAGES):
            await self.store.release(admission)

    async def send_tickets(self, jobs: list[Job]) -> None:
        """Tell the models' workers that jobs wait: one Celery message (a ticket) per job.

        The jobs are already durable and in line; if this fails, the reconciler sends the
        missing tickets within two of its rounds, so the request still succeeds.
        """
        by_model: Counter[str] = Counter(job.spec.model for job in jobs)
        try:
            for model, count in by_model.items():
                await run_in_threadpool(enqueue, self.celery, model, count)
        except Exception:  # the broker is Redis too
            logger.warning("tickets for %d job(s) not sent; the reconciler will", len(jobs))

    # --- read and follow -------------------------------------------------------------------

    async def owned_job(self, job_id: str, tenant: str) -> Job:
        """The job if it exists and belongs to the caller; another tenant's job is 404 too."""
        job = await self.store.get_job(job_id) if is_id(job_id, "job_") else None
        if job is None or job.tenant != tenant:
            raise NotFoundError(f"no job {job_id[:100]!r}", param="job_id")
        return job

    async def owned_batch(self, batch_id: str, tenant: str) -> Batch:
        batch = await self.store.get_batch(batch_id) if is_id(batch_id, "batch_") else None
        if batch is None or batch.tenant != tenant:
            raise NotFoundError(f"no batch {batch_id[:100]!r}", param="batch_id")
        return batch

    async def owned_file(self, file_id: str, tenant: str, param: str = "file_id") -> StoredFile:
        """The uploaded file if it exists and belongs to the caller; another tenant's is 404."""
        record = await self.store.get_file(file_id) if is_id(file_id, "file-") else None
        if record is None or record.tenant != tenant:
            raise NotFoundError(f"no file {file_id[:100]!r}", param=param)
        return record

    def job_events(self, job_id: str, after_seq: int = 0) -> LogFollower:
        """The job's event log after `after_seq`, live, until its final event (at once when
        after_seq is at or past it); the log is re-read every stream ping interval."""
        return self._follow(keys.job_events(job_id), keys.job_channel(job_id), after_seq)

    def batch_events(self, batch_id: str, after_seq: int = 0) -> LogFollower:
        """The batch's event log, as job_events()."""
        return self._follow(keys.batch_events(batch_id), keys.batch_channel(batch_id), after_seq)

    def _follow(self, stream: str, channel: str, after_seq: int) -> LogFollower:
        return LogFollower(self.hub, self.store, stream, channel, after_seq, self.stream_ping_s)

    async def updates(self, job_id: str, after_seq: int = 0) -> AsyncIterator[JobUpdate]:
        """A job's text as it grows, then its final record (resumable with after_seq; a reader
        already past the final event gets the final record at once)."""
        async with contextlib.aclosing(aiter(self.job_events(job_id, after_seq))) as events:
            async for event in events:
                if event.type == EventType.TOKEN:
                    data = event.data
                    yield TextDelta(job_id, data["text"], data["n"], data.get("logprobs"))
                elif event.type == EventType.RESET:
                    yield Restarted(job_id, event.data["attempt"])
        # Past the final event, or a log that ended at or before after_seq (or expired).
        job = await self.store.get_job(job_id)
        if job is None or not job.status.terminal:
            raise NotFoundError(f"job {job_id} expired while it was being read")
        yield Finished(job)

    async def wait(self, job_id: str) -> Job:
        """The job's final record, once it has one."""
        async for update in self.updates(job_id):
            if isinstance(update, Finished):
                return update.job
        raise NotFoundError(f"job {job_id} ended without a final event")

    async def batch_jobs(self, batch: Batch) -> AsyncIterator[list[Job]]:
        """The batch's jobs in input order, a page at a time (expired records left out)."""
        start = 0
        while True:
            ids = await self.store.batch_job_ids(batch.id, start, start + BATCH_PAGE - 1)
            if not ids:
                return
            start += len(ids)
            yield [job for job in await self.store.get_jobs(ids) if job is not None]

    async def retry_batch(self, batch: Batch) -> Batch:
        """A new batch of the finished batch's failed and expired jobs: the same requests
        (already validated), custom_ids and priorities, in their order; 409 when the batch is
        still running or nothing of it failed. Lines that never became jobs (bad input) are not
        retried: they would fail the same way."""
        if batch.status not in FINAL_BATCH_STATUSES:
            raise ConflictError(
                f"batch {batch.id} is {batch.status}; retry it once it has finished",
                code="batch_not_finished",
            )
        again = [
            job
            async for page in self.batch_jobs(batch)
            for job in page
            if job.status in (JobStatus.FAILED, JobStatus.EXPIRED)
        ]
        if not again:
            raise ConflictError(
                f"batch {batch.id} has no failed or expired job to retry", code="nothing_to_retry"
            )
        admission = await self.admit(batch.tenant, len(again))
        try:
            now = time.time()
            retry = Batch(
                id=new_id("batch"),
                tenant=batch.tenant,
                model=batch.model,
                status=BatchStatus.IN_PROGRESS,
                endpoint=batch.endpoint,
                total=len(again),
                created_at=now,
                in_progress_at=now,
                expires_at=now + self.settings.batch_window_s,
                metadata=batch.metadata,
                input_file_id=batch.input_file_id,
                retry_of=batch.id,
            )
            jobs = [
                Job(
                    id=new_id("job"),
                    tenant=batch.tenant,
                    status=JobStatus.QUEUED,
                    spec=job.spec,
                    batch_id=retry.id,
                    custom_id=job.custom_id,
                    index=i,
                    lane=Lane.BATCH,
                    priority=job.priority,
                    created_at=now,
                    expires_at=retry.expires_at,
                )
                for i, job in enumerate(again)
            ]
            await self.store.create(admission, jobs, retry, [])
        except BaseException:
            await self._release(admission)
            raise
        await self.send_tickets(jobs)
        return retry

    # --- cancel ------------------------------------------------------------------------------

    async def cancel(self, job: Job) -> str:
        """Queued: cancelled at once, never starts; running: stops at its next token. Returns
        what happened: "cancelled", "cancelling", or the final status it already had."""
        return await self.store.cancel(job)

    async def cancel_batch(self, batch: Batch) -> None:
        """Mark the batch cancelling and cancel every job (queued ones never start)."""
        await self.store.mark_batch(batch.id, BatchStatus.CANCELLING, "cancelling_at")
        async for jobs in self.batch_jobs(batch):
            await asyncio.gather(*(self.store.cancel(job) for job in jobs))


def _line_error(index: int, item: BatchItem, error: TokenqError) -> BatchLineError:
    custom_id = (
        item.custom_id if isinstance(item, CreateJobRequest) else dict(item).get("custom_id")
    )
    return BatchLineError(
        index=index,
        line=index + 1,
        custom_id=custom_id if isinstance(custom_id, str) else None,
        code=error.code or "invalid_request",
        message=error.message,
        param=error.param,
    )
