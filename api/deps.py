"""Request dependencies: the caller's tenant, the services."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request, WebSocket

from api.service import JobService
from api.streaming import EventHub
from jobs.errors import AuthenticationError
from jobs.settings import Settings

#: The one tenant of an API with no keys configured (loopback only; see `tokenq up`).
ANONYMOUS = "anonymous"


def hash_key(key: str) -> str:
    """What configs store for an API key: its sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


def tenant_for(
    settings: Settings, authorization: str | None, client_host: str | None = None
) -> str:
    if not settings.api_keys:
        # Without keys there is one tenant, and it is only served on this machine.
        if (
            client_host is not None
            and client_host not in LOOPBACK
            and not client_host.startswith("127.")
        ):
            raise AuthenticationError(
                "this server has no API keys configured and serves loopback clients only"
            )
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("missing API key: send Authorization: Bearer <key>")
    digest = hash_key(token.strip())
    for tenant, expected in settings.api_keys.items():
        if hmac.compare_digest(digest, expected.lower()):
            return tenant
    raise AuthenticationError("unknown API key")


def get_tenant(request: Request) -> str:
    host = request.client.host if request.client else None
    return tenant_for(request.app.state.settings, request.headers.get("authorization"), host)


def get_ws_tenant(websocket: WebSocket) -> str:
    host = websocket.client.host if websocket.client else None
    return tenant_for(websocket.app.state.settings, websocket.headers.get("authorization"), host)


def get_service(request: Request) -> JobService:
    return request.app.state.service


Tenant = Annotated[str, Depends(get_tenant)]
Service = Annotated[JobService, Depends(get_service)]


def hub_of(app: object) -> EventHub:
    return app.state.hub  # type: ignore[attr-defined]
