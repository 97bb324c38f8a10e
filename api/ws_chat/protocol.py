"""Wire model of the WebSocket chat (/ws/chat), in the shape of ChatGLM's websocket API.

The client sends `{"query", "history"}`; the server answers with `{"response", "history",
"status": 202}` frames as the text grows, then one `{"status": 200, ...}` frame. `history` is
either ChatGLM's `[[user, assistant], ...]` pairs or `[{"role", "content"}, ...]` messages (an
optional leading `system` message, then strictly alternating user/assistant, starting with user
and ending with assistant); the frames echo it back in the format it came in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from api.protocol import MAX_PROMPT_CHARS, ChatMessage, CreateJobRequest
from jobs.models import Job, MaxTokens, Seed, Temperature, TopP

HistoryFormat = Literal["pairs", "messages"]


class ChatTurnRequest(BaseModel):
    """One client message: the next user query and the conversation so far."""

    # ChatGLM's server reads query and history and ignores anything else.
    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    history: list[Any] = Field(default_factory=list, max_length=1000)

    # --- tokenq extensions ---
    model: str | None = Field(None, description="Model alias; the default model if unset.")
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None

    _messages: list[ChatMessage] = PrivateAttr(default_factory=list)
    _format: HistoryFormat = PrivateAttr("pairs")

    @model_validator(mode="after")
    def _parse_history(self) -> ChatTurnRequest:
        self._messages, self._format = parse_history(self.history)
        return self

    def to_job_request(self) -> CreateJobRequest:
        fields: dict[str, Any] = {
            "model": self.model,
            "messages": [*self._messages, ChatMessage(role="user", content=self.query)],
        }
        for name in ("max_tokens", "temperature", "top_p", "seed"):
            if (value := getattr(self, name)) is not None:
                fields[name] = value
        return CreateJobRequest.model_validate(fields)

    def history_with(self, response: str) -> list[Any]:
        """The history including this turn, in the format the client sent."""
        if self._format == "pairs":
            return [*self.history, [self.query, response]]
        return [
            *self.history,
            {"role": "user", "content": self.query},
            {"role": "assistant", "content": response},
        ]


def _history_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_history", message)


def parse_history(history: list[Any]) -> tuple[list[ChatMessage], HistoryFormat]:
    """Chat messages from either history format; anything else is a clear validation error."""
    if not history:
        return [], "pairs"
    if all(isinstance(item, list) for item in history):
        messages = []
        for i, pair in enumerate(history):
            if len(pair) != 2 or not all(isinstance(text, str) for text in pair):
                raise _history_error(f"history[{i}] must be a [user, assistant] pair of strings")
            messages += [
                ChatMessage(role="user", content=pair[0]),
                ChatMessage(role="assistant", content=pair[1]),
            ]
        return messages, "pairs"
    if not all(isinstance(item, dict) for item in history):
        raise _history_error(
            "history items must all be [user, assistant] pairs or all {role, content} messages"
        )
    offset = 1 if history[0].get("role") == "system" else 0
    messages = []
    for i, item in enumerate(history):
        role, content = item.get("role"), item.get("content")
        if not isinstance(content, str) or set(item) != {"role", "content"}:
            raise _history_error(f"history[{i}] must be {{role, content}} with a string content")
        if i == 0 and offset:
            messages.append(ChatMessage(role="system", content=content))
            continue
        expected = "user" if (i - offset) % 2 == 0 else "assistant"
        if role != expected:
            raise _history_error(
                f"history[{i}] has role {role!r} where {expected!r} was expected: history "
                "alternates user and assistant, starting with user (after an optional system)"
            )
        messages.append(ChatMessage(role=role, content=content))
    if (len(messages) - offset) % 2:
        raise _history_error(
            "history must end with an assistant message: the query is the next user turn"
        )
    return messages, "messages"


# --- frames ------------------------------------------------------------------------------


def progress_frame(turn: ChatTurnRequest, response: str, job_id: str) -> dict[str, Any]:
    return {
        "response": response,
        "history": turn.history_with(response),
        "status": 202,
        "job_id": job_id,
    }


def final_frame(turn: ChatTurnRequest, job: Job) -> dict[str, Any]:
    result = job.result
    response = result.text if result else ""
    return {
        "response": response,
        "history": turn.history_with(response),
        "status": 200,
        "job_id": job.id,
        "finish_reason": result.finish_reason if result else None,
        "usage": result.usage.model_dump() if result and result.usage else None,
    }


def error_frame(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    return {"status": status, "error": message, "code": code}
