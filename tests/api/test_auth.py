"""API keys: hashed in config; no keys means one anonymous tenant."""

import pytest

from api.auth import ANONYMOUS, hash_key, tenant_for
from jobs.errors import AuthenticationError, PermissionDeniedError
from jobs.settings import Settings


def test_no_keys_configured_serves_one_anonymous_tenant_on_loopback_only() -> None:
    assert tenant_for(Settings(api_keys={}), None, "127.0.0.1") == ANONYMOUS
    assert tenant_for(Settings(api_keys={}), None, "::1") == ANONYMOUS
    for remote in ("10.1.2.3", "127.0.0.2", "localhost", "::ffff:10.1.2.3"):
        with pytest.raises(AuthenticationError):
            tenant_for(Settings(api_keys={}), None, remote)


def test_keys_map_to_their_tenant_and_others_are_rejected() -> None:
    settings = Settings(api_keys={"alice": hash_key("a-key"), "bob": hash_key("b-key")})
    assert tenant_for(settings, "Bearer a-key") == "alice"
    assert tenant_for(settings, "bearer b-key") == "bob"
    for header in (None, "Bearer nope", "Basic a-key", "Bearer "):
        with pytest.raises(AuthenticationError):
            tenant_for(settings, header)


def test_visibility_timeout_must_exceed_the_job_time_limit() -> None:
    with pytest.raises(ValueError):
        Settings(job_time_limit_s=100, visibility_timeout_s=50)


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8000", None),
        ("localhost:8000", "http://localhost:3000"),
        ("[::1]:8000", "http://[::1]:8000"),
        ("tokenq.internal:8000", "https://tokenq.internal"),  # listed in allowed_hosts
        (None, None),
    ],
)
def test_keyless_mode_answers_local_names_and_allowed_hosts(
    host: str | None, origin: str | None
) -> None:
    settings = Settings(api_keys={}, allowed_hosts=["tokenq.internal"])
    assert tenant_for(settings, None, "127.0.0.1", host=host, origin=origin) == ANONYMOUS


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("evil.example:8000", None),  # DNS rebinding: a foreign name resolved to 127.0.0.1
        ("127.0.0.1:8000", "http://evil.example"),  # a cross-site fetch or WebSocket
        ("127.0.0.1:8000", "null"),  # a sandboxed frame
        ("127.0.0.1.evil.example", None),
        ("[::1", None),
    ],
)
def test_keyless_mode_refuses_foreign_hosts_and_origins(host: str, origin: str | None) -> None:
    with pytest.raises(PermissionDeniedError):
        tenant_for(Settings(api_keys={}), None, "127.0.0.1", host=host, origin=origin)


def test_with_keys_the_key_decides_whatever_the_host() -> None:
    settings = Settings(api_keys={"alice": hash_key("a-key")})
    assert tenant_for(settings, "Bearer a-key", "10.0.0.9", host="api.example.com") == "alice"
