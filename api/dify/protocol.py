"""Wire models of Dify's completion-app API (https://docs.dify.ai/en/openapi-api-access-readme).

A Dify completion app is a prompt template with variables: here the template is one of
configs/templates.yaml (`prompt_name`, default "default"), its variables come from `inputs`, and
`query` fills `{input}` (and `{query}`). `task_id` = `message_id` = `id` = the tokenq job id.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.errors import request_errors, validation_message
from api.protocol import MAX_PROMPT_CHARS, CreateJobRequest
from jobs.errors import InvalidRequestError, TokenqError
from jobs.models import Job, MaxTokens, Seed, Temperature, TopP

#: Dify's own stream sends `event: ping` every 10 s; ours is never slower than that.
DIFY_PING_S = 10.0

InputValue = str | int | float | bool | None


class CreateCompletionMessageRequest(BaseModel):
    """`POST /v1/completion-messages`."""

    # Dify's own request parser ignores fields it does not know; so does this one.
    model_config = ConfigDict(extra="ignore")

    inputs: dict[str, InputValue] = Field(
        default_factory=dict, description="Template variables (the app's prompt variables)."
    )
    query: str = Field(
        "", max_length=MAX_PROMPT_CHARS, description="The user's input; fills {input} and {query}."
    )
    response_mode: Literal["blocking", "streaming"] | None = Field(
        None, description="`streaming` (SSE) or `blocking` (the default)."
    )
    user: str = Field(min_length=1, max_length=512, description="End-user id; owns the task.")
    files: list[Any] | None = Field(None, description="Not supported: must be absent or empty.")

    # --- tokenq extensions (Dify keeps these in the app's configuration) ---
    model: str | None = Field(None, description="Model alias; the default model if unset.")
    prompt_name: str = Field("default", description="Template in configs/templates.yaml.")
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    stop: list[str] | None = Field(None, max_length=8)

    @property
    def streaming(self) -> bool:
        return self.response_mode == "streaming"

    def template_inputs(self) -> dict[str, str]:
        """The template's variables: `inputs` as text, plus the query as {input} and {query}."""
        variables = {
            name: _as_text(value) for name, value in self.inputs.items() if value is not None
        }
        query = self.query or variables.get("query", "")
        if query:
            variables["query"] = query
            variables["input"] = query
        return variables

    def to_job_request(self) -> CreateJobRequest:
        if self.files:
            raise InvalidRequestError("files are not supported", param="files")
        fields: dict[str, Any] = {
            "model": self.model,
            "template": self.prompt_name,
            "inputs": self.template_inputs(),
            "custom_id": self.user,
        }
        for name in ("max_tokens", "temperature", "top_p", "seed", "stop"):
            if (value := getattr(self, name)) is not None:
                fields[name] = value
        try:
            return CreateJobRequest.model_validate(fields)
        except ValidationError as exc:
            message, param = validation_message(exc.errors())
            raise InvalidRequestError(message, param=param) from exc


class StopCompletionMessageRequest(BaseModel):
    """`POST /v1/completion-messages/{task_id}/stop`."""

    model_config = ConfigDict(extra="ignore")

    user: str = Field(min_length=1, max_length=512)


def _as_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- responses and stream events ---------------------------------------------------------


def usage(job: Job) -> dict[str, Any]:
    """Dify's usage object; tokenq charges nothing, so every price is zero."""
    result = job.result
    prompt = result.usage.prompt_tokens if result and result.usage else job.spec.prompt_tokens
    completion = result.usage.completion_tokens if result and result.usage else 0
    latency = (job.finished_at or job.created_at) - job.created_at
    return {
        "prompt_tokens": prompt,
        "prompt_unit_price": "0",
        "prompt_price_unit": "0",
        "prompt_price": "0",
        "completion_tokens": completion,
        "completion_unit_price": "0",
        "completion_price_unit": "0",
        "completion_price": "0",
        "total_tokens": prompt + completion,
        "total_price": "0",
        "currency": "USD",
        "latency": round(latency, 3),
    }


def blocking_response(job: Job) -> dict[str, Any]:
    return {
        "event": "message",
        "task_id": job.id,
        "id": job.id,
        "message_id": job.id,
        "mode": "completion",
        "answer": job.result.text if job.result else "",
        "metadata": {"usage": usage(job)},
        "created_at": int(job.created_at),
    }


def message_event(job: Job, answer: str, event: str = "message") -> dict[str, Any]:
    """A `message` chunk, or with event="message_replace" the whole answer replaced."""
    return {
        "event": event,
        "task_id": job.id,
        "message_id": job.id,
        "id": job.id,
        "answer": answer,
        "created_at": int(job.created_at),
    }


def message_end_event(job: Job) -> dict[str, Any]:
    return {
        "event": "message_end",
        "task_id": job.id,
        "message_id": job.id,
        "id": job.id,
        "metadata": {"usage": usage(job)},
    }


def error_event(job_id: str, status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "event": "error",
        "task_id": job_id,
        "message_id": job_id,
        "status": status,
        "code": code,
        "message": message,
    }


# --- errors: {"code", "message", "status"} with Dify's codes --------------------------------

#: tokenq error codes that have a Dify counterpart (status, Dify code).
_BY_CODE = {
    "model_not_found": (400, "model_currently_not_support"),
    "template_not_found": (400, "app_unavailable"),
    "context_length_exceeded": (400, "completion_request_error"),
    "completion_request_error": (400, "completion_request_error"),
    "invalid_api_key": (401, "unauthorized"),
}
#: Otherwise by HTTP status; statuses Dify has no code for keep tokenq's code.
_BY_STATUS = {
    400: (400, "invalid_param"),
    404: (404, "not_found"),
    409: (400, "invalid_param"),
    422: (400, "invalid_param"),
    429: (429, "too_many_requests"),
}


class DifyErrorResponse(BaseModel):
    """The body of every error response on the Dify routes."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    status: int


#: What the OpenAPI schema says of the error responses of the Dify routes.
DIFY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": DifyErrorResponse, "description": "The request was refused"},
    "5XX": {"model": DifyErrorResponse, "description": "The service could not answer"},
}


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "status": status}


def dify_error(exc: TokenqError) -> tuple[int, str, str]:
    """(status, code, message) of a tokenq error in Dify's terms."""
    status, code = _BY_CODE.get(exc.code or "") or _BY_STATUS.get(
        exc.status_code, (exc.status_code, exc.code or "internal_server_error")
    )
    return status, code, exc.message


def error_body_of(exc: TokenqError) -> dict[str, Any]:
    """A tokenq error as Dify's error body."""
    return error_body(*dify_error(exc))


def http_error(status: int, message: str) -> tuple[int, str, str]:
    """(status, code, message) of an HTTP error raised by FastAPI itself, in Dify's terms."""
    status, code = _BY_STATUS.get(status, (status, f"http_{status}"))
    return status, code, message


def request_validation_error(exc: RequestValidationError) -> tuple[int, str, str]:
    return 400, "invalid_param", validation_message(request_errors(exc))[0]
