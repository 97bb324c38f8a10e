"""Request dependencies: the caller's tenant and the one JobService.

Routes take these as parameters (`tenant: Tenant, service: Service`); nothing else in api/ reads
`app.state` (app.py sets it).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from api.auth import tenant_for
from api.service import JobService


def get_service(connection: HTTPConnection) -> JobService:
    """The one JobService (HTTP routes and WebSockets alike)."""
    service: JobService = connection.app.state.service
    return service


def get_tenant(connection: HTTPConnection) -> str:
    """The caller's tenant. WebSocket handlers call it themselves, after accept(), so that an
    authentication error can be sent as a frame and a close code rather than a refused upgrade."""
    headers = connection.headers
    return tenant_for(
        connection.app.state.settings,
        headers.get("authorization"),
        connection.client.host if connection.client else None,
        host=headers.get("host"),
        origin=headers.get("origin"),
    )


Tenant = Annotated[str, Depends(get_tenant)]
Service = Annotated[JobService, Depends(get_service)]
