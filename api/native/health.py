"""Liveness (/healthz) and readiness (/readyz)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Service
from jobs.errors import UnavailableError

router = APIRouter(tags=["health"])


@router.get("/healthz")
@router.get("/health")  # llama-server's and vLLM's name for it
async def healthz(service: Service) -> dict[str, object]:
    """200 when Redis answers; lists the configured models. Also at /health."""
    try:
        await service.store.redis.ping()
    except Exception as exc:
        raise UnavailableError(f"redis unreachable: {exc}") from exc
    return {"status": "ok", "models": sorted(service.registry.models)}


@router.get("/readyz")
async def readyz(service: Service) -> JSONResponse:
    """200 when Redis answers and every configured model has a live worker; else 503 with
    what is missing (a load balancer or an orchestrator routes by this)."""
    try:
        live = await service.live_workers()
    except Exception as exc:
        down = {"status": "unready", "redis": f"unreachable: {exc}", "models_without_worker": []}
        return JSONResponse(down, status_code=503, headers={"Retry-After": "2"})
    missing = sorted(model for model, n in live.items() if not n)
    body: dict[str, object] = {
        "status": "unready" if missing else "ready",
        "redis": "ok",
        "workers": live,
        "models_without_worker": missing,
    }
    return JSONResponse(body, status_code=503 if missing else 200)
