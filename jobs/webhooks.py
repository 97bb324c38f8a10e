"""Signed webhooks: what a tenant subscribes to, how an event is signed, where it may be sent.

A tenant's webhook (its endpoint, secret and events) is part of the tenants file. When one of
its batches (or background responses) reaches a final status, the same Lua step that finishes it
queues an event in Redis (`finish_job` in _lib.lua, if the tenant subscribes to that event
type), so an event exists exactly when its cause does. Workers deliver due events
(worker/webhooks.py): at least once, retried with exponential backoff for up to
TOKENQ_WEBHOOK_RETRY_WINDOW_S, the same `webhook-id` every time so that a receiver can drop
duplicates.

Events and signatures follow the Standard Webhooks specification, as OpenAI's webhooks do:
headers `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">`, keyed with the secret's bytes (`whsec_<base64>`); the body is
`{id, object: "event", created_at, type, data: {id}}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The event types tokenq sends (OpenAI's names).
BATCH_EVENTS = ("batch.completed", "batch.failed", "batch.cancelled", "batch.expired")
RESPONSE_EVENTS = (
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
)
EVENT_TYPES = BATCH_EVENTS + RESPONSE_EVENTS
SECRET_PREFIX = "whsec_"


class WebhookConfig(BaseModel):
    """A tenant's webhook, in the tenants file: `webhook: {url, secret, events}`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) endpoint the events are POSTed to.")
    secret: str = Field(description="`whsec_` + base64 of at least 24 random bytes.")
    events: list[str] = Field(
        default_factory=lambda: list(EVENT_TYPES), description="Event types to send (all)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a webhook url is an http:// or https:// URL with a host")
        return url

    @field_validator("secret")
    @classmethod
    def _secret(cls, secret: str) -> str:
        secret_bytes(secret)
        return secret

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown webhook events {unknown}; known: {list(EVENT_TYPES)}")
        return events


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (Standard Webhooks)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_ (then base64)")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if len(key) < 24:
        raise ValueError("a webhook secret holds at least 24 bytes")
    return key


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value for one delivery."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
        "user-agent": "tokenq-webhooks",
    }


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def address_problem(url: str, allow_private: bool) -> str | None:
    """Why tokenq must not POST to this URL (server-side request forgery), or None.

    Every address its host resolves to must be public: private, loopback, link-local (cloud
    metadata), reserved and multicast targets are refused unless the operator allows them
    (TOKENQ_WEBHOOK_ALLOW_PRIVATE). Checked when a delivery is made, so a name that moves to a
    private address is caught then; a name that changes between this check and the connection
    (DNS rebinding within seconds) is not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"the webhook host {host!r} does not resolve ({exc})"
    if allow_private:
        return None
    for info in infos:
        address = str(info[4][0])
        if _private(address):
            return (
                f"the webhook host {host!r} resolves to {address}, a private, loopback or "
                "link-local address (set TOKENQ_WEBHOOK_ALLOW_PRIVATE=true to allow it)"
            )
    return None
