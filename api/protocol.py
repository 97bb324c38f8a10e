"""Wire models of tokenq's native API (/v1/jobs, /v1/batches)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from jobs.errors import InvalidRequestError
from jobs.models import (
    MAX_TOKENS_CAP,
    Batch,
    BatchStatus,
    Grammar,
    Job,
    JobError,
    JobStatus,
    Lane,
    MaxTokens,
    Priority,
    RequestCounts,
    Samplers,
    SamplingParams,
    Timings,
    TokenLogprob,
    TopLogprobs,
    Usage,
)
from jobs.store import QueuePosition

#: Longest prompt text accepted (characters); the context check does the real bounding.
MAX_PROMPT_CHARS = 1_000_000
#: The longest deadline a job may carry: 30 days.
MAX_DEADLINE_S = 30 * 24 * 3600

#: A batch's metadata, as OpenAI bounds it: up to 16 string pairs.
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]
metadata_adapter: TypeAdapter[dict[str, str]] = TypeAdapter(Metadata)


def load_json(data: bytes | str) -> Any:
    """JSON as the API reads bodies and lines it parses itself: UTF-8 only, nested at most 200
    deep, no lone surrogates (they cannot be stored). Raises ValueError naming line and column."""
    return pydantic_core.from_json(data)


def utf8_lines(data: bytes) -> list[str]:
    """The lines of an uploaded text; 400 unless it is UTF-8."""
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"the upload is not UTF-8 text (byte {exc.start})", code="invalid_encoding"
        ) from exc


def line_json_error(exc: ValueError) -> str:
    """load_json's message about one line: its column (the line number is the caller's)."""
    return str(exc).replace("at line 1 column", "at column")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class CreateJobRequest(Samplers):
    """One completion job: a prompt, chat messages, or a named template with inputs."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="Model alias (configs/models.yaml); default if unset."
    )
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=1000)
    template: str | None = Field(
        None, description="Named prompt template (configs/templates.yaml)."
    )
    inputs: dict[str, str] | None = Field(None, description="Template variables.")
    max_tokens: MaxTokens | None = Field(
        128,
        description=f"Tokens to generate; null: what the context leaves, up to {MAX_TOKENS_CAP}.",
    )
    stop: str | list[str] | None = Field(None, description="Up to 8 stop sequences.")
    grammar: Grammar | None = None
    json_schema: dict[str, Any] | None = Field(
        None, description="Constrain the output to JSON matching this schema ({} = any object)."
    )
    logprobs: TopLogprobs | None = Field(
        None, description="Report each token's log-probability and this many alternatives."
    )
    echo: bool = Field(False, description="Return the prompt before the generated text.")
    custom_id: str | None = Field(
        None, max_length=512, description="Your id for this job (batches)."
    )
    priority: Priority | None = Field(
        None,
        description="Order among your jobs waiting in the same lane (default normal; a batch "
        "may set its jobs' default).",
    )
    deadline_s: float | None = Field(
        None,
        gt=0,
        le=MAX_DEADLINE_S,
        description="Seconds from now: a job still queued then ends `expired`, never started "
        "late (a batch job's deadline is also its batch's window, whichever comes first).",
    )

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 8 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop takes at most 8 non-empty sequences of at most 256 characters")
        return value

    @model_validator(mode="after")
    def _one_prompt_source(self) -> CreateJobRequest:
        given = [n for n in ("prompt", "messages") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError("give either prompt or messages, not both")
        if not given and self.template is None:
            raise ValueError("give one of prompt, messages, or template (+ inputs)")
        if self.template is not None and self.messages is not None:
            raise ValueError("template applies to prompt/inputs, not to messages")
        if self.grammar is not None and self.json_schema is not None:
            raise ValueError("give either grammar or json_schema, not both")
        if (chars := self.text_chars()) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"the prompt's text (prompt, inputs and messages together) is {chars} characters; "
                f"the limit is {MAX_PROMPT_CHARS}"
            )
        return self

    def text_chars(self) -> int:
        """Characters of text the prompt is made of, before templates and chat formatting."""
        inputs = sum(len(k) + len(v) for k, v in (self.inputs or {}).items())
        messages = sum(len(m.content) for m in self.messages or ())
        return len(self.prompt or "") + inputs + messages

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        """The sampling of this request; `max_tokens` as the service decided it (see
        JobService.build_job: null becomes what the context leaves)."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            **self.model_dump(include=set(Samplers.model_fields)),
            max_tokens=max_tokens,
            stop=stop,
            grammar=self.grammar,
            logprobs=self.logprobs,
        )


class CreateJobsBatchRequest(BaseModel):
    """Many jobs at once (a JSON body; JSONL uploads carry the jobs one per line instead)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Default model for jobs that name none.")
    jobs: list[dict[str, Any]] = Field(min_length=1)
    metadata: Metadata | None = None
    completion_window: Literal["24h"] = "24h"
    priority: Priority | None = Field(None, description="Default priority of the batch's jobs.")


class JobURLs(BaseModel):
    self: str
    events: str
    websocket: str
    cancel: str


class JobProgress(BaseModel):
    completion_tokens: int


class QueueInfo(BaseModel):
    """Where a queued job stands in its model's line (an estimate from the state now: under
    fair scheduling, interactive work that arrives later may still go first)."""

    position: int  #: jobs of its model expected to start before it (0: it is next)
    #: now + position / service rate; null until the model's service rate is measured
    estimated_start_at: float | None
    service_rate_per_s: float  #: jobs of the model started per second, over the last minute

    @classmethod
    def of(cls, found: QueuePosition, now: float | None = None) -> QueueInfo:
        now = time.time() if now is None else now
        rate = found.rate_per_s
        start = now + found.position / rate if rate > 0 else None
        return cls(position=found.position, estimated_start_at=start, service_rate_per_s=rate)


class JobResponse(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    model: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempt: int
    worker: str | None
    batch_id: str | None
    custom_id: str | None
    lane: Lane
    priority: Priority
    #: still queued then, the job ends `expired` (its deadline, or its batch's window)
    expires_at: float | None = None
    progress: JobProgress
    text: str | None = None
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    error: JobError | None = None
    #: why a queued job is not moving, when tokenq knows (no live worker serves its model)
    notice: str | None = None
    #: a queued job's place in line (GET and POST of one job; null otherwise)
    queue: QueueInfo | None = None
    urls: JobURLs

    @classmethod
    def from_job(
        cls,
        job: Job,
        base: str = "",
        notice: str | None = None,
        queue: QueuePosition | None = None,
    ) -> JobResponse:
        result = job.result
        return cls(
            id=job.id,
            status=job.status,
            model=job.spec.model,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempt=job.attempt,
            worker=job.worker,
            batch_id=job.batch_id,
            custom_id=job.custom_id,
            lane=job.lane,
            priority=job.priority,
            expires_at=job.expires_at,
            progress=JobProgress(completion_tokens=job.completion_tokens),
            text=result.text if result else None,
            finish_reason=result.finish_reason if result else None,
            logprobs=result.logprobs if result else None,
            usage=result.usage if result else None,
            timings=result.timings if result else None,
            error=result.error if result else None,
            notice=notice,
            queue=QueueInfo.of(queue) if queue is not None else None,
            urls=JobURLs(
                self=f"{base}/v1/jobs/{job.id}",
                events=f"{base}/v1/jobs/{job.id}/events",
                websocket=f"{base}/v1/jobs/{job.id}/ws",
                cancel=f"{base}/v1/jobs/{job.id}/cancel",
            ),
        )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobResponse]


class BatchError(BaseModel):
    """Why a batch failed before running (OpenAI's Batch `errors.data[]`)."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchResponse(BaseModel):
    """OpenAI's Batch object (https://platform.openai.com/docs/api-reference/batch/object)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str | None = None
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    # --- tokenq extensions ---
    model: str
    results_url: str
    errors_url: str
    events_url: str
    #: the batch whose failed and expired jobs this one runs again (POST .../retry)
    retry_of: str | None = None
    #: while it runs: now + the jobs left over the batch's own rate so far (jobs finished
    #: since it started, per second); null before its first job ends and once it is final
    estimated_completion_at: float | None = None

    @classmethod
    def from_batch(cls, batch: Batch, base: str = "") -> BatchResponse:
        def stamp(value: float | None) -> int | None:
            return int(value) if value is not None else None

        done = batch.status in (BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.EXPIRED)
        errors = (
            BatchErrors(
                data=[
                    BatchError(code=e.code, message=e.message, param=e.param, line=e.line)
                    for e in batch.errors
                ]
            )
            if batch.errors
            else None
        )
        return cls(
            id=batch.id,
            endpoint=batch.endpoint,
            errors=errors,
            input_file_id=batch.input_file_id,
            completion_window=batch.completion_window,
            status=batch.status,
            output_file_id=f"{batch.id}-output" if done else None,
            error_file_id=f"{batch.id}-errors"
            if done and batch.finished > batch.succeeded
            else None,
            created_at=int(batch.created_at),
            in_progress_at=stamp(batch.in_progress_at),
            expires_at=stamp(batch.expires_at),
            finalizing_at=stamp(batch.finalizing_at),
            completed_at=stamp(batch.completed_at),
            failed_at=stamp(batch.failed_at),
            expired_at=stamp(batch.expired_at),
            cancelling_at=stamp(batch.cancelling_at),
            cancelled_at=stamp(batch.cancelled_at),
            request_counts=batch.request_counts,
            metadata=batch.metadata,
            model=batch.model,
            results_url=f"{base}/v1/batches/{batch.id}/results",
            errors_url=f"{base}/v1/batches/{batch.id}/errors",
            events_url=f"{base}/v1/batches/{batch.id}/events",
            retry_of=batch.retry_of,
            estimated_completion_at=_estimated_completion(batch),
        )


def _estimated_completion(batch: Batch, now: float | None = None) -> float | None:
    """When a running batch should be done, at the rate its jobs have finished so far."""
    if batch.status is not BatchStatus.IN_PROGRESS or not batch.finished:
        return None
    now = time.time() if now is None else now
    elapsed = now - (batch.in_progress_at or batch.created_at)
    if elapsed <= 0:
        return None
    left = batch.request_counts.total - batch.finished
    return now + left * elapsed / batch.finished
