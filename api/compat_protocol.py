"""Helpers shared by the wire models of the compatibility surfaces (Dify, Chatchat, WS chat)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.models import Job, JobStatus


def validation_message(errors: Sequence[Any]) -> str:
    """One line for pydantic's errors: the first one's `field.path: message`, and how many more."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    message = f"{'.'.join(loc) + ': ' if loc else ''}{first.get('msg', 'invalid request')}"
    return message + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


def failure(job: Job) -> str | None:
    """Why a final job did not end normally, or None if it did: succeeded, or cancelled (a
    stopped answer is the text generated until then, on every surface)."""
    if job.status in (JobStatus.SUCCEEDED, JobStatus.CANCELLED):
        return None
    error = job.result.error if job.result else None
    return error.message if error else f"the job ended {job.status.value}"
