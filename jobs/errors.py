"""tokenq's errors: one tree, each class with the HTTP status the API answers it with.

The API maps every one in one place (api/errors.py); the worker records the class name of the
error a job failed with (`JobError.type`). The whole tree:

TokenqError                    500  server_error         the base
├── InvalidRequestError        400  invalid_request      malformed input (bad JSONL line, ...)
│   └── CompletionRequestError 400  completion_request_error  a generation failed (Dify's code)
├── AuthenticationError        401  invalid_api_key      missing or unknown API key
├── PermissionDeniedError      403  forbidden            a keyless API's Host or Origin not local
├── NotFoundError              404  not_found            unknown id, or another tenant's
│   └── UnknownModelError      404  model_not_found      with the list of known aliases
├── ConflictError              409  conflict             e.g. cancelling a finished job
│   └── IdempotencyKeyInProgressError 409  idempotency_key_in_progress  its batch is being made
├── PayloadTooLargeError       413  payload_too_large    body or batch over its limit
│   ├── BodyTooLargeError      413  payload_too_large    a body that grew past the limit as read
│   └── FileTooLargeError      413  file_too_large       one file over the tenant's storage quota
├── UnsupportedMediaTypeError  415  unsupported_media_type  a body that is not JSON, JSONL or a form
├── ContextOverflowError       422  context_length_exceeded  prompt + max_tokens beyond the context
├── IdempotencyKeyReusedError  422  idempotency_key_reused  the key was sent with another body
├── TooManyJobsError           429  too_many_jobs_in_flight  the tenant's in-flight limit
├── RateLimitError             429  rate_limit_exceeded  the tenant's requests or tokens per minute
│   └── StorageQuotaError      429  storage_quota_exceeded  the tenant's stored files or bytes
├── GenerationFailedError      502  generation_failed    a job a request waited on failed
├── UnavailableError           503  unavailable          Redis is down, or the broker refused
│   ├── OverloadedError        503  overloaded           a model's line is past its depth limit
│   └── ModelUnavailableError  503  model_unavailable    no live worker serves the model
├── SandboxError               500  (jobs/sandbox.py)    the grammar sandbox crashed or ran out; the API answers 400
└── JobFailure                 500  (worker side)        why a job ended `failed`
    ├── EngineError            500  engine_error         the engine's own errors
    │   ├── PromptTooLongError 500  engine_error         (worker/engine.py) past the context
    │   └── EngineClosedError  500  engine_error         (worker/batch_engine.py) shut down
    └── JobTimeLimitError      500  job_time_limit       ran past TOKENQ_JOB_TIME_LIMIT_S
"""

from __future__ import annotations


class TokenqError(Exception):
    status_code = 500
    type = "server_error"
    code: str | None = None
    #: Seconds a client should wait before trying again (answered as Retry-After); None: none.
    retry_after_s: int | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s
        #: more headers of the error's response (OpenAI's x-ratelimit-* on a rate limit)
        self.headers = headers or {}

    def with_label(self, label: str) -> TokenqError:
        """The same error about one item of many (a batch's line): `label: message`."""
        self.message = f"{label}: {self.message}"
        self.args = (self.message,)
        self.param = label
        return self


class InvalidRequestError(TokenqError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class CompletionRequestError(InvalidRequestError):
    """The generation failed: Dify's `completion_request_error` (Dify answers it with 400)."""

    code = "completion_request_error"


class AuthenticationError(TokenqError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(TokenqError):
    status_code = 403
    type = "permission_error"
    code = "forbidden"


class NotFoundError(TokenqError):
    status_code = 404
    type = "not_found_error"
    code = "not_found"


class UnknownModelError(NotFoundError):
    code = "model_not_found"

    def __init__(self, model: str, known: list[str]):
        super().__init__(
            f"unknown model {model!r}; known models: {', '.join(known)}", param="model"
        )
        self.known = known


class ConflictError(TokenqError):
    status_code = 409
    type = "conflict_error"
    code = "conflict"


class IdempotencyKeyInProgressError(ConflictError):
    """An Idempotency-Key whose first request is still creating its batch: retry shortly."""

    code = "idempotency_key_in_progress"
    retry_after_s = 1


class PayloadTooLargeError(TokenqError):
    status_code = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class BodyTooLargeError(PayloadTooLargeError):
    """Raised while a body is read (chunked, or longer than its Content-Length said)."""


class FileTooLargeError(PayloadTooLargeError):
    """An uploaded file larger than the tenant's whole storage quota: it can never be stored."""

    code = "file_too_large"


class UnsupportedMediaTypeError(TokenqError):
    status_code = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class ContextOverflowError(TokenqError):
    status_code = 422
    type = "invalid_request_error"
    code = "context_length_exceeded"


class IdempotencyKeyReusedError(TokenqError):
    """An Idempotency-Key sent again with a different request (body, content type or query)."""

    status_code = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class TooManyJobsError(TokenqError):
    status_code = 429
    type = "rate_limit_error"
    code = "too_many_jobs_in_flight"
    retry_after_s = 5


class RateLimitError(TokenqError):
    """The tenant's requests or tokens per minute would pass its limit."""

    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class StorageQuotaError(RateLimitError):
    """The tenant's uploaded files would pass TOKENQ_MAX_TENANT_FILE_BYTES or
    TOKENQ_MAX_TENANT_FILES: delete some, or wait `retry_after_s` for enough to expire."""

    code = "storage_quota_exceeded"


class GenerationFailedError(TokenqError):
    """A job the request waited on failed in its worker: the API is fine, its upstream was not."""

    status_code = 502
    type = "server_error"
    code = "generation_failed"


class UnavailableError(TokenqError):
    status_code = 503
    type = "server_error"
    code = "unavailable"
    retry_after_s = 2  # Redis restarting, loading its AOF


class OverloadedError(UnavailableError):
    """A model's line is past TOKENQ_MAX_QUEUE_DEPTH: new interactive work is refused (batches
    are still accepted and wait)."""

    code = "overloaded"
    retry_after_s = 10


class ModelUnavailableError(UnavailableError):
    """A request that waits for its answer, for a model no live worker serves: it would wait
    forever, so it is refused at once (native and batch jobs are accepted and wait)."""

    code = "model_unavailable"
    retry_after_s = 10


class JobFailure(TokenqError):
    """Why a job ended `failed` in its worker (never answered to a request directly)."""


class EngineError(JobFailure):
    """The engine's own errors (a job that fails with one ends `failed`)."""

    code = "engine_error"


class JobTimeLimitError(JobFailure):
    """A job generated for longer than TOKENQ_JOB_TIME_LIMIT_S (it ends `failed`)."""

    code = "job_time_limit"
