"""Who is calling: an API key (Authorization: Bearer) maps to a tenant."""

from __future__ import annotations

import hashlib
import hmac

from jobs.errors import AuthenticationError
from jobs.settings import Settings

#: The one tenant of an API with no keys configured (loopback only; see `tokenq up`).
ANONYMOUS = "anonymous"

#: The peers a keyless API serves: this machine's own loopback addresses, exactly. Not every
#: 127.* address: a reverse proxy on this host may connect from 127.0.0.2 on behalf of anyone.
LOOPBACK = frozenset({"127.0.0.1", "::1"})


def hash_key(key: str) -> str:
    """What configs store for an API key: its sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def tenant_for(
    settings: Settings, authorization: str | None, client_host: str | None = None
) -> str:
    """The tenant whose key is in the Authorization header; 401 otherwise."""
    if not settings.api_keys:
        # Without keys there is one tenant, and it is only served on this machine.
        if client_host is not None and client_host not in LOOPBACK:
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
