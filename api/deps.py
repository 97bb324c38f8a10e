"""Request dependencies: the caller's tenant and the one JobService.

Routes take these as parameters (`tenant: Tenant, service: Service`); nothing else in api/ reads
`app.state` (app.py sets it).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket

from api.auth import tenant_for
from api.service import JobService


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def get_ws_service(websocket: WebSocket) -> JobService:
    service: JobService = websocket.app.state.service
    return service


def get_tenant(request: Request) -> str:
    host = request.client.host if request.client else None
    headers = request.headers
    return tenant_for(
        request.app.state.settings,
        headers.get("authorization"),
        host,
        host=headers.get("host"),
        origin=headers.get("origin"),
    )


def ws_tenant(websocket: WebSocket) -> str:
    """The WebSocket caller's tenant. Called in the handler, after accept(), so that an
    authentication error can be sent as a frame and a close code rather than a refused upgrade."""
    host = websocket.client.host if websocket.client else None
    headers = websocket.headers
    return tenant_for(
        websocket.app.state.settings,
        headers.get("authorization"),
        host,
        host=headers.get("host"),
        origin=headers.get("origin"),
    )


Tenant = Annotated[str, Depends(get_tenant)]
Service = Annotated[JobService, Depends(get_service)]
WsService = Annotated[JobService, Depends(get_ws_service)]
