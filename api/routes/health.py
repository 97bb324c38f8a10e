"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request

from jobs.errors import UnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, object]:
    """200 when Redis answers; lists the configured models."""
    try:
        await request.app.state.store.redis.ping()
    except Exception as exc:
        raise UnavailableError(f"redis unreachable: {exc}") from exc
    return {"status": "ok", "models": sorted(request.app.state.registry.models)}
