"""Wire models of the OpenAI-compatible API (https://platform.openai.com/docs/api-reference).

Sections and fields follow the order of OpenAI's API reference. Requests accept and ignore fields
they do not know (OpenAI clients send many); what tokenq adds is fenced in a
`# --- tokenq extensions ---` block at the end of a model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from api.protocol import MAX_PROMPT_CHARS, BatchResponse, Metadata
from jobs.models import (
    Grammar,
    LogitBias,
    MaxTokens,
    MinP,
    Penalty,
    Priority,
    PromptTokensDetails,
    RepeatPenalty,
    Temperature,
    TopK,
    TopLogprobs,
    TopP,
)

#: Choices one request may ask for (n x prompts); OpenAI's own bound on n.
MAX_CHOICES = 128

#: The endpoints a batch may target; a batch file's lines must all name its endpoint.
CHAT_COMPLETIONS_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions"]


class _Request(BaseModel):
    # "Unknown fields are accepted and ignored": clients send what their SDK version knows.
    model_config = ConfigDict(extra="ignore")


# --- Models (https://platform.openai.com/docs/api-reference/models) ---------------------------


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tokenq"
    # --- tokenq extensions ---
    n_ctx: int = Field(description="Context of one job: prompt + max_tokens tokens.")
    workers: int = Field(description="Live worker processes serving the model now.")


class ListModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


# --- Shared request parts -------------------------------------------------------------------


class StreamOptions(_Request):
    include_usage: bool = False


class JSONSchemaFormat(_Request):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    """`text`, `json_object` (any JSON object) or `json_schema`, enforced by a llama.cpp grammar."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs `json_schema`")
        return self


#: OpenAI's service_tier -> a tokenq priority (others: the default).
SERVICE_TIERS = {"priority": Priority.HIGH, "scale": Priority.HIGH, "flex": Priority.LOW}


class _SamplingExtensions(_Request):
    """tokenq extensions shared by completions and chat completions (llama.cpp's samplers)."""

    top_k: TopK | None = None
    min_p: MinP | None = None
    repeat_penalty: RepeatPenalty | None = None
    grammar: Grammar | None = None
    keep_on_disconnect: bool = Field(
        False,
        description="Streaming: keep generating when the client disconnects (default: cancel).",
    )
    service_tier: Literal["auto", "default", "flex", "priority", "scale"] | None = Field(
        None,
        description="OpenAI's tiers as tokenq's priorities: priority and scale are high, flex is "
        "low, the others normal.",
    )

    @property
    def priority(self) -> Priority | None:
        return SERVICE_TIERS.get(self.service_tier or "")


# --- Completions (https://platform.openai.com/docs/api-reference/completions) ----------------


class CreateCompletionRequest(_SamplingExtensions):
    model: str | None = Field(None, description="Model alias; the default model if unset.")
    prompt: str | list[str] = Field(description="A prompt, or several (one choice each).")
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)
    echo: bool = False
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    max_tokens: MaxTokens | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    user: str | None = None
    # --- tokenq extensions ---
    response_format: ResponseFormat | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if any(isinstance(i, int | list) for i in items):
            raise ValueError("prompts as token ids are not supported; send the prompt as text")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_bounds(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("give at least one prompt")
        if any(len(p) > MAX_PROMPT_CHARS for p in prompts):
            raise ValueError(f"a prompt is over {MAX_PROMPT_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _supported(self) -> CreateCompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported (leave it unset or equal to n)")
        if self.suffix:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class CompletionLogprobs(BaseModel):
    text_offset: list[int]
    token_logprobs: list[float | None]
    tokens: list[str]
    top_logprobs: list[dict[str, float] | None]


class CompletionChoice(BaseModel):
    finish_reason: Literal["stop", "length"] | None
    index: int
    logprobs: CompletionLogprobs | None = None
    text: str


class CompletionUsage(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CreateCompletionResponse(BaseModel):
    """A completion, and (with `stream`) each of its chunks."""

    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    system_fingerprint: str | None = None
    object: Literal["text_completion"] = "text_completion"
    usage: CompletionUsage | None = None


# --- Chat (https://platform.openai.com/docs/api-reference/chat) ------------------------------


class ChatCompletionRequestMessage(_Request):
    """Any role's message; `content` a string or a list of parts (text parts only)."""

    role: Literal["developer", "system", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionTool(_Request):
    type: str = "function"
    function: dict[str, Any] | None = None


class CreateChatCompletionRequest(_SamplingExtensions):
    messages: list[ChatCompletionRequestMessage] = Field(min_length=1, max_length=1000)
    model: str | None = Field(None, description="Model alias; the default model if unset.")
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    logprobs: bool = False
    max_completion_tokens: MaxTokens | None = None
    max_tokens: MaxTokens | None = Field(None, description="Deprecated alias.")
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    presence_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    tools: list[ChatCompletionTool] | None = None
    top_logprobs: TopLogprobs | None = None
    top_p: TopP | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> CreateChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tools:
            raise ValueError("tools (function calling) are not supported")
        return self


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatCompletionTokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChatCompletionChoiceLogprobs(BaseModel):
    content: list[ChatCompletionTokenLogprob] | None
    refusal: list[ChatCompletionTokenLogprob] | None = None


class ChatCompletionResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatCompletionChoice(BaseModel):
    finish_reason: Literal["stop", "length"]
    index: int
    message: ChatCompletionResponseMessage
    logprobs: ChatCompletionChoiceLogprobs | None = None


class CreateChatCompletionResponse(BaseModel):
    id: str
    choices: list[ChatCompletionChoice]
    created: int
    model: str
    system_fingerprint: str | None = None
    object: Literal["chat.completion"] = "chat.completion"
    usage: CompletionUsage | None = None


class ChatCompletionStreamResponseDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI sends `role` in the first delta only, and `{}` in the last one.
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatCompletionStreamChoice(BaseModel):
    delta: ChatCompletionStreamResponseDelta
    logprobs: ChatCompletionChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    index: int


class CreateChatCompletionStreamResponse(BaseModel):
    id: str
    choices: list[ChatCompletionStreamChoice]
    created: int
    model: str
    system_fingerprint: str | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: CompletionUsage | None = None


# --- Files (https://platform.openai.com/docs/api-reference/files) ----------------------------


class OpenAIFile(BaseModel):
    id: str
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    object: Literal["file"] = "file"
    purpose: Literal["batch", "batch_output"]
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


# --- Batch (https://platform.openai.com/docs/api-reference/batch) ----------------------------


class CreateBatchRequest(_Request):
    input_file_id: str = Field(max_length=256)
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    metadata: Metadata | None = None


class BatchRequestInput(BaseModel):
    """One line of a batch input file."""

    model_config = ConfigDict(extra="ignore")

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


class BatchRequestOutputResponse(BaseModel):
    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchRequestOutputError(BaseModel):
    code: str
    message: str


class BatchRequestOutput(BaseModel):
    """One line of a batch's output file (succeeded requests) or error file (the others)."""

    id: str
    custom_id: str | None
    response: BatchRequestOutputResponse | None
    error: BatchRequestOutputError | None


class ListBatchesResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchResponse]
    first_id: str | None
    last_id: str | None
    has_more: bool
