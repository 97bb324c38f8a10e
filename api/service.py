"""The serving layer: turn validated requests into durable, enqueued jobs and batches."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence

from celery import Celery
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.protocol import CreateJobRequest
from jobs.errors import (
    ContextOverflowError,
    InvalidRequestError,
    PayloadTooLargeError,
    TokenqError,
    TooManyJobsError,
    UnavailableError,
)
from jobs.models import Batch, BatchLineError, BatchStatus, Job, JobSpec, JobStatus
from jobs.queue import enqueue
from jobs.registry import Registry
from jobs.settings import Settings
from jobs.store import AsyncStore
from jobs.templates import PromptTemplates
from jobs.tokenizer import Tokenizer, json_schema_grammar, load_tokenizer

#: A batch item: a native job body, a request already converted, or a line that failed to convert.
BatchItem = dict[str, object] | CreateJobRequest | BatchLineError

#: At most this many line errors are copied into the `errors` of a batch that failed outright.
MAX_BATCH_ERRORS = 100


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class JobService:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        templates: PromptTemplates,
        store: AsyncStore,
        celery: Celery,
    ):
        self.settings = settings
        self.registry = registry
        self.templates = templates
        self.store = store
        self.celery = celery
        self._tokenizers: dict[str, Tokenizer] = {}

    def tokenizer(self, alias: str) -> Tokenizer:
        if alias not in self._tokenizers:
            model = self.registry.get(alias)
            self._tokenizers[alias] = load_tokenizer(model, self.settings.data_dir)
        return self._tokenizers[alias]

    def build_job(
        self,
        request: CreateJobRequest,
        tenant: str,
        *,
        default_model: str | None = None,
        batch_id: str | None = None,
        index: int | None = None,
        expires_at: float | None = None,
    ) -> Job:
        """Validate one request against its model (alias, template, context) into a Job."""
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
        if prompt_tokens == 0:
            raise InvalidRequestError("the prompt is empty", param="prompt", code="empty_prompt")
        if prompt_tokens + request.max_tokens > model.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {prompt_tokens} tokens and max_tokens is {request.max_tokens}: "
                f"{prompt_tokens + request.max_tokens} tokens exceed model {model.alias!r}'s "
                f"context of {model.n_ctx} tokens",
                param="max_tokens",
            )
        sampling = request.to_sampling_params()
        if request.json_schema is not None:
            try:
                grammar = json_schema_grammar(request.json_schema or None)
            except Exception as exc:  # the converter raises plain errors on schemas it cannot do
                raise InvalidRequestError(
                    f"json_schema cannot be turned into a grammar: {exc}", param="json_schema"
                ) from exc
            sampling = sampling.model_copy(update={"grammar": grammar})
        if sampling.grammar is not None and (why := tokenizer.grammar_error(sampling.grammar)):
            raise InvalidRequestError(why, param="grammar", code="invalid_grammar")
        spec = JobSpec(
            model=model.alias,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            chat=chat,
            echo=request.echo,
            sampling=sampling,
        )
        return Job(
            id=new_id("job"),
            tenant=tenant,
            status=JobStatus.QUEUED,
            spec=spec,
            batch_id=batch_id,
            custom_id=request.custom_id,
            index=index,
            created_at=time.time(),
            expires_at=expires_at,
        )

    async def admit(self, tenant: str, n: int) -> None:
        """429 when n more jobs would take the tenant past its in-flight limit."""
        inflight = await self.store.inflight(tenant)
        if inflight + n > self.settings.max_inflight:
            raise TooManyJobsError(
                f"{inflight} of your jobs are in flight; {n} more would pass the limit of "
                f"{self.settings.max_inflight}. Retry when some have finished."
            )

    async def submit_job(self, request: CreateJobRequest, tenant: str) -> Job:
        job = self.build_job(request, tenant)
        await self.admit(tenant, 1)
        await self.store.create([job])
        await self.enqueue([job])
        return job

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
        await self.admit(tenant, len(items))
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
        jobs, line_errors = await run_in_threadpool(
            self._build_batch_jobs, items, tenant, batch, item_label, fail_bad_items
        )
        if fail_bad_items:
            batch = self._with_line_errors(batch, jobs, line_errors, model)
        await self.store.create(
            jobs,
            batch,
            line_errors,
            line_errors_ttl_s=self.settings.batch_window_s
            + self.settings.job_time_limit_s
            + self.settings.result_ttl_s,
        )
        try:
            await self.enqueue(jobs)
        except UnavailableError:
            await self.store.mark_batch(batch.id, BatchStatus.FAILED, "failed_at")
            raise
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
        fail_bad_items: bool = False,
    ) -> tuple[list[Job], list[BatchLineError]]:
        jobs = []
        line_errors = []
        for i, item in enumerate(items):
            if isinstance(item, BatchLineError):
                line_errors.append(item)
                continue
            label = item_label.format(i=i, line=i + 1)
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
                        batch_id=batch.id,
                        index=i,
                        expires_at=batch.expires_at,
                    )
                )
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                error = InvalidRequestError(
                    f"{label}: {where + ': ' if where else ''}{first['msg']}",
                    param=label,
                    code="invalid_job",
                )
                if not fail_bad_items:
                    raise error from exc
                line_errors.append(_line_error(i, item, error, where or None))
            except TokenqError as exc:
                if fail_bad_items:
                    line_errors.append(_line_error(i, item, exc, exc.param))
                    continue
                exc.message = f"{label}: {exc.message}"
                exc.args = (exc.message,)
                exc.param = label
                raise
        return jobs, line_errors

    async def enqueue(self, jobs: list[Job]) -> None:
        by_model: dict[str, list[str]] = defaultdict(list)
        for job in jobs:
            by_model[job.spec.model].append(job.id)
        try:
            for model, ids in by_model.items():
                await run_in_threadpool(enqueue, self.celery, model, ids)
        except Exception as exc:  # the broker is Redis too; either way the job was not queued
            raise UnavailableError(f"could not enqueue: {exc}") from exc

    async def cancel_batch(self, batch: Batch) -> None:
        """Mark the batch cancelling and cancel every job (queued ones never start)."""
        await self.store.mark_batch(batch.id, BatchStatus.CANCELLING, "cancelling_at")
        ids = await self.store.batch_job_ids(batch.id)
        chunk = 500
        for start in range(0, len(ids), chunk):
            jobs = await self.store.get_jobs(ids[start : start + chunk])
            await asyncio.gather(*(self.store.cancel(j) for j in jobs if j is not None))


def _line_error(
    index: int, item: BatchItem, error: TokenqError, param: str | None
) -> BatchLineError:
    custom_id = item.custom_id if isinstance(item, CreateJobRequest) else item.get("custom_id")
    return BatchLineError(
        index=index,
        line=index + 1,
        custom_id=custom_id if isinstance(custom_id, str) else None,
        code=error.code or "invalid_request",
        message=error.message,
        param=param,
    )
