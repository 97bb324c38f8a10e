"""Settings: the tenants file puts every tenant's key, weight and limits in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.settings import ROOT, RateLimits, Settings


def test_the_example_tenants_file_configures_keys_weights_and_limits() -> None:
    settings = Settings(tenants_config=ROOT / "configs" / "tenants.example.yaml")
    assert set(settings.api_keys) == {"alice", "bob"}
    assert settings.tenant_weights == {"alice": 2}
    assert settings.tenant_limits["alice"] == RateLimits(rpm=600, tpm=200000)
    assert settings.tenant_limits["*"] == RateLimits(rpm=120)
    assert "bob" not in settings.tenant_limits  # bob gets the "*" limits


def test_the_tenants_file_wins_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  alice:\n    weight: 3\n")
    settings = Settings(tenants_config=path, tenant_weights={"alice": 1, "carol": 5})
    assert settings.tenant_weights == {"alice": 3, "carol": 5}


@pytest.mark.parametrize(
    "text",
    [
        "tenants:\n  alice:\n    key_sha256: short\n",
        "tenants:\n  alice:\n    weight: 0\n",
        "tenants:\n  alice:\n    color: blue\n",
        'tenants:\n  "*":\n    key_sha256: ' + "0" * 64 + "\n",
        "tenants: [alice]\n",
        "tenants: {alice: {rpm: 1}\n",
    ],
)
def test_a_bad_tenants_file_is_refused_at_start(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError):
        Settings(tenants_config=path)
