"""tokenq's settings, read from TOKENQ_* environment variables (see configs/.env.example)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.webhooks import WebhookConfig

#: The checkout's root: configs/ and var/ are found relative to it by default.
ROOT = Path(__file__).resolve().parents[1]


class RateLimits(BaseModel):
    """One tenant's rate limits (None: unlimited)."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(
        None, ge=1, description="Tokens per minute: prompt + max_tokens, settled at the end."
    )


class TenantConfig(BaseModel):
    """One tenant in the tenants file (TOKENQ_TENANTS_CONFIG)."""

    model_config = ConfigDict(extra="forbid")

    key_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the tenant's API key."
    )
    weight: float | None = Field(None, gt=0, le=1000, description="Its share in fair share.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute.")
    webhook: WebhookConfig | None = Field(
        None, description="Where its batch and response events are POSTed (jobs/webhooks.py)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENQ_", env_file=".env", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6380/0",
        description="Redis for jobs, events and the Celery broker. `tokenq up` starts its own "
        "redis-server on this (loopback) port when nothing answers there.",
    )
    models_config: Path = Field(ROOT / "configs" / "models.yaml")
    templates_config: Path = Field(ROOT / "configs" / "templates.yaml")
    data_dir: Path = Field(ROOT / "var", description="Embedded Redis data, assembled models.")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    tenants_config: Path | None = Field(
        None,
        description="A YAML file with every tenant in one place: `tenants: {name: {key_sha256, "
        "weight, rpm, tpm}}` (configs/tenants.example.yaml). What it says wins over "
        "TOKENQ_API_KEYS, TOKENQ_TENANT_WEIGHTS and TOKENQ_TENANT_LIMITS.",
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="tenant name -> sha256 hex of its API key; empty = one anonymous tenant.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Without API keys: host names the API answers to (Host and a browser's "
        "Origin) besides localhost, 127.0.0.1 and ::1.",
    )

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_batch_jobs: int = Field(50_000, ge=1)
    max_inflight: int = Field(
        200_000,
        ge=1,
        description="Jobs one tenant may have accepted and not yet final (429 past it).",
    )
    max_tenant_file_bytes: int = Field(
        1024**3,
        ge=1,
        description="Bytes of uploaded files one tenant may keep stored (a larger file is 413; "
        "one that would pass it with the files already stored, 429).",
    )
    max_tenant_files: int = Field(
        1000, ge=1, description="Uploaded files one tenant may keep stored (429 past it)."
    )
    job_time_limit_s: int = Field(900, ge=2, description="Hard limit on one job's run.")
    visibility_timeout_s: int = Field(
        3600, ge=2, description="Redelivery delay of an unacked job; above the job time limit."
    )
    lease_s: float = Field(
        15,
        ge=3,
        description="A running attempt's lease; its worker renews it every third of this. A job "
        "whose lease lapsed (its worker is gone) is put back in line by the reconciler.",
    )
    reconcile_interval_s: float = Field(
        5, gt=0, description="How often a worker's reconciler looks for lapsed leases."
    )
    scheduling: Literal["fair", "fifo"] = Field(
        "fair",
        description="fair: interactive work before batch work, then priority, then tenants "
        "sharing a model by weight. fifo: each model's jobs in the order they came (the peer "
        "that the fairness benchmark measures against).",
    )
    tenant_weights: dict[str, float] = Field(
        default_factory=dict,
        description="tenant name -> its share of a model's slots against other tenants "
        "waiting in the same lane (a tenant not listed weighs 1).",
    )
    tenant_limits: dict[str, RateLimits] = Field(
        default_factory=dict,
        description='tenant name -> {"rpm": ..., "tpm": ...} for requests that are answered '
        'as they run (not batches); "*" applies to tenants not listed.',
    )
    tenant_webhooks: dict[str, WebhookConfig] = Field(
        default_factory=dict,
        description="tenant name -> {url, secret, events}: signed webhooks of its batches and "
        "background responses (usually set in the tenants file).",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhooks to private, loopback and link-local addresses (refused by "
        "default: server-side request forgery).",
    )
    webhook_retry_window_s: int = Field(
        72 * 3600, ge=60, description="A webhook not delivered within this long is given up."
    )
    max_queue_depth: int | None = Field(
        None,
        ge=1,
        description="Jobs queued for one model past which new interactive work is refused "
        "(503 overloaded); batches are still accepted. None: no limit.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Attempts of a job whose worker is lost each time, before it is failed.",
    )
    result_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    batch_window_s: int = Field(24 * 3600, ge=1, description="A batch job's deadline to start.")
    stream_ping_s: float = Field(15.0, gt=0)

    worker_model: str | None = Field(None, description="Alias a worker process serves.")

    @field_validator("tenant_weights")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(not 0 < w <= 1000 for w in weights.values()):
            raise ValueError("tenant weights must be above 0 and at most 1000")
        return weights

    @model_validator(mode="after")
    def _tenants_file(self) -> Settings:
        if self.tenants_config is None:
            return self
        try:
            raw = yaml.safe_load(self.tenants_config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"tenants_config {self.tenants_config}: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("tenants") or {}, dict):
            raise ValueError(f"tenants_config {self.tenants_config}: expected `tenants: {{...}}`")
        for name, entry in (raw.get("tenants") or {}).items():
            tenant = TenantConfig.model_validate(entry or {})
            if name == "*" and tenant.key_sha256 is not None:
                raise ValueError('tenants_config: "*" sets defaults; it can have no key')
            if tenant.key_sha256 is not None:
                self.api_keys[str(name)] = tenant.key_sha256
            if tenant.weight is not None:
                self.tenant_weights[str(name)] = tenant.weight
            if tenant.rpm is not None or tenant.tpm is not None:
                self.tenant_limits[str(name)] = RateLimits(rpm=tenant.rpm, tpm=tenant.tpm)
            if tenant.webhook is not None:
                self.tenant_webhooks[str(name)] = tenant.webhook
        return self

    @model_validator(mode="after")
    def _visibility_above_time_limit(self) -> Settings:
        # A job still running when its message becomes visible again would run twice at once.
        if self.visibility_timeout_s <= self.job_time_limit_s:
            raise ValueError("visibility_timeout_s must be above job_time_limit_s")
        return self
