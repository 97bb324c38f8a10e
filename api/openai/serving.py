"""OpenAI-compatible completions: OpenAI requests -> native jobs -> OpenAI objects and chunks.

A request becomes one `CreateJobRequest` per choice (n x prompts), submitted through the
JobService: the same validation, records, queue and event log as /v1/jobs. What comes back is
rendered by openai/render.py, as the output lines of OpenAI batches are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from api.errors import invalid_request
from api.openai.protocol import (
    MAX_CHOICES,
    ChatCompletionRequestMessage,
    CreateChatCompletionRequest,
    CreateCompletionRequest,
    ResponseFormat,
)
from api.openai.render import (
    ChoiceStream,
    OpenAIStreamingResponse,
    chat_completion_response,
    completion_response,
    job_headers,
    raise_for_failed,
)
from api.protocol import ChatMessage, CreateJobRequest
from api.service import JobService
from jobs.errors import InvalidRequestError
from jobs.models import Job

#: max_tokens when a request gives none: enough for an answer, bounded by the model's context
#: (JobService.build_job gives what the context leaves after the prompt, up to this).
DEFAULT_MAX_TOKENS = 256
#: Seeds are llama.cpp's uint32; OpenAI takes any integer.
SEED_MODULUS = 2**32


# --- requests -> jobs ------------------------------------------------------------------------


def completion_job_requests(
    request: CreateCompletionRequest, custom_id: str | None = None
) -> list[CreateJobRequest]:
    """One job per choice, prompt-major: choice index = prompt index * n + i (OpenAI's order)."""
    prompts = request.prompts
    _check_choices(len(prompts) * request.n)
    common = _sampling_fields(request)
    return [
        _job_request(
            model=request.model,
            prompt=prompt,
            max_tokens=request.max_tokens,
            seed=_choice_seed(request.seed, i),
            logprobs=request.logprobs,
            echo=request.echo,
            custom_id=custom_id,
            priority=request.priority,
            **common,
        )
        for prompt in prompts
        for i in range(request.n)
    ]


def chat_job_requests(
    request: CreateChatCompletionRequest, custom_id: str | None = None
) -> list[CreateJobRequest]:
    _check_choices(request.n)
    messages = chat_messages(request.messages)
    common = _sampling_fields(request)
    return [
        _job_request(
            model=request.model,
            messages=messages,
            max_tokens=request.max_completion_tokens or request.max_tokens,
            seed=_choice_seed(request.seed, i),
            logprobs=(request.top_logprobs or 0) if request.logprobs else None,
            custom_id=custom_id,
            priority=request.priority,
            **common,
        )
        for i in range(request.n)
    ]


def chat_messages(messages: Sequence[ChatCompletionRequestMessage]) -> list[ChatMessage]:
    """OpenAI messages as the chat template takes them: text only, `developer` as `system`."""
    roles = {"developer": "system", "function": "tool"}
    out = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidRequestError(
                        f"messages[{i}].content[{j}]: only text content parts are supported",
                        param=f"messages[{i}].content[{j}]",
                        code="unsupported_content",
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        try:
            out.append(
                ChatMessage(role=roles.get(message.role, message.role), content=content or "")
            )
        except ValidationError as exc:
            raise invalid_request(exc.errors(), prefix=f"messages[{i}]") from exc
    return out


def response_format_schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    """json_object -> any JSON object ({}); json_schema -> its schema; text -> no constraint."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object" or response_format.json_schema is None:
        return {}
    return response_format.json_schema.schema_ or {}


def _sampling_fields(request: CreateCompletionRequest | CreateChatCompletionRequest) -> dict:
    fields = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repeat_penalty": request.repeat_penalty,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "logit_bias": request.logit_bias,
        "stop": request.stop,
        "grammar": request.grammar,
        "json_schema": response_format_schema(request.response_format),
    }
    # Unset fields keep tokenq's (llama.cpp's) defaults.
    return {name: value for name, value in fields.items() if value is not None}


def _check_choices(count: int) -> None:
    if count > MAX_CHOICES:
        raise InvalidRequestError(
            f"{count} choices (prompts x n) in one request; the limit is {MAX_CHOICES}",
            param="n",
        )


def _choice_seed(seed: int | None, choice: int) -> int | None:
    # Each choice gets its own seed, or n choices with one seed would all be the same text.
    return None if seed is None else (seed + choice) % SEED_MODULUS


def _job_request(**fields: Any) -> CreateJobRequest:
    try:
        return CreateJobRequest(**fields)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from exc


# --- serving ---------------------------------------------------------------------------------


async def serve(
    service: JobService,
    request: CreateCompletionRequest | CreateChatCompletionRequest,
    tenant: str,
) -> Response:
    """/v1/completions or /v1/chat/completions: the jobs of every choice, then the answer."""
    chat = isinstance(request, CreateChatCompletionRequest)
    requests = (
        chat_job_requests(request)
        if isinstance(request, CreateChatCompletionRequest)
        else completion_job_requests(request)
    )
    jobs = await service.submit(
        requests, tenant, default_max_tokens=DEFAULT_MAX_TOKENS, answer_waits=True
    )
    return await _respond(service, jobs, request, chat=chat, n=request.n)


async def _respond(
    service: JobService,
    jobs: list[Job],
    request: CreateCompletionRequest | CreateChatCompletionRequest,
    *,
    chat: bool,
    n: int,
) -> Response:
    headers = job_headers(jobs)
    if request.stream:
        stream = ChoiceStream(
            service,
            jobs,
            chat=chat,
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            keep_on_disconnect=request.keep_on_disconnect,
            n=n,
        )
        return OpenAIStreamingResponse(stream, headers=headers)
    finished = await asyncio.gather(*(service.wait(job.id) for job in jobs))
    raise_for_failed(finished)
    render: Callable[..., Any] = chat_completion_response if chat else completion_response
    return JSONResponse(render(finished, n).model_dump(mode="json"), headers=headers)
