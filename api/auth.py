"""Who is calling: an API key (Authorization: Bearer) maps to a tenant."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from jobs.errors import AuthenticationError, PermissionDeniedError
from jobs.settings import Settings

#: The one tenant of an API with no keys configured (loopback only; see `tokenq up`).
ANONYMOUS = "anonymous"

#: The peers a keyless API serves: this machine's own loopback addresses, exactly. Not every
#: 127.* address: a reverse proxy on this host may connect from 127.0.0.2 on behalf of anyone.
LOOPBACK = frozenset({"127.0.0.1", "::1"})
#: The names a keyless API answers to by default (the Host header, a browser's Origin): a web
#: page elsewhere must not drive it through the user's browser (DNS rebinding: a foreign name
#: that resolves to 127.0.0.1; a cross-site fetch or WebSocket: a foreign Origin).
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def hash_key(key: str) -> str:
    """What configs store for an API key: its sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def _hostname(value: str, url: bool) -> str | None:
    try:
        return urlsplit(value if url else f"//{value}").hostname
    except ValueError:
        return None


def tenant_for(
    settings: Settings,
    authorization: str | None,
    client_host: str | None = None,
    *,
    host: str | None = None,
    origin: str | None = None,
) -> str:
    """The tenant whose key is in the Authorization header; 401 otherwise. Without keys: the
    anonymous tenant, for loopback peers addressing this machine by a local name only."""
    if not settings.api_keys:
        # Without keys there is one tenant, and it is only served on this machine.
        if client_host is not None and client_host not in LOOPBACK:
            raise AuthenticationError(
                "this server has no API keys configured and serves loopback clients only"
            )
        names = LOCAL_NAMES | {name.lower() for name in settings.allowed_hosts}
        if host is not None and _hostname(host, url=False) not in names:
            raise PermissionDeniedError(
                f"Host {host[:100]!r} is not a name of this server (set TOKENQ_ALLOWED_HOSTS, "
                "or configure API keys)",
                param="Host",
            )
        # A sandboxed frame sends "Origin: null": that is no local page either.
        if origin is not None and _hostname(origin, url=True) not in names:
            raise PermissionDeniedError(
                f"requests from web pages at {origin[:100]!r} are refused: this server has no "
                "API keys configured",
                param="Origin",
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
