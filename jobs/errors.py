"""tokenq's error tree; each error knows its HTTP status so the API maps them in one place.

TokenqError
├── NotFoundError          404  unknown id, or another tenant's
│   └── UnknownModelError  404  with the list of known aliases
├── ConflictError          409  e.g. cancelling a finished job
├── InvalidRequestError    400  malformed input (bad JSONL line, ...)
├── ContextOverflowError   422  prompt + max_tokens beyond the model's context
├── PayloadTooLargeError   413  body or batch over its limit
├── AuthenticationError    401  missing or unknown API key
└── UnavailableError       503  Redis or the broker could not take the job
"""

from __future__ import annotations


class TokenqError(Exception):
    status_code = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


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


class InvalidRequestError(TokenqError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextOverflowError(TokenqError):
    status_code = 422
    type = "invalid_request_error"
    code = "context_length_exceeded"


class PayloadTooLargeError(TokenqError):
    status_code = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class AuthenticationError(TokenqError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class TooManyJobsError(TokenqError):
    status_code = 429
    type = "rate_limit_error"
    code = "too_many_jobs_in_flight"
    #: Seconds a client should wait before trying again.
    retry_after_s = 5


class UnavailableError(TokenqError):
    status_code = 503
    type = "server_error"
    code = "unavailable"
