"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Service
from jobs.errors import UnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(service: Service) -> dict[str, object]:
    """200 when Redis answers; lists the configured models."""
    try:
        await service.store.redis.ping()
    except Exception as exc:
        raise UnavailableError(f"redis unreachable: {exc}") from exc
    return {"status": "ok", "models": sorted(service.registry.models)}
