"""Domain models shared by the API and the worker: jobs, their sampling, results, and batches."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

#: Upper bound on max_tokens for one job, whatever the model's context.
MAX_TOKENS_CAP = 8192

# --- Sampling bounds, defined once: SamplingParams and every API's request models use these. ---
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_CAP)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(ge=0.0, le=1.0)]
TopK = Annotated[int, Field(ge=0, le=1000, description="llama.cpp top-k (0 = off).")]
MinP = Annotated[float, Field(ge=0.0, le=1.0, description="llama.cpp min-p.")]
RepeatPenalty = Annotated[float, Field(ge=0.0, le=2.0)]
#: presence_penalty and frequency_penalty.
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
#: llama.cpp seeds are uint32.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Grammar = Annotated[str, Field(max_length=100_000, description="GBNF the output must follow.")]
#: Alternatives reported per token with logprobs.
TopLogprobs = Annotated[int, Field(ge=0, le=20)]
#: OpenAI's logit_bias: token id -> a bias added to its logit (-100 bans it, 100 all but forces it).
MAX_LOGIT_BIAS = 300
LogitBias = Annotated[
    dict[Annotated[int, Field(ge=0)], Annotated[float, Field(ge=-100.0, le=100.0)]],
    Field(
        max_length=MAX_LOGIT_BIAS,
        description="Token id -> bias added to its logit, -100..100 (at most 300 tokens).",
    ),
]


class JobStatus(StrEnum):
    QUEUED = "queued"  #: accepted, durable, waiting for a worker
    RUNNING = "running"  #: claimed by a worker attempt, generating
    SUCCEEDED = "succeeded"  #: finished with a result (stop or length)
    FAILED = "failed"  #: generation raised, or its worker was lost too many times
    CANCELLED = "cancelled"  #: stopped on request; keeps any partial text
    EXPIRED = "expired"  #: not started before its deadline

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class Lane(StrEnum):
    """The line a job waits in. A worker takes interactive work first: it never waits behind
    batch work, only for a slot to free."""

    INTERACTIVE = "interactive"  #: a request someone waits on: the surfaces, single /v1/jobs
    BATCH = "batch"  #: a job of a batch


class Priority(StrEnum):
    """Order within a lane: higher first; within one priority, tenants share by weight."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class FinishReason(StrEnum):
    STOP = "stop"  #: end-of-generation token or a stop sequence
    LENGTH = "length"  #: max_tokens reached
    CANCELLED = "cancelled"  #: cancel requested
    ERROR = "error"  #: generation raised


class BatchStatus(StrEnum):
    """OpenAI's batch statuses (https://platform.openai.com/docs/api-reference/batch/object)."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class Samplers(BaseModel):
    """llama.cpp's samplers, with its names and defaults: a job's SamplingParams and the native
    request (api.protocol.CreateJobRequest) both have these."""

    temperature: Temperature = 0.8
    top_p: TopP = 0.95
    top_k: TopK = 40
    min_p: MinP = 0.05
    repeat_penalty: RepeatPenalty = 1.0
    seed: Seed | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: LogitBias | None = None


class SamplingParams(Samplers):
    """How to sample one job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: MaxTokens = 128
    stop: list[str] = Field(default_factory=list, max_length=8)
    grammar: str | None = Field(None, description="GBNF grammar that constrains the output")
    logprobs: TopLogprobs | None = Field(None, description="top alternatives per token")


class JobSpec(BaseModel):
    """What a worker needs to run a job; written once by the API, read by the worker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    prompt: str  #: the final prompt text (chat messages and templates already applied)
    prompt_tokens: int  #: counted by the API with the model's tokenizer
    chat: bool = False  #: the prompt came from a chat template (parse special tokens)
    echo: bool = False  #: prepend the prompt to the returned text
    sampling: SamplingParams


class PromptTokensDetails(BaseModel):
    #: prompt tokens copied from another sequence's KV cache (a shared prefix), not evaluated
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class Timings(BaseModel):
    queue_wait_ms: float  #: queued -> claimed by a worker
    time_to_first_token_ms: float | None  #: claimed -> first token
    generation_ms: float  #: claimed -> last token
    tokens_per_second: float | None


class JobError(BaseModel):
    type: str
    message: str


class TokenLogprob(BaseModel):
    """One generated token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top_logprobs: list[tuple[str, float]] = Field(default_factory=list)


class JobResult(BaseModel):
    """The final result, written once per job."""

    text: str
    finish_reason: FinishReason | None
    usage: Usage | None = None
    timings: Timings | None = None
    error: JobError | None = None
    logprobs: list[TokenLogprob] | None = None  #: when the job asked for them


def _float(raw: str | None) -> float | None:
    return float(raw) if raw not in (None, "") else None


class Job(BaseModel):
    """A job as stored in Redis (see jobs/keys.py: job)."""

    id: str
    tenant: str
    status: JobStatus
    spec: JobSpec
    batch_id: str | None = None
    custom_id: str | None = None
    index: int | None = None
    lane: Lane = Lane.INTERACTIVE
    priority: Priority = Priority.NORMAL
    attempt: int = 0
    worker: str | None = None  #: the worker process running (or that ran) the latest attempt
    completion_tokens: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    result: JobResult | None = None
    #: the webhook family its final status is announced in ("response": response.completed,
    #: ...; jobs/webhooks.py), if its tenant's webhook takes it
    notify: str | None = None

    @property
    def failure(self) -> str | None:
        """Why a final job did not end normally, or None if it did: succeeded, or cancelled (a
        stopped answer is the text generated until then, on every surface)."""
        if self.status in (JobStatus.SUCCEEDED, JobStatus.CANCELLED):
            return None
        error = self.result.error if self.result else None
        return error.message if error else f"the job ended {self.status.value}"

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Job:
        return cls(
            id=raw["id"],
            tenant=raw["tenant"],
            status=JobStatus(raw["status"]),
            spec=JobSpec.model_validate_json(raw["spec"]),
            batch_id=raw.get("batch_id") or None,
            custom_id=raw.get("custom_id") or None,
            index=int(raw["idx"]) if raw.get("idx") not in (None, "") else None,
            lane=Lane(raw.get("lane") or Lane.INTERACTIVE),
            priority=Priority(raw.get("priority") or Priority.NORMAL),
            attempt=int(raw.get("attempt") or 0),
            worker=raw.get("worker") or None,
            completion_tokens=int(raw.get("completion_tokens") or 0),
            created_at=float(raw["created_at"]),
            started_at=_float(raw.get("started_at")),
            finished_at=_float(raw.get("finished_at")),
            expires_at=_float(raw.get("expires_at")),
            result=JobResult.model_validate_json(raw["result"]) if raw.get("result") else None,
            notify=raw.get("notify") or None,
        )

    def to_redis(self) -> dict[str, str]:
        """The initial record of a new job (stamps and result are added by the Lua scripts)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "status": self.status.value,
            "spec": self.spec.model_dump_json(),
            "model": self.spec.model,  # for the Lua scripts, which never parse the spec
            "batch_id": self.batch_id or "",
            "custom_id": self.custom_id or "",
            "idx": "" if self.index is None else str(self.index),
            "lane": self.lane.value,
            "priority": self.priority.value,
            # What the job costs its tenant's share (fair share is in tokens, not jobs).
            "cost": str(self.spec.prompt_tokens + self.spec.sampling.max_tokens),
            "max_tokens": str(self.spec.sampling.max_tokens),
            "attempt": str(self.attempt),
            "created_at": repr(self.created_at),
            "expires_at": "" if self.expires_at is None else repr(self.expires_at),
            "notify": self.notify or "",
        }


class RequestCounts(BaseModel):
    total: int
    completed: int  #: succeeded (OpenAI's meaning of completed)
    failed: int
    cancelled: int = 0
    expired: int = 0


class BatchLineError(BaseModel):
    """An input item of a batch that could not become a job (a bad line of an OpenAI batch file).

    It counts as failed at once and is listed in the batch's error file at its input position.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int  #: 0-based position among the batch's requests (the jobs' `index` space)
    line: int | None = None  #: 1-based line of the input file
    custom_id: str | None = None
    code: str
    message: str
    param: str | None = None


class Batch(BaseModel):
    """A bulk submission: many jobs, counted live, exported in input order."""

    id: str
    tenant: str
    model: str
    status: BatchStatus
    endpoint: str = "/v1/jobs"
    completion_window: str = "24h"
    total: int
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    created_at: float
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expires_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    metadata: dict[str, str] | None = None
    input_file_id: str | None = None  #: the uploaded file the batch was read from (OpenAI's API)
    errors: list[BatchLineError] | None = None  #: why a batch failed before any job ran
    retry_of: str | None = None  #: the batch whose failed and expired jobs this one runs again

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.expired

    @property
    def request_counts(self) -> RequestCounts:
        return RequestCounts(
            total=self.total,
            completed=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            expired=self.expired,
        )

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Batch:
        stamps = (
            "created_at in_progress_at finalizing_at completed_at failed_at expires_at "
            "expired_at cancelling_at cancelled_at"
        ).split()
        return cls(
            id=raw["id"],
            tenant=raw["tenant"],
            model=raw["model"],
            status=BatchStatus(raw["status"]),
            endpoint=raw.get("endpoint") or "/v1/jobs",
            completion_window=raw.get("completion_window") or "24h",
            total=int(raw["total"]),
            succeeded=int(raw.get("succeeded") or 0),
            failed=int(raw.get("failed") or 0),
            cancelled=int(raw.get("cancelled") or 0),
            expired=int(raw.get("expired") or 0),
            metadata=json.loads(raw["metadata"]) if raw.get("metadata") else None,
            input_file_id=raw.get("input_file_id") or None,
            retry_of=raw.get("retry_of") or None,
            errors=[BatchLineError.model_validate(e) for e in json.loads(raw["errors"])]
            if raw.get("errors")
            else None,
            **{name: _float(raw.get(name)) for name in stamps},
        )

    def to_redis(self) -> dict[str, str]:
        out: dict[str, Any] = {
            "id": self.id,
            "tenant": self.tenant,
            "model": self.model,
            "status": self.status.value,
            "endpoint": self.endpoint,
            "completion_window": self.completion_window,
            "total": str(self.total),
            "created_at": repr(self.created_at),
            "metadata": json.dumps(self.metadata) if self.metadata else "",
        }
        if self.input_file_id:
            out["input_file_id"] = self.input_file_id
        if self.retry_of:
            out["retry_of"] = self.retry_of
        if self.errors:
            out["errors"] = json.dumps([e.model_dump() for e in self.errors])
        # Lines that never became jobs are failed from the start; the Lua scripts count the rest.
        if self.failed:
            out["failed"] = str(self.failed)
        for name in ("in_progress_at", "expires_at", "failed_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = repr(value)
        return out


class StoredFile(BaseModel):
    """An uploaded file (OpenAI's Files API); its bytes are stored beside it (jobs/keys.py)."""

    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    expires_at: float | None = None

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> StoredFile:
        return cls(
            id=raw["id"],
            tenant=raw["tenant"],
            filename=raw["filename"],
            purpose=raw["purpose"],
            bytes=int(raw["bytes"]),
            created_at=float(raw["created_at"]),
            expires_at=_float(raw.get("expires_at")),
        )

    def to_redis(self) -> dict[str, str]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "filename": self.filename,
            "purpose": self.purpose,
            "bytes": str(self.bytes),
            "created_at": repr(self.created_at),
            "expires_at": "" if self.expires_at is None else repr(self.expires_at),
        }
