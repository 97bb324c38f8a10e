"""tokenq's Python client: an async client for the native API (/v1/jobs, /v1/batches), and the
Server-Sent Events parser it reads event streams with (SSEDecoder, iter_sse, aiter_sse).

TokenqClientError          an error from the API (status, code, type, param, message)
├── JobRestartedError      the job's worker was lost and it started over (stream())
└── StreamInterruptedError a stream could not be resumed after repeated disconnects
"""

from tokenq.client import (
    AsyncClient,
    JobRestartedError,
    SSEDecoder,
    SSEEvent,
    StreamInterruptedError,
    TokenqClientError,
    aiter_sse,
    iter_sse,
)

__all__ = [
    "AsyncClient",
    "JobRestartedError",
    "SSEDecoder",
    "SSEEvent",
    "StreamInterruptedError",
    "TokenqClientError",
    "aiter_sse",
    "iter_sse",
]
