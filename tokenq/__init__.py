"""tokenq's Python client: an async client for the native API (/v1/jobs, /v1/batches).

TokenqClientError          an error from the API (status, code, type, param, message)
├── JobRestartedError      the job's worker was lost and it started over (stream())
└── StreamInterruptedError a stream could not be resumed after repeated disconnects
"""

from tokenq.client import (
    AsyncClient,
    JobRestartedError,
    StreamInterruptedError,
    TokenqClientError,
)

__all__ = ["AsyncClient", "JobRestartedError", "StreamInterruptedError", "TokenqClientError"]
