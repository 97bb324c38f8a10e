"""API keys: hashed in config; no keys means one anonymous tenant."""

import pytest

from api.auth import ANONYMOUS, hash_key, tenant_for
from jobs.errors import AuthenticationError
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
