"""OpenAI's objects for finished jobs: responses, stream chunks, usage, logprobs.

Every OpenAI surface renders jobs with these: /v1/completions and /v1/chat/completions (whole or
streamed), and the output lines of OpenAI batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.errors import error_body
from api.openai.protocol import (
    ChatCompletionChoice,
    ChatCompletionChoiceLogprobs,
    ChatCompletionResponseMessage,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponseDelta,
    ChatCompletionTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionUsage,
    CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse,
    CreateCompletionResponse,
    TopLogprob,
)
from api.service import JobService
from api.streaming import BoundedSends, Finished, JobUpdate, Restarted, TextDelta
from jobs.errors import GenerationFailedError, TokenqError
from jobs.models import FinishReason, Job, JobStatus, PromptTokensDetails, TokenLogprob

logger = logging.getLogger(__name__)

#: Response headers naming the jobs behind a response (poll, stream or cancel them natively).
JOB_ID_HEADER = "X-Tokenq-Job-Id"
JOB_IDS_HEADER = "X-Tokenq-Job-Ids"


# --- whole responses -------------------------------------------------------------------------


def finish_reason(job: Job) -> str:
    """length -> length; stop, cancelled (the text so far) and anything else -> stop."""
    reason = job.result.finish_reason if job.result else None
    return "length" if reason == FinishReason.LENGTH else "stop"


def raise_for_failed(jobs: Sequence[Job]) -> None:
    for job in jobs:
        if job.status == JobStatus.FAILED:
            error = job.result.error if job.result else None
            why = f"{error.type}: {error.message}" if error else "no reason recorded"
            raise GenerationFailedError(f"job {job.id} failed: {why}")
        if job.status == JobStatus.EXPIRED:
            raise GenerationFailedError(f"job {job.id} expired before a worker started it")


def usage_of(jobs: Sequence[Job], n: int = 1) -> CompletionUsage:
    """Completion tokens of every choice; prompt tokens once per prompt (not once per choice),
    and of them those the KV cache already held (copied from another sequence's prefix)."""
    prompt = sum(_usage(job)[0] for job in jobs[::n])
    completion = sum(_usage(job)[1] for job in jobs)
    cached = sum(_cached_tokens(job) for job in jobs[::n])
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def _cached_tokens(job: Job) -> int:
    usage = job.result.usage if job.result else None
    details = usage.prompt_tokens_details if usage else None
    return details.cached_tokens if details else 0


def _usage(job: Job) -> tuple[int, int]:
    usage = job.result.usage if job.result else None
    if usage is None:
        return job.spec.prompt_tokens, job.completion_tokens
    return usage.prompt_tokens, usage.completion_tokens


def completion_logprobs(tokens: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """Legacy completions' logprobs; `offset` is where the first token starts in the text."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.token)
    return CompletionLogprobs(
        text_offset=offsets,
        token_logprobs=[t.logprob for t in tokens],
        tokens=[t.token for t in tokens],
        top_logprobs=[dict(t.top_logprobs) for t in tokens],
    )


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> ChatCompletionChoiceLogprobs:
    return ChatCompletionChoiceLogprobs(
        content=[
            ChatCompletionTokenLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=list(t.token.encode()),
                top_logprobs=[
                    TopLogprob(token=tok, logprob=lp, bytes=list(tok.encode()))
                    for tok, lp in t.top_logprobs
                ],
            )
            for t in tokens
        ]
    )


def completion_id(job: Job) -> str:
    return f"cmpl-{job.id}"


def chat_completion_id(job: Job) -> str:
    return f"chatcmpl-{job.id}"


def completion_response(jobs: Sequence[Job], n: int = 1) -> CreateCompletionResponse:
    """The text_completion object of finished jobs (one per choice)."""
    choices = []
    for index, job in enumerate(jobs):
        text = job.result.text if job.result else ""
        logprobs = job.result.logprobs if job.result else None
        start = len(job.spec.prompt) if job.spec.echo else 0
        choices.append(
            CompletionChoice(
                index=index,
                text=text,
                finish_reason=finish_reason(job),
                logprobs=completion_logprobs(logprobs, start) if logprobs is not None else None,
            )
        )
    return CreateCompletionResponse(
        id=completion_id(jobs[0]),
        choices=choices,
        created=int(jobs[0].created_at),
        model=jobs[0].spec.model,
        usage=usage_of(jobs, n),
    )


def chat_completion_response(jobs: Sequence[Job], n: int = 1) -> CreateChatCompletionResponse:
    """The chat.completion object of finished jobs (one per choice)."""
    choices = []
    for index, job in enumerate(jobs):
        logprobs = job.result.logprobs if job.result else None
        choices.append(
            ChatCompletionChoice(
                index=index,
                message=ChatCompletionResponseMessage(
                    content=job.result.text if job.result else ""
                ),
                finish_reason=finish_reason(job),
                logprobs=chat_logprobs(logprobs) if logprobs is not None else None,
            )
        )
    return CreateChatCompletionResponse(
        id=chat_completion_id(jobs[0]),
        choices=choices,
        created=int(jobs[0].created_at),
        model=jobs[0].spec.model,
        usage=usage_of(jobs, n),
    )


def job_headers(jobs: Sequence[Job]) -> dict[str, str]:
    return {JOB_ID_HEADER: jobs[0].id, JOB_IDS_HEADER: ",".join(j.id for j in jobs)}


# --- streams ---------------------------------------------------------------------------------


class ChoiceStream:
    """OpenAI's SSE frames for the jobs of one request (a choice each), merged as they come.

    Every chunk carries the same id; chat's first delta per choice carries the role; the last
    chunk of each choice its finish_reason; with include_usage a last chunk has the usage and no
    choices; then `data: [DONE]`. A failed job ends the stream with an in-band error.
    """

    def __init__(
        self,
        service: JobService,
        jobs: list[Job],
        *,
        chat: bool,
        include_usage: bool,
        keep_on_disconnect: bool,
        n: int,
    ):
        self.service = service
        self.jobs = jobs
        self.chat = chat
        self.include_usage = include_usage
        self.keep_on_disconnect = keep_on_disconnect
        self.n = n
        self.id = chat_completion_id(jobs[0]) if chat else completion_id(jobs[0])
        self.created = int(jobs[0].created_at)
        self.model = jobs[0].spec.model
        self._index = {job.id: i for i, job in enumerate(jobs)}
        self._finished: dict[int, Job] = {}
        self._sent_chars = [0] * len(jobs)
        self._pumps: list[asyncio.Task[None]] = []

    async def frames(self) -> AsyncIterator[str]:
        if self.chat:
            for i in range(len(self.jobs)):
                yield self._chunk(
                    i, ChatCompletionStreamResponseDelta(role="assistant", content="")
                )
        try:
            async for frame in self._choice_frames():
                yield frame
        except TokenqError as exc:  # e.g. a job's record expired while it was read
            yield self._error(exc.message, exc.type, exc.code)
            return
        except Exception:
            logger.exception("stream of jobs %s failed", [job.id for job in self.jobs])
            yield self._error("internal error", "server_error", "internal_error")
            return
        if self.include_usage:
            jobs = [self._finished[i] for i in range(len(self.jobs))]
            yield self._frame(self._envelope([], usage=usage_of(jobs, self.n)))
        yield "data: [DONE]\n\n"

    async def _choice_frames(self) -> AsyncIterator[str]:
        async for update in self._updates():
            if update is None:
                yield ": ping\n\n"
                continue
            i = self._index[update.job.id if isinstance(update, Finished) else update.job_id]
            if isinstance(update, TextDelta):
                if update.text or update.logprobs:
                    yield self._text_chunk(i, update)
            elif isinstance(update, Restarted):
                if self._sent_chars[i]:
                    raise GenerationFailedError(
                        f"the worker generating choice {i} (job {self.jobs[i].id}) was lost after "
                        "it had streamed text, and the job restarts from the beginning; a stream "
                        "cannot take text back",
                        code="worker_lost",
                    )
            else:
                self._finished[i] = update.job
                raise_for_failed([update.job])
                yield self._finish_chunk(i, finish_reason(update.job))

    async def close(self) -> None:
        """Stop following the jobs; cancel those not finished unless asked to keep them."""
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self.keep_on_disconnect:
            return
        for i, job in enumerate(self.jobs):
            if i not in self._finished:
                outcome = await self.service.cancel(job)
                logger.info("stream of job %s closed before its end: %s", job.id, outcome)

    async def _updates(self) -> AsyncIterator[JobUpdate | None]:
        """Every job's updates as they come (None: nothing for a ping interval)."""
        queue: asyncio.Queue[JobUpdate | BaseException] = asyncio.Queue()

        async def pump(job: Job) -> None:
            try:
                async for update in self.service.updates(job.id):
                    await queue.put(update)
            except Exception as exc:  # handed to the reader, which ends the stream with it
                await queue.put(exc)

        self._pumps = [asyncio.create_task(pump(job)) for job in self.jobs]
        ping_s = self.service.stream_ping_s
        finished = 0
        while finished < len(self.jobs):
            try:
                update = await asyncio.wait_for(queue.get(), ping_s)
            except TimeoutError:
                yield None
                continue
            if isinstance(update, BaseException):
                raise update
            finished += isinstance(update, Finished)
            yield update

    def _text_chunk(self, i: int, delta: TextDelta) -> str:
        offset = self._sent_chars[i]
        self._sent_chars[i] += len(delta.text)
        tokens = [TokenLogprob.model_validate(lp) for lp in delta.logprobs or ()]
        if self.chat:
            return self._chunk(
                i,
                ChatCompletionStreamResponseDelta(content=delta.text),
                logprobs=chat_logprobs(tokens) if tokens else None,
            )
        return self._chunk(
            i, delta.text, logprobs=completion_logprobs(tokens, offset) if tokens else None
        )

    def _finish_chunk(self, i: int, reason: str) -> str:
        if self.chat:
            return self._chunk(i, ChatCompletionStreamResponseDelta(), finish_reason=reason)
        return self._chunk(i, "", finish_reason=reason)

    def _chunk(
        self,
        i: int,
        content: ChatCompletionStreamResponseDelta | str,
        *,
        finish_reason: str | None = None,
        logprobs: Any = None,
    ) -> str:
        choice: ChatCompletionStreamChoice | CompletionChoice
        if isinstance(content, ChatCompletionStreamResponseDelta):
            choice = ChatCompletionStreamChoice(
                index=i,
                delta=content,
                finish_reason=finish_reason,
                logprobs=logprobs,
            )
        else:
            choice = CompletionChoice(
                index=i,
                text=content,
                finish_reason=finish_reason,
                logprobs=logprobs,
            )
        return self._frame(self._envelope([choice]))

    def _envelope(
        self, choices: list[Any], usage: CompletionUsage | None = None
    ) -> CreateChatCompletionStreamResponse | CreateCompletionResponse:
        if self.chat:
            return CreateChatCompletionStreamResponse(
                id=self.id, choices=choices, created=self.created, model=self.model, usage=usage
            )
        return CreateCompletionResponse(
            id=self.id, choices=choices, created=self.created, model=self.model, usage=usage
        )

    @staticmethod
    def _frame(chunk: CreateChatCompletionStreamResponse | CreateCompletionResponse) -> str:
        return f"data: {chunk.model_dump_json()}\n\n"

    @staticmethod
    def _error(message: str, type_: str, code: str | None) -> str:
        # Errors after the stream started go in-band (the status line is long gone).
        body = error_body(message, type_, None, code)
        return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n"


class OpenAIStreamingResponse(BoundedSends, StreamingResponse):
    """SSE with OpenAI's framing; when it ends (done, or the client left) the stream is closed."""

    def __init__(self, stream: ChoiceStream, headers: dict[str, str]):
        super().__init__(
            stream.frames(),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: a disconnect cancels the response, and the jobs must still be cancelled.
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self.stream.close()
