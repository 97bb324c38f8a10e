"""Wire model of Langchain-Chatchat's `POST /other/completion` (server/chat/completion.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.protocol import MAX_PROMPT_CHARS, CreateJobRequest
from jobs.models import MAX_TOKENS_CAP

#: Chatchat's default sampling temperature (configs/model_config.py: TEMPERATURE).
CHATCHAT_TEMPERATURE = 0.7
#: Chatchat's default max_tokens for /other/completion.
CHATCHAT_MAX_TOKENS = 1024


class ChatchatCompletionRequest(BaseModel):
    # Chatchat declares each field as a FastAPI Body parameter: unknown fields are ignored.
    model_config = ConfigDict(extra="ignore")

    query: str = Field(max_length=MAX_PROMPT_CHARS, description="The user's input; fills {input}.")
    stream: bool = Field(False, description="Send the text as it is generated.")
    echo: bool = Field(False, description="Return the prompt before the generated text.")
    model_name: str | None = Field(None, description="Model alias; the default model if unset.")
    temperature: float = Field(CHATCHAT_TEMPERATURE, ge=0.0, le=1.0)  # Chatchat's own bound
    max_tokens: int | None = Field(
        CHATCHAT_MAX_TOKENS,
        le=MAX_TOKENS_CAP,
        description="Tokens to generate; None or <= 0: as many as the context leaves.",
    )
    prompt_name: str = Field("default", description="Template in configs/templates.yaml.")

    def to_job_request(self) -> CreateJobRequest:
        # Chatchat: None or <= 0 means no limit but the model's context (JobService decides).
        max_tokens = self.max_tokens if self.max_tokens and self.max_tokens > 0 else None
        return CreateJobRequest(
            model=self.model_name,
            template=self.prompt_name,
            prompt=self.query,
            max_tokens=max_tokens,
            temperature=self.temperature,
            echo=self.echo,
        )
